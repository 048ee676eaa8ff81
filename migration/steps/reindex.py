"""Step 4: re-embed every chunk's text and build the HNSW index; resumable and incremental.

How it stays fast: a reader streams the rows that need work through a server-side cursor, the
model embeds one batch while the writer applies the previous one (binary COPY into a temporary
table, then one set-based UPDATE), so database I/O overlaps model compute and memory is bounded
by two batches in flight.

How it stays correct: per row, the model fingerprint and the md5 of the text that produced its
vector are kept in ``qckstrt_migrate.embedding_state`` (not in the app's table) and written in
the same transaction as the vectors. A run embeds exactly the rows with no state, another model,
or changed text; so a re-run after a crash or Ctrl-C continues where it stopped, and a re-run with
nothing to do never loads the model (nor torch).
"""

from __future__ import annotations

import contextlib
import queue
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from psycopg import sql

from migration.backends.embedder import Embedder, ModelSpec
from migration.backends.models import known_dimensions
from migration.db.connection import Conn, Endpoint, watch_client
from migration.db.lock import LOCK_GRACE_SECONDS, target_lock
from migration.errors import ConfigError, MigrationError, PreflightError
from migration.options import option, validate
from migration.progress import NullReporter, Reporter, format_duration
from migration.steps.search_settings import (
    SearchSettings,
    SearchSettingsReport,
    apply_search_settings,
    check_can_apply,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

STATE_SCHEMA = "qckstrt_migrate"
STATE_TABLE = "embedding_state"
#: Above this share of rows to re-embed, the vector index is dropped first and rebuilt after:
#: updating rows under an HNSW index costs a graph insertion each.
BULK_SHARE = 0.2
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_COPY_TRAILER = struct.pack("!h", -1)


class ReindexFailed(MigrationError):
    """A batch could not be embedded or written; committed batches stay done."""


@dataclass(frozen=True)
class ReindexSettings:
    """What to re-embed and how. Identifiers are quoted with ``psycopg.sql``, never formatted.

    :param expected_dimensions: the stack's ``vectorDimensions``; None skips that comparison.
    :param allow_dimension_change: permit rewriting ``vector(N)`` to the model's dimension.
    :param batch_size: rows per read, per encode call and per write transaction (what a crash
        can lose).
    :param encode_batch_size: texts per forward pass of the model; 0 picks the device's
        default (small on CPU, large on a GPU).
    :param lock_wait_seconds: how long to wait for another run's lock; never less than
        `LOCK_GRACE_SECONDS`, so a re-run straight after a killed run is not refused.
    :param ef_search, iterative_scan, max_scan_tuples: pgvector's search settings, set on the
        database for the app's sessions (`migration.steps.search_settings`); pgvector's defaults
        (40, off, 20000) leave the database without them. The defaults here are the smallest
        that met recall@5 >= 0.99 with no short result in ``bench/retrieval.py``.
    """

    model: str = option("model")
    expected_dimensions: int | None = option("dimensions")
    schema: str = option("table_schema")
    table: str = option("vector_table")
    id_column: str = "id"
    text_column: str = option("text_column")
    vector_column: str = option("vector_column")
    batch_size: int = option("batch_size")
    encode_batch_size: int = 0
    device: str = option("device")
    allow_dimension_change: bool = option("allow_dimension_change")
    hnsw_m: int = option("hnsw_m")
    hnsw_ef_construction: int = option("hnsw_ef_construction")
    index_name: str = option("index_name")
    maintenance_work_mem: str = "1GB"
    parallel_workers: int = 4
    lock_wait_seconds: float = option("lock_wait_seconds")
    ef_search: int = option("ef_search")
    iterative_scan: str = option("iterative_scan")
    max_scan_tuples: int = option("max_scan_tuples")

    def __post_init__(self) -> None:
        # The declared settings are judged as the CLI, the providers and the stack judge them
        # (migration.options); the rest are this library's own knobs.
        validate(self)
        if not self.id_column or len(self.id_column) > 63 or "\x00" in self.id_column:
            raise ConfigError(f"id column {self.id_column!r} is not a valid identifier")
        if not 0 <= self.encode_batch_size <= 10_000:
            raise ConfigError(f"encode batch size {self.encode_batch_size} is outside 0..10000")
        if not 0 <= self.parallel_workers <= 64:
            raise ConfigError(f"parallel workers {self.parallel_workers} is outside 0..64")

    @property
    def search(self) -> SearchSettings:
        return SearchSettings(self.ef_search, self.iterative_scan, self.max_scan_tuples)

    @property
    def resolved_index_name(self) -> str:
        return self.index_name or f"{self.table}_{self.vector_column}_idx"[:63]

    @property
    def table_key(self) -> str:
        return f"{self.schema}.{self.table}.{self.vector_column}"


@dataclass
class IndexReport:
    name: str
    action: str  # created | replaced | kept
    seconds: float = 0.0
    m: int = 0
    ef_construction: int = 0


@dataclass
class ReindexReport:
    """The step's summary; JSON-able through :meth:`as_dict`."""

    table: str
    model: str
    dimensions: int
    device: str
    rows_total: int = 0
    rows_to_embed: int = 0
    rows_embedded: int = 0
    rows_skipped: int = 0
    orphan_states_removed: int = 0
    model_loaded: bool = False
    dimension_changed_from: int | None = None
    embed_seconds: float = 0.0
    seconds: float = 0.0
    chunks_per_second: float = 0.0
    index: IndexReport | None = None
    #: The database's pgvector settings (what the app's sessions inherit) and what changed.
    search_settings: SearchSettingsReport | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line an operator (or a Pulumi log) reads to know what the step did."""
        took = f"{self.seconds:.1f}s" if self.seconds < 60 else format_duration(self.seconds)
        line = (
            f"re-index of {self.table} done in {took}: "
            f"{self.rows_total:,} rows seen, {self.rows_embedded:,} embedded, "
            f"{self.rows_skipped:,} skipped (already current)"
        )
        if self.rows_embedded:
            line += f", {self.chunks_per_second:,.1f} chunks/s"
        line += f"; model {self.model} ({self.dimensions} dimensions, {self.device})"
        if self.index is not None:
            line += f"; index {self.index.name} {self.index.action}"
            if self.index.action != "kept":
                line += f" in {self.index.seconds:.1f}s"
        if self.search_settings is not None:
            shown = ", ".join(f"{k}={v}" for k, v in self.search_settings.settings.items())
            line += f"; database settings {shown or 'pgvector defaults'}"
            line += " (changed)" if self.search_settings.changed else " (kept)"
        return line


# ---------------------------------------------------------------------------------------------
# Catalog reads (no writes): what the table looks like


@dataclass(frozen=True)
class _Column:
    dimensions: int | None
    type_schema: str


def _qualified(s: ReindexSettings) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(s.schema), sql.Identifier(s.table))


def _state() -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(STATE_SCHEMA), sql.Identifier(STATE_TABLE))


def forget_tables(conn: Conn, tables: list[str]) -> int:
    """Forget the vectors of `tables` (``schema.table`` each) whose rows were just replaced (a
    restore puts back the backup's vectors: the source's, not this model's). Without this, the
    state would still match each row's text and a re-index would embed nothing.

    :returns: state rows removed.
    """
    if not _state_exists(conn) or not tables:
        return 0
    cur = conn.execute(
        sql.SQL(
            "DELETE FROM {} WHERE EXISTS (SELECT 1 FROM unnest(%s::text[]) p "
            "WHERE starts_with(table_key, p || '.'))"
        ).format(_state()),
        (tables,),
    )
    return cur.rowcount


def _vector_column(conn: Conn, s: ReindexSettings) -> _Column:
    row = conn.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
        (s.schema, s.table),
    ).fetchone()
    if row is None:
        raise PreflightError(
            f"table {s.schema}.{s.table} does not exist on the target: run the import first, "
            "or name the vector table with `vector_table` and `table_schema`"
        )
    oid = row[0]
    columns = {
        str(name): (str(typname), str(typschema), int(typmod))
        for name, typname, typschema, typmod in conn.execute(
            "SELECT a.attname, t.typname, tn.nspname, a.atttypmod FROM pg_attribute a "
            "JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace tn ON tn.oid = t.typnamespace "
            "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped",
            (oid,),
        ).fetchall()
    }
    for role, name in (("id", s.id_column), ("text", s.text_column), ("vector", s.vector_column)):
        if name not in columns:
            raise PreflightError(
                f"table {s.schema}.{s.table} has no {role} column {name!r} "
                f"(columns: {', '.join(sorted(columns))})"
            )
    typname, typschema, typmod = columns[s.vector_column]
    if typname != "vector":
        raise PreflightError(
            f"column {s.table}.{s.vector_column} is {typname}, not pgvector's vector"
        )
    return _Column(typmod if typmod > 0 else None, typschema)


def _check_dimensions(s: ReindexSettings, column: _Column, model_dims: int | None) -> None:
    """The guide's 'Vector dimensions mismatch', caught before anything is written."""
    table_dims = column.dimensions
    where = f"{s.table}.{s.vector_column} is vector({table_dims})"
    why = (
        "The embedding model, the app's VECTOR_DB_DIMENSIONS (`dimensions`) and the vector "
        "column must all agree, or similarity search fails"
    )
    if (
        s.expected_dimensions is not None
        and table_dims not in (None, s.expected_dimensions)
        and not s.allow_dimension_change
    ):
        raise PreflightError(
            f"{where} but dimensions {s.expected_dimensions} are expected (`dimensions`). {why}. "
            "Fix: set "
            f"`dimensions` to {table_dims}, or re-run with `allow_dimension_change` to "
            "rewrite the column and re-embed every row"
        )
    if model_dims is None:
        return
    if s.expected_dimensions is not None and model_dims != s.expected_dimensions:
        raise PreflightError(
            f"dimensions {s.expected_dimensions} does not match model {s.model} ({model_dims}). "
            f"{why}. Fix: set `dimensions` to {model_dims}, or choose a `model` with "
            f"{s.expected_dimensions} dimensions"
        )
    if table_dims is not None and model_dims != table_dims and not s.allow_dimension_change:
        raise PreflightError(
            f"model {s.model} outputs {model_dims} dimensions but {where}. {why}. Fix: use a "
            f"{table_dims}-dimension model (e.g. all-MiniLM-L6-v2 for 384), or re-run with "
            "`allow_dimension_change` to rewrite the column and re-embed every row"
        )


def _todo_filter(s: ReindexSettings) -> sql.Composed:
    """Rows with no state, another model, or text changed since their vector was made."""
    return sql.SQL(
        "FROM {t} AS r LEFT JOIN {st} AS st ON st.table_key = %(key)s "
        "AND st.row_id = r.{id}::text "
        "WHERE st.row_id IS NULL OR st.model <> %(model)s "
        "OR st.content_hash <> md5(coalesce(r.{txt}, ''))"
    ).format(
        t=_qualified(s),
        st=_state(),
        id=sql.Identifier(s.id_column),
        txt=sql.Identifier(s.text_column),
    )


def _state_exists(conn: Conn) -> bool:
    row = conn.execute("SELECT to_regclass(%s)", (f"{STATE_SCHEMA}.{STATE_TABLE}",)).fetchone()
    return row is not None and row[0] is not None


def _count(conn: Conn, s: ReindexSettings, fingerprint: str) -> tuple[int, int]:
    """(rows in the table, rows that need embedding)."""
    total_row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(_qualified(s))).fetchone()
    total = int(total_row[0]) if total_row else 0
    if not _state_exists(conn):
        return total, total
    todo_row = conn.execute(
        sql.SQL("SELECT count(*) ") + _todo_filter(s),
        {"key": s.table_key, "model": fingerprint},
    ).fetchone()
    return total, int(todo_row[0]) if todo_row else 0


# ---------------------------------------------------------------------------------------------
# Writes


def _ensure_state_table(conn: Conn) -> None:
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(STATE_SCHEMA)))
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (table_key text NOT NULL, row_id text NOT NULL, "
            "model text NOT NULL, content_hash text NOT NULL, "
            "embedded_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (table_key, row_id))"
        ).format(_state())
    )


