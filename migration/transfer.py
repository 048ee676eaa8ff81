"""Step 2: import the application schemas from the source into the target, like pgcopydb.

Order: preflight (schemas, pg_dump, target emptiness, pgvector) -> backup of the source
(pg_dump -Fc streamed to S3 or a folder) -> pre-data schema (pg_dump --schema-only, filtered by
TOC entry, applied through psycopg in one transaction with the state rows) -> data (binary COPY
per table, `jobs` tables at once, every reader inside one exported snapshot, each table's state
row committed with its COPY) -> sequences -> post-data (indexes and constraints `jobs` at a time,
then foreign keys, triggers and the rest in dump order).

Why psycopg and not pg_restore for the target: RDS forces SSL and the embedded wheel's client
binaries have none; binary COPY moves vectors at half the bytes of pg_dump's text format.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import psycopg
from psycopg import errors, sql
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from migration import state, supabase
from migration.backup import BackupLocation, Sink, run_pg_dump
from migration.connection import (
    Conn,
    Endpoint,
    refuse_same_database,
    server_major,
    watch_client,
)
from migration.errors import (
    ConfigError,
    ImportFailed,
    MigrationError,
    PgDumpUnsuitable,
    PreflightError,
    SettingsChanged,
    TargetNotEmpty,
    UnknownSchema,
)
from migration.extension import read_source_layout
from migration.lock import target_lock
from migration.options import option, validate
from migration.pgtools import (
    PgTools,
    SqlItem,
    TocEntry,
    clean_sql,
    find_pg_tools,
    parse_toc,
    restore_to_sql_args,
    split_items,
)
from migration.progress import NullReporter, Reporter
from migration.supabase import LeftOut

OnExisting = Literal["fail", "replace"]
T = TypeVar("T")

# TOC entries never replayed: schemas and extensions are made by the engine (step 1 and
# CREATE SCHEMA IF NOT EXISTS), the rest is Supabase's or cluster-level.
_ENGINE_MADE = {"SCHEMA", "EXTENSION"}
_NEVER = {
    "PUBLICATION": "Supabase realtime publication; not used on RDS",
    "PUBLICATION TABLE": "Supabase realtime publication; not used on RDS",
    "PUBLICATION TABLES IN SCHEMA": "Supabase realtime publication; not used on RDS",
    "SUBSCRIPTION": "subscriptions are not migrated",
    "EVENT TRIGGER": "event triggers need a superuser; not available to RDS's master user",
}
# Cluster-level entries a schema dump may carry; not Supabase's, left out silently.
_SILENT = {"DATABASE", "DATABASE PROPERTIES"}
_FIRST_WAVE = {"INDEX", "CONSTRAINT"}


@dataclass
class ImportOptions:
    """Settings of one import (flag, then environment variable, then these defaults).

    :param schemas: application schemas to import.
    :param jobs: tables copied (and indexes built) at once.
    :param backup: ``s3://bucket/prefix`` or a directory for the source's pg_dump -Fc (and the
        target's tables before `replace`); None for no backup.
    :param on_existing: ``fail`` refuses a target that holds any of the tables; ``replace``
        backs them up, then drops them.
    :param restart: discard the progress of an interrupted import and start again.
    :param dry_run: read and report, write nothing.
    :param pg_dump: a pg_dump to use instead of the newest suitable one.
    :param lock_wait_seconds: how long to wait for another run's lock on the target.
    :param retries: how often a table copy or post-data statement is retried after a lost
        connection (with exponential backoff) before the import stops; a re-run resumes.
    :param state_schema: the target schema keeping this import's progress; a step that imports
        other schemas after the application's (the auth step) keeps its own.
    """

    schemas: list[str] = option("schemas")
    jobs: int = option("jobs")
    backup: str | None = option("backup")
    on_existing: OnExisting = option("on_existing")
    restart: bool = option("restart")
    dry_run: bool = option("dry_run")
    pg_dump: str | None = option("pg_dump")
    lock_wait_seconds: float = option("lock_wait_seconds")
    retries: int = option("retries")
    state_schema: str = state.SCHEMA

    def __post_init__(self) -> None:
        validate(self)  # one judgement per setting, the same as the CLI's and the providers'
        if self.backup:
            BackupLocation(self.backup)  # validates the form now, before any connection


@dataclass
class Table:
    """An application table and how to copy it."""

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


@dataclass
class ImportReport:
    """The outcome of an import; `as_dict` is JSON-able."""

    source: str
    target: str
    schemas: list[str]
    pg_dump: str
    dry_run: bool
    resumed: bool
    already_complete: bool = False
    backup: str | None = None
    target_backup: str | None = None
    discarded: list[str] = field(default_factory=list)
    tables: list[TableResult] = field(default_factory=list)
    sequences: int = 0
    post_data: int = 0
    left_out: list[LeftOut] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


MANIFEST = "manifest.json"


def _write_manifest(
    where: BackupLocation,
    schemas: list[str],
    toc: list[TocEntry],
    kept: list[TocEntry],
    extensions: dict[str, str],
) -> None:
    """Write, beside the dump, what the import left out: `restore` leaves out the same.

    Entries are named by (kind, schema, name), not dump id: the backup is a second pg_dump run,
    whose ids differ from those of the schema dump the decisions were made on.
    """
    kept_ids = {e.dump_id for e in kept}
    manifest = {
        "format": 1,
        "schemas": schemas,
        "extensions": extensions,
        "left_out": sorted({(e.desc, e.schema, e.tag) for e in toc if e.dump_id not in kept_ids}),
    }
    sink = where.sink(MANIFEST)
    sink.write(json.dumps(manifest, indent=1).encode())
    sink.close()


def _refuse_outside_dependents(conn: Conn, labels: list[str]) -> None:
    """Stop before `replace` drops anything the setting did not name.

    ``DROP TABLE ... CASCADE`` would also drop views and foreign keys of *other* tables that
    depend on the tables being replaced; `on_existing: replace` names the tables only, and only
    they are backed up. So such dependents stop the import, named, with nothing changed.
    """
    existing = [
        label
        for label in labels
        if (row := conn.execute("SELECT to_regclass(%s)", (_quoted(label),)).fetchone())
        and row[0] is not None
    ]
    if not existing:
        return
    rows = _dependents(conn, existing)
    if rows:
        names = ", ".join(str(r[0]) for r in rows)
        raise PreflightError(
            f"replacing {', '.join(existing)} would also drop {names}, which depend on them: "
            "drop or change those first (they are not part of the import); nothing was changed"
        )


def _dependents(conn: Conn, labels: list[str]) -> list[tuple[Any, ...]]:
    """Views and foreign keys outside `labels` that depend on the tables `labels`."""
    return conn.execute(
        "WITH t AS (SELECT unnest(%s::text[])::regclass AS oid), "
        "dep AS (SELECT d.classid, d.objid FROM pg_depend d "
        "  WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid IN (SELECT oid FROM t) "
        "  AND d.deptype = 'n') "
        "SELECT DISTINCT CASE "
        "  WHEN dep.classid = 'pg_rewrite'::regclass THEN 'view ' || ("
        "    SELECT format('%%I.%%I', n.nspname, x.relname) FROM pg_class x "
        "    JOIN pg_namespace n ON n.oid = x.relnamespace WHERE x.oid = r.ev_class) "
        "  WHEN dep.classid = 'pg_constraint'::regclass THEN 'constraint ' || "
        "    quote_ident(c.conname) || ' on ' || ("
        "    SELECT format('%%I.%%I', n.nspname, x.relname) FROM pg_class x "
        "    JOIN pg_namespace n ON n.oid = x.relnamespace WHERE x.oid = c.conrelid) "
        "  ELSE pg_describe_object(dep.classid, dep.objid, 0) END "
        "FROM dep LEFT JOIN pg_rewrite r ON dep.classid = 'pg_rewrite'::regclass "
        "  AND r.oid = dep.objid "
        "LEFT JOIN pg_constraint c ON dep.classid = 'pg_constraint'::regclass "
        "  AND c.oid = dep.objid "
        "WHERE coalesce(r.ev_class, c.conrelid, "
        "  CASE WHEN dep.classid = 'pg_class'::regclass THEN dep.objid END, 0) "
        "  NOT IN (SELECT oid FROM t) "
        "ORDER BY 1",
        ([_quoted(label) for label in labels],),
    ).fetchall()


def _quoted(label: str) -> str:
    schema, name = (part.replace('"', '""') for part in label.split(".", 1))
    return f'"{schema}"."{name}"'


def _source_identity(conn: Conn, source: Endpoint) -> str:
    """The source database as the cluster knows itself, not as this run's URL names it.

    A resume must not be refused because a tunnel's local port or a host alias changed, so the
    fingerprint records the cluster's system identifier and the database name (readable by any
    role); only where the function is not granted does it fall back to host:port/dbname.
    """
    try:
        with conn.transaction():
            row = conn.execute(
                "SELECT system_identifier::text, current_database() FROM pg_control_system()"
            ).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        return source.identity()
    assert row is not None
    return f"cluster {row[0]}/{row[1]}"


def _tables(conn: Conn, schemas: list[str]) -> list[Table]:
    rows = conn.execute(
        "SELECT n.nspname, c.relname, "
        "ARRAY(SELECT a.attname FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 "
        "      AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum)::text[], "
        "NOT EXISTS (SELECT 1 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "      LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A' "
        "      WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
        "      AND (t.typtype = 'c' OR (e.oid IS NOT NULL AND e.oid >= 16384))), "
        "GREATEST(c.reltuples, 0)::bigint, pg_table_size(c.oid) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
        "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass "
        "      AND d.objid = c.oid AND d.deptype = 'e') "
        "ORDER BY pg_table_size(c.oid) DESC, 1, 2",
        (schemas,),
    ).fetchall()
    return [
        Table(str(s), str(n), list(cols), bool(b), int(e), int(z)) for s, n, cols, b, e, z in rows
    ]


def _sequences(conn: Conn, schemas: list[str]) -> list[tuple[str, int, bool]]:
    names = conn.execute(
        "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = ANY(%s) AND c.relkind = 'S' ORDER BY 1",
        (schemas,),
    ).fetchall()
    out = []
    for (name,) in names:
        row = conn.execute(
            sql.SQL("SELECT last_value, is_called FROM {}").format(sql.SQL(str(name)))
        ).fetchone()
        assert row is not None
        out.append((str(name), int(row[0]), bool(row[1])))
    return out


def _existing(conn: Conn, tables: list[Table]) -> list[str]:
    found = []
    for t in tables:
        row = conn.execute(
            "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text))", (t.schema, t.name)
        ).fetchone()
        if row is not None and row[0] is not None:
            found.append(t.label)
    return found


def _pg(tools: PgTools, args: list[str], env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        last = lines[-1] if lines else proc.returncode
        raise ImportFailed(f"{Path(args[0]).name} {tools.version} failed: {last}")
    return proc.stdout


def _filter_toc(
    toc: list[TocEntry], by_oid: dict[tuple[str, int], LeftOut]
) -> tuple[list[TocEntry], list[LeftOut]]:
    """Keep what the target needs; return kept entries and the left-out ones with reasons."""
    dropped: dict[int, LeftOut | None] = {}
    left: list[LeftOut] = []
    owners: set[str] = set()
    grants = 0
    for e in toc:
        owner = e.line.rsplit(" ", 1)[-1]
        if e.schema != "-" and owner and owner != e.tag:
            owners.add(owner)
        if e.desc in _ENGINE_MADE or e.desc in _SILENT:
            dropped[e.dump_id] = None
        elif e.desc in ("ACL", "DEFAULT ACL"):
            grants += 1
            dropped[e.dump_id] = None
        elif e.desc in _NEVER:
            dropped[e.dump_id] = LeftOut(e.desc.lower(), f"{e.schema}.{e.tag}", _NEVER[e.desc])
        elif (supabase.TOC_KINDS.get(e.desc, ""), e.oid) in by_oid:
            dropped[e.dump_id] = by_oid[(supabase.TOC_KINDS[e.desc], e.oid)]
    # Entries hanging off a left-out entry follow it (comments, triggers on a left-out
    # function, ...); engine-made schemas do not drag their contents along.
    changed = True
    while changed:
        changed = False
        for e in toc:
            if e.dump_id in dropped:
                continue
            for dep in e.depends:
                if dep in dropped and dropped[dep] is not None:
                    parent = dropped[dep]
                    assert parent is not None
                    dropped[e.dump_id] = LeftOut(
                        e.desc.lower(),
                        f"{e.schema}.{e.tag}",
                        f"depends on left-out {parent.kind} {parent.name}",
                    )
                    changed = True
                    break
                if dep in dropped and e.desc in ("COMMENT", "SECURITY LABEL"):
                    dropped[e.dump_id] = None
                    changed = True
                    break
    left = [lo for lo in dropped.values() if lo is not None]
    if grants:
        left.append(
            LeftOut(
                "grants", f"{grants} GRANT/REVOKE entries", "Supabase roles do not exist on RDS"
            )
        )
    if owners:
        left.append(
            LeftOut(
                "owners",
                ", ".join(sorted(owners)),
                "objects are owned by the importing (master) role on the target",
            )
        )
    kept = [e for e in toc if e.dump_id not in dropped]
    return kept, left


class _Workers:
    """Per-thread connection pairs: a source reader in the snapshot and a target writer."""

    def __init__(self, source: Endpoint, target: Endpoint, snapshot: str, preamble: str) -> None:
        self.source, self.target, self.snapshot, self.preamble = source, target, snapshot, preamble
        self._local = threading.local()
        self._all: list[Conn] = []
        self._lock = threading.Lock()
        self.state_schema = state.SCHEMA

    def source_conn(self) -> Conn:
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
        conn: Conn | None = getattr(self._local, "tgt", None)
        if conn is None:
            conn = self.target.connect(autocommit=True)
            watch_client(conn)  # a killed run's index build must not outlive it on the server
            conn.execute("SET synchronous_commit = off")
            conn.execute("SET maintenance_work_mem = '512MB'")
            if self.preamble.strip():
                conn.execute(self.preamble)
            self._local.tgt = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def forget_thread(self) -> None:
        """Drop this thread's connections (one was lost); the next call opens fresh ones."""
        for attr in ("src", "tgt"):
            conn: Conn | None = getattr(self._local, attr, None)
            if conn is not None:
                conn.close()
                setattr(self._local, attr, None)

    def close(self) -> None:
        for conn in self._all:
            conn.close()


