"""Step settings that reach the step they name (issue 14, defects 1 and 4), against real servers.

Defect 2 (the `vector` extension's schema and the vector table's schema are two settings) is
exercised by ``test_run.py``'s first test, which runs with ``QCKSTRT_VECTOR_SCHEMA=extensions``.
"""

from __future__ import annotations

import json

import psycopg
import pytest

from migration.cli import EXIT_DIFFERENCES, EXIT_FAILED, EXIT_OK, main
from tests.databases import Servers


@pytest.fixture
def databases(servers: Servers, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A small fresh source and an empty target, named by the environment as an operator does."""
    monkeypatch.delenv("QCKSTRT_PG_DUMP", raising=False)
    _, source = servers.source_db(chunks=5)
    _, target = servers.target_db()
    monkeypatch.setenv("SOURCE_DATABASE_URL", source)
    monkeypatch.setenv("TARGET_DATABASE_URL", target)
    return source, target


def test_run_uses_the_pg_dump_it_is_given(
    databases: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["run", "--pg-dump", "/nowhere/flag/pg_dump"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "step 2/4 (import) failed" in err and "/nowhere/flag/pg_dump" in err
    monkeypatch.setenv("QCKSTRT_PG_DUMP", "/nowhere/env/pg_dump")
    assert main(["run"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "step 2/4 (import) failed" in err and "/nowhere/env/pg_dump" in err


def test_verify_leaves_out_the_embedding_of_the_vector_table_it_is_given(
    databases: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, target = databases
    assert main(["extension"]) == EXIT_OK
    assert main(["import"]) == EXIT_OK
    # The stack names another vector table, and the re-index has rewritten its vectors.
    for url in (source, target):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ALTER TABLE public.qckstrt_embeddings_vectors RENAME TO docs_vectors")
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute(
            "UPDATE public.docs_vectors SET embedding = "
            "array_fill(0.5::real, ARRAY[vector_dims(embedding)])::extensions.vector"
        )
    capsys.readouterr()
    assert main(["verify", "--json"]) == EXIT_DIFFERENCES
    assert "public.docs_vectors" in json.loads(capsys.readouterr().out)["mismatches"]
    assert main(["verify", "--json", "--table", "docs_vectors"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    checked = {t["table"]: t["columns_left_out"] for t in report["tables"]}
    assert checked["public.docs_vectors"] == ["embedding"]
    monkeypatch.setenv("QCKSTRT_VECTOR_TABLE", "docs_vectors")
    assert main(["verify"]) == EXIT_OK