def _vector_indexes(conn: Conn, s: ReindexSettings) -> list[tuple[str, str, str, list[str]]]:
    """(name, access method, definition, reloptions) of each index on the vector column."""
    rows = conn.execute(
        "SELECT c.relname, am.amname, pg_get_indexdef(i.indexrelid), "
        "coalesce(c.reloptions, '{}') FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam "
        "JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
        "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ANY(i.indkey) "
        "WHERE n.nspname = %s AND t.relname = %s AND a.attname = %s",
        (s.schema, s.table, s.vector_column),
    ).fetchall()
    return [(str(r[0]), str(r[1]), str(r[2]), list(r[3])) for r in rows]


def _drop_index(conn: Conn, schema: str, name: str, if_exists: bool = False) -> None:
    statement = "DROP INDEX IF EXISTS {}.{}" if if_exists else "DROP INDEX {}.{}"
    conn.execute(sql.SQL(statement).format(sql.Identifier(schema), sql.Identifier(name)))


def _change_dimension(conn: Conn, s: ReindexSettings, column: _Column, new_dims: int) -> None:
    """Rewrite vector(N) to vector(M): placeholder zero vectors, then every row is re-embedded."""
    with conn.transaction():
        for name, *_ in _vector_indexes(conn, s):
            _drop_index(conn, s.schema, name)
        vtype = sql.SQL("{}.vector({})").format(
            sql.Identifier(column.type_schema), sql.Literal(new_dims)
        )
        conn.execute(
            sql.SQL(
                "ALTER TABLE {t} ALTER COLUMN {c} TYPE {vt} "
                "USING array_fill(0::real, ARRAY[{n}])::{vt}"
            ).format(
                t=_qualified(s),
                c=sql.Identifier(s.vector_column),
                vt=vtype,
                n=sql.Literal(new_dims),
            )
        )
        _ensure_state_table(conn)
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE table_key = %s").format(_state()), (s.table_key,)
        )