class _ConnectionLost(Exception):
    """A worker's connection died mid-statement (terminated, network, failover): retryable."""


def _lost(exc: psycopg.Error, *conns: Conn) -> bool:
    return isinstance(exc, psycopg.OperationalError) and any(c.broken or c.closed for c in conns)


def _retrying(workers: _Workers, opts: ImportOptions, what: str, rep: Reporter) -> Retrying:
    """Retry a unit of work whose connection was lost, with backoff, a bounded number of times."""

    def before_sleep(state: RetryCallState) -> None:
        workers.forget_thread()
        cause = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0
        rep.info(
            f"{what}: {cause}; retrying in {delay:.1f}s "
            f"(attempt {state.attempt_number + 1} of {opts.retries + 1})"
        )

    return Retrying(
        retry=retry_if_exception_type(_ConnectionLost),
        stop=stop_after_attempt(opts.retries + 1),
        wait=wait_exponential(multiplier=0.5, max=10),
        before_sleep=before_sleep,
        reraise=True,
    )


def _with_retries(
    workers: _Workers, opts: ImportOptions, what: str, rep: Reporter, work: Callable[[], T]
) -> T:
    try:
        return _retrying(workers, opts, what, rep)(work)
    except _ConnectionLost as exc:
        workers.forget_thread()
        raise ImportFailed(
            f"{what}: {exc}, {opts.retries + 1} times: check the network and the server, then run "
            "the import again (it resumes where it stopped)"
        ) from None


