"""Step 4: verification notices changed rows and missing rows, ignores re-embedded vectors, and
measures the app's vector query against exact search."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from migration.db.connection import Endpoint
from migration.errors import VerificationFailed
from migration.steps.extension import setup_extension
from migration.steps.reindex import ReindexSettings, reindex
from migration.steps.transfer import import_database
from migration.steps.verify import verify
from tests.migration import vector_corpus
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


def test_a_zero_vector_fails_verify_naming_the_measure(
    servers: Servers, source_url: str, target: tuple[str, str]
) -> None:
    _, url = target
    src, tgt = Endpoint(source_url, "source"), Endpoint(url, "target")
    setup_extension(tgt, src)
    import_database(src, tgt)
    report = verify(src, tgt)
    assert report.retrieval is not None
    assert report.retrieval.sampled == 500 and report.retrieval.recall_at_5 == 1.0
    with psycopg.connect(url) as conn:  # a zero vector: cosine search can never find it
        conn.execute(
            "UPDATE qckstrt_embeddings_vectors SET embedding = "
            "(SELECT array_agg(0::real) FROM generate_series(1, 384))::vector "
            "WHERE id = (SELECT min(id) FROM qckstrt_embeddings_vectors)"
        )
    with pytest.raises(VerificationFailed, match="zero vectors: 1 chunks"):
        verify(src, tgt)


def test_the_apps_query_is_measured_in_a_fresh_session_against_exact_search(
    servers: Servers, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """pgvector's defaults fail the app's query; the re-index's settings pass; a poor index
    set on the database fails verify (exit code 1) naming the measure."""
    from migration.cli import main

    name = f"vsrc_{servers.target.port}_{id(capsys)}"
    servers.source.create_database(name)
    source_url = servers.source.url(name)
    _, target_url = servers.target_db()
    vector_corpus.create(source_url, index=False, state=False)
    vector_corpus.create(target_url, index=True, state=True)
    src, tgt = Endpoint(source_url, "source"), Endpoint(target_url, "target")

    with pytest.raises(VerificationFailed) as info:  # the old re-index: m 16, ef_c 64, no settings
        verify(src, tgt)
    failed: Any = info.value.report
    assert failed["retrieval"]["short_results"] > 0
    assert failed["retrieval"]["session_settings"]["hnsw.ef_search"] == "40"
    assert "short results" in str(info.value)

    reindexed = reindex(tgt, ReindexSettings())
    assert not reindexed.model_loaded and reindexed.index is not None
    assert reindexed.index.action == "kept"
    report = verify(src, tgt)
    check = report.retrieval
    assert check is not None and check.sampled == 500 and check.users_sampled == 45
    assert check.recall_at_5 >= 0.99 and check.short_results == 0
    assert check.session_settings["hnsw.ef_search"] == "100"
    assert check.latency_p95_ms >= check.latency_p50_ms > 0

    vector_corpus.set_database(target_url, "hnsw.ef_search = 1", "hnsw.iterative_scan = off")
    monkeypatch.setenv("SOURCE_DATABASE_URL", source_url)
    monkeypatch.setenv("TARGET_DATABASE_URL", target_url)
    assert main(["verify", "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["retrieval"]["recall_at_5"] < 0.99
    assert "recall@5 of the app's query is" in captured.err
    assert "short results:" in captured.err
    # The thresholds are settings: an operator may accept a poorer index knowingly.
    loose = ["verify", "--min-recall-at-5", "0.2", "--max-short-results", "100000", "--json"]
    assert main(loose) == 0
    assert json.loads(capsys.readouterr().out)["retrieval"]["failures"] == []