def _copy_payload(ids: list[str], vectors: npt.NDArray[np.float32], hashes: list[str]) -> bytes:
    """Binary COPY rows (id text, embedding vector, content_hash text), built without adapters.

    pgvector's binary format is int16 dimensions, int16 unused, then big-endian float4s.
    """
    dims = vectors.shape[1]
    big_endian = vectors.astype(">f4", copy=False)
    vec_head = struct.pack("!ihh", 4 + 4 * dims, dims, 0)
    parts = [_COPY_HEADER]
    for i, row_id in enumerate(ids):
        rid = row_id.encode()
        digest = hashes[i].encode()
        parts.append(struct.pack("!hi", 3, len(rid)))
        parts.append(rid)
        parts.append(vec_head)
        parts.append(big_endian[i].tobytes())
        parts.append(struct.pack("!i", len(digest)))
        parts.append(digest)
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


class _Writer:
    """Applies embedded batches on its own connection, one transaction per batch."""

    def __init__(self, endpoint: Endpoint, s: ReindexSettings, fingerprint: str) -> None:
        self._s = s
        self._fingerprint = fingerprint
        self._conn = endpoint.connect()
        watch_client(self._conn)
        self._stage = sql.Identifier("qckstrt_reindex_stage")
        with self._conn.transaction():
            self._conn.execute(
                sql.SQL(
                    "CREATE TEMP TABLE {stage} ON COMMIT DELETE ROWS AS "
                    "SELECT {id}::text AS id, {vec} AS embedding, ''::text AS content_hash "
                    "FROM {t} WITH NO DATA"
                ).format(
                    stage=self._stage,
                    id=sql.Identifier(s.id_column),
                    vec=sql.Identifier(s.vector_column),
                    t=_qualified(s),
                )
            )

    def write(self, ids: list[str], vectors: npt.NDArray[np.float32], hashes: list[str]) -> None:
        s = self._s
        with self._conn.transaction(), self._conn.cursor() as cur:
            with cur.copy(
                sql.SQL("COPY {} (id, embedding, content_hash) FROM STDIN (FORMAT BINARY)").format(
                    self._stage
                )
            ) as copy:
                copy.write(_copy_payload(ids, vectors, hashes))
            cur.execute(
                sql.SQL(
                    "UPDATE {t} AS r SET {vec} = st.embedding FROM {stage} AS st "
                    "WHERE r.{id}::text = st.id"
                ).format(
                    t=_qualified(s),
                    vec=sql.Identifier(s.vector_column),
                    stage=self._stage,
                    id=sql.Identifier(s.id_column),
                )
            )
            cur.execute(
                sql.SQL(
                    "INSERT INTO {state} (table_key, row_id, model, content_hash) "
                    "SELECT %s, id, %s, content_hash FROM {stage} "
                    "ON CONFLICT (table_key, row_id) DO UPDATE SET model = EXCLUDED.model, "
                    "content_hash = EXCLUDED.content_hash, embedded_at = now()"
                ).format(state=_state(), stage=self._stage),
                (s.table_key, self._fingerprint),
            )

    def close(self) -> None:
        self._conn.close()