def _copy_table(workers: _Workers, table: Table, rep: Reporter) -> TableResult:
    """Stream one table source -> target in binary COPY; commit it with its state row."""
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
            raise _ConnectionLost(f"lost the connection while copying {table.label}") from exc
        raise ImportFailed(
            f"copying {table.label} failed: {exc.diag.message_primary or exc}"
        ) from exc
    rep.finish(key, f"copied {table.label}: {rows:,} rows, {nbytes / 1e6:.1f} MB in {seconds:.1f}s")
    return TableResult(table.schema, table.name, rows, nbytes, round(seconds, 3), "copied")


def _apply_item(workers: _Workers, item: SqlItem, rep: Reporter) -> None:
    conn = workers.target_conn()
    try:
        with conn.transaction():
            conn.execute(item.sql)
            state.step_done(conn, _step_key(item), workers.state_schema)
    except psycopg.Error as exc:
        if _lost(exc, conn):
            raise _ConnectionLost(f"lost the connection during {item.kind} {item.name}") from exc
        raise ImportFailed(
            f"post-data {item.kind} {item.name} failed: {exc.diag.message_primary or exc}"
        ) from exc
    rep.advance("post-data", 1)


def _apply_retrying(workers: _Workers, opts: ImportOptions, item: SqlItem, rep: Reporter) -> None:
    _with_retries(
        workers,
        opts,
        f"post-data {item.kind} {item.name}",
        rep,
        lambda: _apply_item(workers, item, rep),
    )


