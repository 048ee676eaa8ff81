"""Step 3: verification notices changed rows, missing rows and ignores re-embedded vectors."""

from __future__ import annotations

import psycopg
import pytest

from migration.connection import Endpoint
from migration.errors import VerificationFailed
from migration.extension import setup_extension
from migration.transfer import import_database
from migration.verify import verify
from tests.migration.conftest import Servers


def test_verify_names_differing_tables_and_ignores_embeddings(
    servers: Servers, source_url: str, target: tuple[str, str]
) -> None:
    _, url = target
    src, tgt = Endpoint(source_url, "source"), Endpoint(url, "target")
    setup_extension(tgt, src)
    import_database(src, tgt)
    with psycopg.connect(url) as conn:  # what the re-index does: rewrite every embedding
        conn.execute(
            "UPDATE qckstrt_embeddings_vectors SET embedding = "
            "(SELECT array_agg(0.5::real) FROM generate_series(1, 384))::vector"
        )
    assert verify(src, tgt).ok
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE counters SET name = 'changed' WHERE id = 1")
        conn.execute("DELETE FROM audit_logs WHERE id = 1")
    with pytest.raises(VerificationFailed) as info:
        verify(src, tgt)
    assert "public.counters" in str(info.value) and "public.audit_logs" in str(info.value)
    report = info.value.report
    assert report is not None and report["ok"] is False


def test_sampled_chunks_find_themselves_and_a_broken_vector_is_named(
    servers: Servers, source_url: str, target: tuple[str, str]
) -> None:
    _, url = target
    src, tgt = Endpoint(source_url, "source"), Endpoint(url, "target")
    setup_extension(tgt, src)
    import_database(src, tgt)
    report = verify(src, tgt)
    assert len(report.similarity) == 5
    assert all(c["ok"] and c["distance"] == 0 for c in report.similarity)
    with psycopg.connect(url) as conn:  # a zero vector: cosine search can never find it
        broken = conn.execute(
            "UPDATE qckstrt_embeddings_vectors SET embedding = "
            "(SELECT array_agg(0::real) FROM generate_series(1, 384))::vector "
            "WHERE id = (SELECT id FROM qckstrt_embeddings_vectors ORDER BY md5(id::text) "
            "LIMIT 1) RETURNING id"
        ).fetchone()
    assert broken is not None
    with pytest.raises(VerificationFailed) as info:
        verify(src, tgt)
    assert f"nearest-neighbour search for chunk {broken[0]}" in str(info.value)