def _read_todo(
    endpoint: Endpoint, s: ReindexSettings, fingerprint: str
) -> Iterator[list[tuple[str, str, str]]]:
    """Stream (id, text, md5) of the rows to embed, a batch at a time, via a server-side cursor."""
    with endpoint.connect() as conn:
        watch_client(conn)
        query = sql.SQL(
            "SELECT r.{id}::text, coalesce(r.{txt}, ''), md5(coalesce(r.{txt}, '')) "
        ).format(id=sql.Identifier(s.id_column), txt=sql.Identifier(s.text_column)) + _todo_filter(
            s
        )
        with conn.cursor(name="qckstrt_reindex_todo") as cur:
            cur.itersize = s.batch_size
            cur.execute(query, {"key": s.table_key, "model": fingerprint})
            while True:
                rows = cur.fetchmany(s.batch_size)
                if not rows:
                    return
                yield [(str(a), str(b), str(c)) for a, b, c in rows]


Batch = list[tuple[str, str, str]]
Embedded = tuple[list[str], Any, list[str]]


class _Pipeline:
    """Reader thread -> embed on the calling thread -> writer thread.

    At most two batches wait on each side, so memory stays bounded; the first failure on any
    side stops the others, and is raised on the calling thread.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        s: ReindexSettings,
        embedder: Embedder,
        report: ReindexReport,
        reporter: Reporter,
    ) -> None:
        self.endpoint, self.s, self.embedder = endpoint, s, embedder
        self.report, self.reporter = report, reporter
        self.fingerprint = embedder.spec.fingerprint
        self.to_embed: queue.Queue[Batch | None] = queue.Queue(maxsize=2)
        self.to_write: queue.Queue[Embedded | None] = queue.Queue(maxsize=2)
        self.failure: list[BaseException] = []
        self.stop = threading.Event()

    def _put(self, q: queue.Queue[Any], item: Any) -> bool:
        """Put unless stopped; False when the pipeline stopped first."""
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _fail(self, exc: BaseException) -> None:
        self.failure.append(exc)
        self.stop.set()

    def _read(self) -> None:
        try:
            for batch in _read_todo(self.endpoint, self.s, self.fingerprint):
                if not self._put(self.to_embed, batch):
                    return
        except BaseException as exc:
            self._fail(exc)
        finally:
            self._put(self.to_embed, None)

    def _next_to_write(self, writer: _Writer) -> bool:
        """Write one batch; False when there is nothing more to write."""
        try:
            item = self.to_write.get(timeout=0.2)
        except queue.Empty:
            return not self.stop.is_set()
        if item is None:
            return False
        ids, vectors, hashes = item
        writer.write(ids, vectors, hashes)
        self.report.rows_embedded += len(ids)
        self.reporter.advance("reindex", len(ids))
        return True

    def _write(self) -> None:
        writer: _Writer | None = None
        try:
            writer = _Writer(self.endpoint, self.s, self.fingerprint)
            while self._next_to_write(writer):
                pass
        except BaseException as exc:
            self._fail(exc)
        finally:
            if writer is not None:
                writer.close()

    def _embed(self) -> None:
        while not self.stop.is_set():
            try:
                batch = self.to_embed.get(timeout=0.2)
            except queue.Empty:
                continue
            if batch is None:
                break
            texts = [r[1] for r in batch]
            vectors = self.embedder.encode(texts, batch_size=self.s.encode_batch_size)
            if not self._put(
                self.to_write, ([r[0] for r in batch], vectors, [r[2] for r in batch])
            ):
                break
        self._put(self.to_write, None)

    def run(self) -> None:
        """Embed every row that needs it; raises the first failure of any side."""
        reader = threading.Thread(target=self._read, name="reindex-reader", daemon=True)
        writer = threading.Thread(target=self._write, name="reindex-writer", daemon=True)
        reader.start()
        writer.start()
        started = time.monotonic()
        try:
            self._embed()
        except BaseException:
            self.stop.set()
            raise
        finally:
            writer.join()
            self.stop.set()
            reader.join(timeout=30)
            self.report.embed_seconds = round(time.monotonic() - started, 3)
        if self.failure:
            exc = self.failure[0]
            if isinstance(exc, MigrationError):
                raise exc
            raise ReindexFailed(
                f"re-index stopped after {self.report.rows_embedded} rows: "
                f"{' '.join(str(exc).split())}; rows written so far are kept, re-run to continue"
            ) from exc


# ---------------------------------------------------------------------------------------------
# Index


def _build_index(
    endpoint: Endpoint, s: ReindexSettings, reporter: Reporter, conn: Conn
) -> IndexReport:
    """Create the HNSW index under the app's index name, or keep an equal one."""
    name = s.resolved_index_name
    existing = {n: (am, d, opts) for n, am, d, opts in _vector_indexes(conn, s)}
    if name in existing:
        if _equal_index(s, *existing[name]):
            return IndexReport(name, "kept", 0.0, s.hnsw_m, s.hnsw_ef_construction)
    elif _relation_exists(conn, s.schema, name):
        raise PreflightError(
            f"a relation named {name} already exists in schema {s.schema} and is not an index on "
            f"{s.table}.{s.vector_column}: rename or drop it, or choose another `index_name`"
        )
    building = f"{name[:55]}_build" if name in existing else name
    if building != name:
        # A build interrupted by a crash rolled back; this only clears a leftover from a
        # build that was cancelled after creating its index but before the swap.
        _drop_index(conn, s.schema, building, if_exists=True)
    started = time.monotonic()
    reporter.start("index", f"building HNSW index {name}", None)
    done = threading.Event()
    watcher = threading.Thread(
        target=_watch_index_build,
        args=(endpoint, conn.info.backend_pid, reporter, done),
        name="index-progress",
        daemon=True,
    )
    watcher.start()
    try:
        _create_hnsw(conn, s, building)
        action = "created"
        if building != name:
            _swap_index(conn, s.schema, building, name)
            action = "replaced"
    finally:
        done.set()
        watcher.join(timeout=5)
        with contextlib.suppress(Exception):
            conn.execute("RESET maintenance_work_mem")
            conn.execute("RESET max_parallel_maintenance_workers")
    seconds = round(time.monotonic() - started, 3)
    reporter.finish("index", f"HNSW index {name} {action} in {seconds:.1f}s")
    return IndexReport(name, action, seconds, s.hnsw_m, s.hnsw_ef_construction)