def _step_key(item: SqlItem) -> str:
    return f"post-data:{item.kind}:{item.schema}:{item.name}"


def _backup_target_tables(conn: Conn, tables: list[str], where: BackupLocation) -> str:
    """Keep the target's tables before `replace`: binary COPY per table plus their columns.

    The target may be SSL-only, so pg_dump from the embedded wheel cannot reach it: data goes
    out by binary COPY through psycopg (``target/<schema>.<table>.copy``) and each table's
    column definitions from the catalog go in ``target/tables.json``.
    """
    import json

    layout: dict[str, list[dict[str, Any]]] = {}
    for label in tables:
        schema, name = label.split(".", 1)
        ident = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))
        cols = conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
            "pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a "
            "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE a.attrelid = format('%%I.%%I', %s::text, %s::text)::regclass "
            "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (schema, name),
        ).fetchall()
        layout[label] = [
            {"name": c[0], "type": c[1], "not_null": c[2], "default": c[3]} for c in cols
        ]
        sink: Sink = where.sink(f"target/{label}.copy")
        try:
            with (
                conn.cursor() as cur,
                cur.copy(sql.SQL("COPY {} TO STDOUT (FORMAT binary)").format(ident)) as out,
            ):
                for chunk in out:
                    sink.write(bytes(chunk))
            sink.close()
        except BaseException:
            sink.abort()
            raise
    meta = where.sink("target/tables.json")
    meta.write(json.dumps(layout, indent=2).encode())
    meta.close()
    return f"{where.uri}/target"


