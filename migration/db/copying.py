"""The import's parallel work: table copies and post-data statements, with bounded retries.

Each worker thread holds a source reader inside the import's exported snapshot and a target
writer; a unit of work (one table's COPY, one post-data entry) commits with its state row, so a
lost connection costs only that unit: it is retried with backoff on fresh connections.

A replace runs everything in the target's one transaction instead (`Workers.fixed`): then there
is one connection pair, no retry (a lost connection rolls the whole replace back) and each unit
is a savepoint.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import psycopg
from psycopg import sql
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from migration.db import state
from migration.db.connection import Conn, Endpoint, watch_client
from migration.db.pgtools import SqlItem
from migration.db.schema_apply import apply_item
from migration.db.supabase import LeftOut
from migration.errors import ImportFailed
from migration.progress import Reporter

T = TypeVar("T")


#: The first OID of objects made after initdb: types below it are built in.
FIRST_USER_OID = 16384
#: Built-in types whose binary receive function is not portable (``tsvectorrecv`` faults on
#: arm64 when fed another architecture's layout: pgcopydb #994).
_UNPORTABLE_BUILTINS = frozenset({"tsvector", "tsquery", "gtsvector"})
#: Extension types whose binary I/O is plain big-endian numbers: pgvector's.
_PORTABLE_EXTENSION_TYPES = frozenset({"vector", "halfvec", "sparsevec"})


@dataclass(frozen=True)
class ColumnType:
    """A column's type as the catalog has it, a domain already replaced by its base type.

    :param kind: ``pg_type.typtype`` (``b`` base, ``c`` composite, ``e`` enum, ...).
    :param element: for an array type, its element type (else None).
    """

    oid: int
    name: str
    kind: str
    element: ColumnType | None = None


def binary_portable(types: list[ColumnType]) -> bool:
    """Whether a table whose columns have `types` may go by binary COPY.

    Binary COPY is twice as fast for vectors, but a type's binary form is its send/receive
    functions' business: only built-in types (but the text-search ones), enums (sent as their
    label) and pgvector's types are known to read back the same on any server and architecture.
    Composites and arrays of user-made types carry type OIDs that differ between servers; other
    extensions' types are unknown. Any such column sends the whole table as text.
    """
    for t in types:
        if t.kind == "c" or (t.element is not None and t.element.oid >= FIRST_USER_OID):
            return False
        base = t.element or t
        if base.name in _UNPORTABLE_BUILTINS:
            return False
        extension_made = base.oid >= FIRST_USER_OID and base.kind != "e"
        if extension_made and base.name not in _PORTABLE_EXTENSION_TYPES:
            return False
    return True


@dataclass
class Table:
    """An application table and how to copy it.

    :param binary: binary COPY; False when a column's type has binary I/O that is not portable
        across servers or architectures (composites, arrays of user types, ``tsvector``: its
        receive function faults on arm64, pgcopydb #994; types of extensions other than
        pgvector's): such tables go as text.
    """

    schema: str
    name: str
    columns: list[str]
    binary: bool
    estimate: int
    size: int

    @property
    def ident(self) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(self.name))

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass
class TableResult:
    schema: str
    table: str
    rows: int
    bytes: int
    seconds: float
    status: str


class Workers:
    """Per-thread connection pairs: a source reader in the snapshot and a target writer.

    :param fixed: one (source, target) pair used by every call, inside the caller's
        transaction (a replace); retries are then off.
    """

    def __init__(
        self,
        source: Endpoint,
        target: Endpoint,
        snapshot: str,
        preamble: str,
        fixed: tuple[Conn, Conn] | None = None,
        state_schema: str = state.SCHEMA,
    ) -> None:
        self.source, self.target, self.snapshot, self.preamble = source, target, snapshot, preamble
        self.fixed = fixed
        #: Where this import records its progress (the auth and storage steps keep their own).
        self.state_schema = state_schema
        self._local = threading.local()
        self._all: list[Conn] = []
        self._lock = threading.Lock()
        self._preamble_done = False

    def source_conn(self) -> Conn:
        if self.fixed is not None:
            return self.fixed[0]
        conn: Conn | None = getattr(self._local, "src", None)
        if conn is None:
            conn = self.source.connect()
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(self.snapshot)))
            self._local.src = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def target_conn(self) -> Conn:
        if self.fixed is not None:
            if not self._preamble_done and self.preamble.strip():
                self.fixed[1].execute(self.preamble.encode())
            self._preamble_done = True
            return self.fixed[1]
        conn: Conn | None = getattr(self._local, "tgt", None)
        if conn is None:
            conn = self.target.connect(autocommit=True)
            watch_client(conn)  # a killed run's index build must not outlive it on the server
            conn.execute("SET synchronous_commit = off")
            conn.execute("SET maintenance_work_mem = '512MB'")
            if self.preamble.strip():
                conn.execute(self.preamble.encode())
            self._local.tgt = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def forget_thread(self) -> None:
        """Drop this thread's connections (one was lost); the next call opens fresh ones."""
        if self.fixed is not None:
            return
        for attr in ("src", "tgt"):
            conn: Conn | None = getattr(self._local, attr, None)
            if conn is not None:
                conn.close()
                setattr(self._local, attr, None)

    def close(self) -> None:
        for conn in self._all:
            conn.close()


class ConnectionLost(Exception):
    """A worker's connection died mid-statement (terminated, network, failover): retryable."""


def _lost(exc: psycopg.Error, *conns: Conn) -> bool:
    return isinstance(exc, psycopg.OperationalError) and any(c.broken or c.closed for c in conns)


def _retrying(workers: Workers, retries: int, what: str, rep: Reporter) -> Retrying:
    """Retry a unit of work whose connection was lost, with backoff, a bounded number of times."""

    def before_sleep(rstate: RetryCallState) -> None:
        workers.forget_thread()
        cause = rstate.outcome.exception() if rstate.outcome else None
        delay = rstate.next_action.sleep if rstate.next_action else 0
        rep.info(
            f"{what}: {cause}; retrying in {delay:.1f}s "
            f"(attempt {rstate.attempt_number + 1} of {retries + 1})"
        )

    return Retrying(
        retry=retry_if_exception_type(ConnectionLost),
        stop=stop_after_attempt(1 if workers.fixed else retries + 1),
        wait=wait_exponential(multiplier=0.5, max=10),
        before_sleep=before_sleep,
        reraise=True,
    )


def with_retries(
    workers: Workers, retries: int, what: str, rep: Reporter, work: Callable[[], T]
) -> T:
    """Run `work`, retrying it on a lost connection; then stop with a message to re-run."""
    try:
        return _retrying(workers, retries, what, rep)(work)
    except ConnectionLost as exc:
        workers.forget_thread()
        times = 1 if workers.fixed else retries + 1
        raise ImportFailed(
            f"{what}: {exc}, {times} times: check the network and the server, then run "
            "the import again (it resumes where it stopped)"
        ) from None


def copy_table(workers: Workers, table: Table, rep: Reporter) -> TableResult:
    """Stream one table source -> target by COPY; commit it with its state row."""
    src, tgt = workers.source_conn(), workers.target_conn()
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in table.columns)
    fmt = sql.SQL("binary" if table.binary else "text")
    out_q = sql.SQL("COPY (SELECT {} FROM ONLY {}) TO STDOUT (FORMAT {})").format(
        cols, table.ident, fmt
    )
    in_q = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT {})").format(table.ident, cols, fmt)
    key = f"copy:{table.label}"
    rep.start(key, f"copy {table.label}", table.size or None)
    started = time.monotonic()
    nbytes = 0
    try:
        with tgt.transaction(), tgt.cursor() as tcur, src.cursor() as scur:
            tcur.execute(sql.SQL("TRUNCATE ONLY {}").format(table.ident))
            with scur.copy(out_q) as cout, tcur.copy(in_q) as cin:
                for chunk in cout:
                    cin.write(chunk)
                    nbytes += len(chunk)
                    if nbytes & 0xFFFFF < len(chunk):
                        rep.advance(key, 1 << 20)
            rows = tcur.rowcount
            seconds = time.monotonic() - started
            state.table_done(
                tgt, table.schema, table.name, rows, nbytes, seconds, workers.state_schema
            )
    except psycopg.Error as exc:
        if _lost(exc, src, tgt):
            raise ConnectionLost(f"lost the connection while copying {table.label}") from exc
        raise ImportFailed(
            f"copying {table.label} failed: {exc.diag.message_primary or exc}"
        ) from exc
    fmt_name = "binary" if table.binary else "text"
    rep.finish(
        key,
        f"copied {table.label}: {rows:,} rows, {nbytes / 1e6:.1f} MB in {seconds:.1f}s"
        + ("" if table.binary else f" ({fmt_name} COPY)"),
    )
    return TableResult(table.schema, table.name, rows, nbytes, round(seconds, 3), "copied")


def step_key(item: SqlItem) -> str:
    """The state row recording that a post-data entry was applied."""
    return f"post-data:{item.kind}:{item.schema}:{item.name}"


def apply_post_data_item(
    workers: Workers, item: SqlItem, rep: Reporter, left: list[LeftOut]
) -> None:
    """Apply one post-data entry with its state row (options the target rejects left out)."""
    conn = workers.target_conn()
    try:
        with conn.transaction():
            apply_item(conn, item, left)
            state.step_done(conn, step_key(item), workers.state_schema)
    except psycopg.Error as exc:
        if _lost(exc, conn):
            raise ConnectionLost(f"lost the connection during {item.kind} {item.name}") from exc
        raise ImportFailed(
            f"post-data {item.kind} {item.name} failed: {exc.diag.message_primary or exc}"
        ) from exc
    rep.advance("post-data", 1)