def _equal_index(s: ReindexSettings, am: str, definition: str, opts: list[str]) -> bool:
    """Whether an existing index already is the HNSW cosine index these settings ask for."""
    wanted = {f"m={s.hnsw_m}", f"ef_construction={s.hnsw_ef_construction}"}
    return am == "hnsw" and "vector_cosine_ops" in definition and wanted <= set(opts)


def _create_hnsw(conn: Conn, s: ReindexSettings, name: str) -> None:
    """CREATE INDEX ... USING hnsw with the build's memory and workers set for this session."""
    conn.execute(
        sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(s.maintenance_work_mem))
    )
    conn.execute(
        sql.SQL("SET max_parallel_maintenance_workers = {}").format(sql.Literal(s.parallel_workers))
    )
    # The operator class is qualified with the extension's schema: the database-level
    # search_path that makes `extensions` visible is not there in every session (a database
    # copied from a template loses it).
    ext = conn.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'vector'"
    ).fetchone()
    opclass = sql.SQL("{}.vector_cosine_ops").format(
        sql.Identifier(str(ext[0]) if ext else "public")
    )
    conn.execute(
        sql.SQL(
            "CREATE INDEX {idx} ON {t} USING hnsw ({col} {opclass}) "
            "WITH (m = {m}, ef_construction = {ef})"
        ).format(
            idx=sql.Identifier(name),
            t=_qualified(s),
            col=sql.Identifier(s.vector_column),
            opclass=opclass,
            m=sql.Literal(s.hnsw_m),
            ef=sql.Literal(s.hnsw_ef_construction),
        )
    )