def import_database(
    source: Endpoint,
    target: Endpoint,
    options: ImportOptions | None = None,
    reporter: Reporter | None = None,
) -> ImportReport:
    """Import the application schemas of `source` into `target` (resumable).

    :param source: the Supabase (or any PostgreSQL) database.
    :param target: the RDS database, as its master user; step 1 must have run.
    :param options: see `ImportOptions`.
    :param reporter: receives progress (CLI: bars on stderr; provider: pulumi.log.info).
    :raises UnknownSchema, PgDumpUnsuitable, TargetNotEmpty, SettingsChanged, PreflightError:
        before anything is written.
    :raises BackupFailed, ImportFailed: while working; progress so far is kept for a resume.
    """
    opts = options or ImportOptions()
    rep = reporter or NullReporter()
    with target_lock(target, opts.lock_wait_seconds):
        try:
            return _import(source, target, opts, rep)
        except psycopg.OperationalError as exc:
            # A main session was lost (the snapshot's, or the target's own): the work so far is
            # recorded, so a re-run resumes.
            cause = exc.diag.message_primary or str(exc).splitlines()[0]
            raise ImportFailed(
                f"lost a connection ({cause}): run the import again; it resumes where it stopped"
            ) from exc


def _import(source: Endpoint, target: Endpoint, opts: ImportOptions, rep: Reporter) -> ImportReport:
    timings: dict[str, float] = {}
    began = time.monotonic()
    schemas = list(dict.fromkeys(opts.schemas))

    with source.connect() as snap, target.connect(autocommit=True) as tconn:
        snap.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        snap.read_only = True
        row = snap.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        snapshot = str(row[0])
        known = {
            str(r[0])
            for r in snap.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", (schemas,)
            ).fetchall()
        }
        missing = [s for s in schemas if s not in known]
        if missing:
            raise UnknownSchema(
                f"schema {', '.join(repr(s) for s in missing)} does not exist on the source "
                f"{source.masked}: check `schemas`"
            )
        refuse_same_database(snap, tconn)
        tables = _tables(snap, schemas)
        if not tables:
            raise PreflightError(
                f"the source {source.masked} has no tables in schema(s) {', '.join(schemas)}: "
                "check the source URL (database name) and `schemas`; nothing was changed"
            )
        tools = find_pg_tools(server_major(snap), opts.pg_dump)
        rep.info(f"pg_dump {tools.version} ({tools.pg_dump})")
        by_oid = supabase.classify(snap, schemas)
        publications = supabase.publications(snap, schemas)
        layout = read_source_layout(snap)

        fingerprint = {
            "source": _source_identity(snap, source),
            "schemas": schemas,
            "tables": sorted(t.label for t in tables),
        }
        run = state.read(tconn, opts.state_schema)
        report = ImportReport(
            source=source.masked,
            target=target.masked,
            schemas=schemas,
            pg_dump=f"{tools.version} ({tools.pg_dump})",
            dry_run=opts.dry_run,
            resumed=False,
        )
        discard = run is not None and (opts.restart or opts.on_existing == "replace")
        if run is not None and not discard:
            changed = state.differences(run.fingerprint, fingerprint)
            if changed:
                raise SettingsChanged(
                    f"the target holds an import with different settings ({', '.join(changed)}): "
                    "run with `restart` to discard it, or use the earlier settings"
                )
            report.resumed = True
            report.already_complete = run.complete
        ours = {f"{s}.{t}" for s, t in run.tables} if run is not None else set()
        existing = [
            t for t in _existing(tconn, tables) if not (t in ours and (discard or report.resumed))
        ]
        if existing and opts.on_existing == "fail":
            raise TargetNotEmpty(
                f"the target already holds {', '.join(existing)}: nothing was changed; use "
                "`on_existing` replace to back them up and replace them"
            )
        if existing and opts.backup is None:
            raise ConfigError(
                "`on_existing` replace needs `backup` to keep the target's tables",
                setting="backup",
            )
        if layout.extensions.get("vector"):
            vrow = tconn.execute(
                "SELECT n.nspname FROM pg_extension e "
                "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'"
            ).fetchone()
            if vrow is None or vrow[0] != layout.extensions["vector"]:
                raise PreflightError(
                    f"the target has no vector extension in schema {layout.extensions['vector']}: "
                    "run `qckstrt-migrate extension` first"
                )

        with tempfile.TemporaryDirectory(prefix="qckstrt-migrate-") as tmp:
            conninfo, env = source.libpq_env()
            archive = Path(tmp) / "schema.dump"
            schema_args = [
                str(tools.pg_dump),
                "--dbname",
                conninfo,
                "--format=custom",
                "--schema-only",
                "--no-tablespaces",
                f"--snapshot={snapshot}",
                "--file",
                str(archive),
            ]
            for s in schemas:
                schema_args += ["--schema", f'"{s}"']
            t0 = time.monotonic()
            _pg(tools, schema_args, env)
            toc = parse_toc(_pg(tools, [str(tools.pg_restore), "-l", "-v", str(archive)]))
            kept, left = _filter_toc(toc, by_oid)
            report.left_out = left + publications
            for lo in report.left_out:
                rep.info(f"left out {lo.kind} {lo.name}: {lo.reason}")

            if opts.dry_run:
                report.tables = [
                    TableResult(t.schema, t.name, t.estimate, t.size, 0.0, "would copy")
                    for t in tables
                ]
                report.discarded = existing + sorted(ours if discard else [])
                if opts.backup:
                    report.backup = f"{BackupLocation(opts.backup).uri} (would write)"
                report.timings = {"total": round(time.monotonic() - began, 3)}
                return report

            listing = Path(tmp) / "keep.list"
            listing.write_text("\n".join(e.line for e in kept) + "\n")
            restore_base = restore_to_sql_args(tools, listing)
            settings = {
                str(r[0]).lower() for r in tconn.execute("SELECT name FROM pg_settings").fetchall()
            }
            pre_sql = clean_sql(
                _pg(tools, [*restore_base, "--section=pre-data", str(archive)]), settings
            )
            post_sql = clean_sql(
                _pg(tools, [*restore_base, "--section=post-data", str(archive)]), settings
            )
            timings["schema_dump"] = round(time.monotonic() - t0, 3)

            where = BackupLocation(opts.backup) if opts.backup else None
            if discard and run is not None:
                if existing or run.tables:
                    drop = sorted(set(existing) | ours)
                    if where is not None and existing:
                        report.target_backup = _backup_target_tables(tconn, existing, where)
                    # What an earlier run created (functions, sequences, ...), from the same
                    # list, as pg_restore --clean writes it; then the tables themselves.
                    clean = _pg(tools, [*restore_base, "--clean", "--if-exists", str(archive)])
                    drops = [
                        line
                        for line in clean.splitlines()
                        if line.startswith(("DROP ", "ALTER TABLE IF EXISTS "))
                    ]
                    with tconn.transaction():
                        if drops:
                            try:
                                tconn.execute("\n".join(drops))
                            except errors.DependentObjectsStillExist as exc:
                                raise PreflightError(
                                    "replacing the earlier import would also drop objects that "
                                    f"are not part of it ({exc.diag.message_detail or exc}): "
                                    "drop or change those first; nothing was changed"
                                ) from None
                        _refuse_outside_dependents(tconn, drop)
                        for label in drop:
                            s, n = label.split(".", 1)
                            tconn.execute(
                                sql.SQL("DROP TABLE IF EXISTS {}.{} CASCADE").format(
                                    sql.Identifier(s), sql.Identifier(n)
                                )
                            )
                        state.drop(tconn, opts.state_schema)
                    report.discarded = drop
                run = None
                report.resumed = False
                report.already_complete = False
            elif existing:
                assert where is not None
                _refuse_outside_dependents(tconn, existing)
                report.target_backup = _backup_target_tables(tconn, existing, where)
                with tconn.transaction():
                    for label in existing:
                        s, n = label.split(".", 1)
                        tconn.execute(
                            sql.SQL("DROP TABLE {}.{} CASCADE").format(
                                sql.Identifier(s), sql.Identifier(n)
                            )
                        )
                report.discarded = existing

            # Backup of the source, streamed (skipped when resuming a run that made one).
            if where is not None and not (run is not None and run.backup):
                t0 = time.monotonic()
                sink = where.sink("source.dump")
                rep.start("backup", f"backup to {sink.uri}", None)
                dump_args = [
                    str(tools.pg_dump),
                    "--dbname",
                    conninfo,
                    "--format=custom",
                    f"--snapshot={snapshot}",
                ]
                for s in schemas:
                    dump_args += ["--schema", f'"{s}"']
                # The manifest first: a dump is only ever complete with its manifest beside it.
                _write_manifest(where, schemas, toc, kept, layout.extensions)
                size = run_pg_dump(dump_args, env, sink, lambda n: rep.advance("backup", n))
                report.backup = sink.uri
                rep.finish("backup", f"backup {sink.uri}: {size / 1e6:.1f} MB")
                timings["backup"] = round(time.monotonic() - t0, 3)
            elif run is not None:
                report.backup = run.backup

            # Pre-data with the state rows, in one transaction.
            if run is None:
                t0 = time.monotonic()
                try:
                    with tconn.transaction():
                        for s in schemas:
                            tconn.execute(
                                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(s))
                            )
                        tconn.execute(pre_sql)
                        state.create(
                            tconn,
                            fingerprint,
                            [(t.schema, t.name) for t in tables],
                            report.backup,
                            opts.state_schema,
                        )
                except psycopg.Error as exc:
                    raise ImportFailed(
                        f"applying the schema failed: {exc.diag.message_primary or exc}"
                    ) from exc
                run = state.read(tconn, opts.state_schema)
                assert run is not None
                timings["schema"] = round(time.monotonic() - t0, 3)
                rep.info(f"schema created: {len(tables)} tables")

            preamble, post_items = split_items(post_sql)
            workers = _Workers(source, target, snapshot, preamble)
            workers.state_schema = opts.state_schema
            try:
                t0 = time.monotonic()
                todo = [t for t in tables if run.tables.get((t.schema, t.name)) != "copied"]
                results: dict[str, TableResult] = {}
                if todo:
                    with ThreadPoolExecutor(max_workers=opts.jobs) as pool:
                        for res in pool.map(
                            lambda t: _with_retries(
                                workers,
                                opts,
                                f"copy {t.label}",
                                rep,
                                lambda: _copy_table(workers, t, rep),
                            ),
                            todo,
                        ):
                            results[f"{res.schema}.{res.table}"] = res
                for t in tables:
                    if t.label not in results:
                        results[t.label] = TableResult(
                            t.schema,
                            t.name,
                            run.rows.get((t.schema, t.name), 0),
                            0,
                            0.0,
                            "copied earlier",
                        )
                report.tables = [results[t.label] for t in tables]
                timings["data"] = round(time.monotonic() - t0, 3)

                t0 = time.monotonic()
                if "sequences" not in run.steps:
                    seqs = _sequences(snap, schemas)
                    with tconn.transaction():
                        for name, value, called in seqs:
                            tconn.execute(
                                "SELECT pg_catalog.setval(%s::regclass, %s, %s)",
                                (name, value, called),
                            )
                        state.step_done(tconn, "sequences", opts.state_schema)
                    report.sequences = len(seqs)
                timings["sequences"] = round(time.monotonic() - t0, 3)

                t0 = time.monotonic()
                pending = [i for i in post_items if _step_key(i) not in run.steps]
                rep.start("post-data", "indexes and constraints", len(pending))
                first = [i for i in pending if i.kind in _FIRST_WAVE]
                rest = [i for i in pending if i.kind not in _FIRST_WAVE]
                with ThreadPoolExecutor(max_workers=opts.jobs) as pool:
                    list(pool.map(lambda i: _apply_retrying(workers, opts, i, rep), first))
                for item in rest:
                    _apply_retrying(workers, opts, item, rep)
                rep.finish("post-data", f"post-data: {len(pending)} statements")
                report.post_data = len(pending)
                timings["post_data"] = round(time.monotonic() - t0, 3)
            finally:
                workers.close()
            with tconn.transaction():
                state.finish(tconn, opts.state_schema)
    timings["total"] = round(time.monotonic() - began, 3)
    report.timings = timings
    rep.info(f"import complete in {timings['total']:.1f}s")
    return report


__all__ = [
    "ImportOptions",
    "ImportReport",
    "MigrationError",
    "PgDumpUnsuitable",
    "TableResult",
    "errors",
    "import_database",
]