def _swap_index(conn: Conn, schema: str, building: str, name: str) -> None:
    """Swap in one transaction so the table is never without its index."""
    with conn.transaction():
        _drop_index(conn, schema, name)
        conn.execute(
            sql.SQL("ALTER INDEX {}.{} RENAME TO {}").format(
                sql.Identifier(schema), sql.Identifier(building), sql.Identifier(name)
            )
        )


def _relation_exists(conn: Conn, schema: str, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (schema, name),
    ).fetchone()
    return row is not None


def _watch_index_build(
    endpoint: Endpoint, pid: int, reporter: Reporter, done: threading.Event
) -> None:
    """Report pg_stat_progress_create_index for the building session until it ends."""
    try:
        with endpoint.connect(autocommit=True) as conn:
            last = 0
            while not done.wait(2.0):
                row = conn.execute(
                    "SELECT phase, tuples_done, tuples_total FROM pg_stat_progress_create_index "
                    "WHERE pid = %s",
                    (pid,),
                ).fetchone()
                if row is None:
                    continue
                phase, tuples_done, _total = row
                if tuples_done and tuples_done > last:
                    reporter.advance("index", int(tuples_done) - last)
                    last = int(tuples_done)
                else:
                    reporter.info(f"index build: {phase}")
    except Exception:
        return


# ---------------------------------------------------------------------------------------------
# The step


def reindex(
    endpoint: Endpoint,
    settings: ReindexSettings | None = None,
    reporter: Reporter | None = None,
) -> ReindexReport:
    """Re-embed the rows that need it, ensure the HNSW index and the database's search settings.

    :param endpoint: the target database (the master user, or any role owning the table and,
        when search settings must change, the database).
    :raises PreflightError: missing table/columns, dimension mismatch, search settings that
        the role may not set; nothing was written.
    :raises TargetBusy: another run holds the target's lock.
    :raises ReindexFailed: a batch failed; earlier batches are kept and a re-run continues.
    """
    s = settings or ReindexSettings()
    reporter = reporter or NullReporter()
    spec = ModelSpec.parse(s.model)
    started = time.monotonic()
    lock_wait = max(s.lock_wait_seconds, LOCK_GRACE_SECONDS)
    with target_lock(endpoint, lock_wait), endpoint.connect(autocommit=True) as conn:
        watch_client(conn)
        column = _vector_column(conn, s)
        _check_dimensions(s, column, known_dimensions(s.model))
        check_can_apply(conn, s.search)
        total, todo = _count(conn, s, spec.fingerprint)
        report = ReindexReport(
            table=f"{s.schema}.{s.table}",
            model=spec.fingerprint,
            dimensions=column.dimensions or 0,
            device=s.device,
            rows_total=total,
            rows_to_embed=todo,
        )
        reporter.info(
            f"re-index {report.table}: {total:,} rows, {todo:,} to embed with {spec.fingerprint}"
        )
        if todo:
            _embed_rows(endpoint, conn, s, column, report, reporter)
        report.rows_skipped = report.rows_total - report.rows_embedded
        report.orphan_states_removed = _remove_orphan_states(conn, s)
        report.index = _build_index(endpoint, s, reporter, conn)
        report.search_settings = apply_search_settings(conn, s.search, column.type_schema)
        for change in report.search_settings.changed:
            reporter.info(f"database {report.search_settings.database}: {change}")
    report.seconds = round(time.monotonic() - started, 3)
    if report.embed_seconds > 0:
        report.chunks_per_second = round(report.rows_embedded / report.embed_seconds, 1)
    reporter.info(report.summary())
    return report


def _embed_rows(
    endpoint: Endpoint,
    conn: Conn,
    s: ReindexSettings,
    column: _Column,
    report: ReindexReport,
    reporter: Reporter,
) -> None:
    """Load the model, change the column's dimension if asked, and embed every row to do."""
    embedder = Embedder(ModelSpec.parse(s.model), s.device)
    report.model_loaded = True
    report.device = embedder.device
    _check_dimensions(s, column, embedder.dimension)
    if column.dimensions is not None and embedder.dimension != column.dimensions:
        reporter.info(
            f"changing {s.table}.{s.vector_column} from vector({column.dimensions}) to "
            f"vector({embedder.dimension}); every row is re-embedded"
        )
        _change_dimension(conn, s, column, embedder.dimension)
        report.dimension_changed_from = column.dimensions
        report.rows_total, report.rows_to_embed = _count(conn, s, embedder.spec.fingerprint)
    report.dimensions = embedder.dimension
    _ensure_state_table(conn)
    total, todo = report.rows_total, report.rows_to_embed
    bulk = bool(total) and todo / total > BULK_SHARE
    if bulk:
        for name, *_ in _vector_indexes(conn, s):
            reporter.info(f"dropping vector index {name} for the bulk update (rebuilt after)")
            _drop_index(conn, s.schema, name)
    reporter.start("reindex", f"re-index {report.table}", todo)
    _Pipeline(endpoint, s, embedder, report, reporter).run()
    reporter.finish(
        "reindex", f"embedded {report.rows_embedded:,} rows in {report.embed_seconds:.1f}s"
    )
    if bulk:
        conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(_qualified(s)))


def _remove_orphan_states(conn: Conn, s: ReindexSettings) -> int:
    """Forget the state rows of chunks deleted since their vectors were made."""
    if not _state_exists(conn):
        return 0
    cur = conn.execute(
        sql.SQL(
            "DELETE FROM {st} AS st WHERE st.table_key = %s AND NOT EXISTS "
            "(SELECT 1 FROM {t} AS r WHERE r.{id}::text = st.row_id)"
        ).format(st=_state(), t=_qualified(s), id=sql.Identifier(s.id_column)),
        (s.table_key,),
    )
    return cur.rowcount
