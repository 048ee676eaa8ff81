"""Step 2: import the application schemas from the source into the target, like pgcopydb's clone.

The import is a fixed list of numbered sub-steps sharing one `ImportContext`, each logged as
``step N/9 <name>`` and each resumable on its own from the target's state rows
(`migration.db.state`):

1. preflight: schemas, tables, pg_dump, the target's earlier run and what already exists there;
2. schema dump: ``pg_dump --schema-only`` in the source's exported snapshot, filtered by TOC entry
   (`schema_apply.filter_toc`), turned into pre-data and post-data SQL by pg_restore;
3. target backup: the target's tables a replace will drop, kept first (`target_backup`);
4. backup: the source's ``pg_dump -Fc`` streamed to S3 or a folder, with its manifest;
5. pre-data: the schema and the state rows, in one transaction (`schema_apply.apply_script`:
   what the target does not know is left out and reported);
6. data: COPY per table, `jobs` tables at once, every reader inside the exported snapshot, each
   table's state row committed with its COPY; binary only where the types' binary I/O is portable;
7. sequences: set from the source;
8. post-data: indexes and constraints `jobs` at a time, then the rest in dump order;
9. finish: the run marked complete.

A replace (``on_existing: replace`` over existing objects or an earlier run) runs steps 5-9 and
the drops before them in the target's *one* transaction on one connection: any failure, a kill
included, leaves the target exactly as it was; never dropped-but-not-recreated. The price is
that it copies one table at a time and cannot resume half-way (it starts again, from the
unchanged target). A dry run applies steps 5 and 8 in a transaction it rolls back.

Why psycopg and not pg_restore for the target: RDS forces SSL and the embedded wheel's client
binaries have none; binary COPY moves vectors at half the bytes of pg_dump's text format.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import psycopg
from psycopg import errors, sql

from migration.backends.backup import BackupLocation, run_pg_dump
from migration.db import state, supabase
from migration.db.connection import Conn, Endpoint, refuse_same_database, server_major
from migration.db.copying import (
    ColumnType,
    Table,
    TableResult,
    Workers,
    apply_post_data_item,
    binary_portable,
    copy_table,
    step_key,
    with_retries,
)
from migration.db.lock import target_lock
from migration.db.pgtools import (
    PgTools,
    SqlItem,
    TocEntry,
    clean_sql,
    find_pg_tools,
    parse_toc,
    restore_to_sql_args,
    run_tool,
    split_items,
)
from migration.db.schema_apply import (
    apply_script,
    filter_toc,
    target_settings,
    write_manifest,
)
from migration.db.supabase import LeftOut
from migration.db.target_backup import backup_target_tables
from migration.db.tlsbridge import tool_connection
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
from migration.options import option, validate
from migration.progress import NullReporter, Reporter
from migration.steps.extension import (
    EXTENSIONS_SCHEMA,
    UUID_STAND_IN,
    SourceLayout,
    read_source_layout,
)

OnExisting = Literal["fail", "replace"]
X = TypeVar("X")
Y = TypeVar("Y")
_FIRST_WAVE = {"INDEX", "CONSTRAINT"}
#: TOC kinds a replace looks for on the target (what the import would create).
_OBJECT_KINDS = {
    "TABLE": "table",
    "TYPE": "type",
    "DOMAIN": "type",
    "SEQUENCE": "sequence",
    "VIEW": "view",
    "MATERIALIZED VIEW": "view",
    "FUNCTION": "function",
    "PROCEDURE": "function",
}


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
    :param dry_run: apply the schema in a transaction that is rolled back, and report.
    :param pg_dump: a pg_dump to use instead of the newest suitable one.
    :param lock_wait_seconds: how long to wait for another run's lock on the target.
    :param retries: how often a table copy or post-data statement is retried after a lost
        connection (with exponential backoff) before the import stops; a re-run resumes.
    :param state_schema: the target schema keeping this import's progress; a step that imports
        other schemas after the application's (the auth and storage steps) keeps its own.
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


@dataclass
class ImportContext:
    """What the sub-steps share: connections, the choices of the preflight and the report."""

    source: Endpoint
    target: Endpoint
    opts: ImportOptions
    rep: Reporter
    snap: Conn
    tconn: Conn
    tmp: Path
    schemas: list[str]
    report: ImportReport
    snapshot: str = ""
    tables: list[Table] = field(default_factory=list)
    tools: PgTools | None = None
    by_oid: dict[tuple[str, int], LeftOut] = field(default_factory=dict)
    publications: list[LeftOut] = field(default_factory=list)
    layout: SourceLayout = field(default_factory=SourceLayout)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    run: state.RunState | None = None
    discard: bool = False
    ours: set[str] = field(default_factory=set)
    existing: list[str] = field(default_factory=list)
    objects: list[str] = field(default_factory=list)
    toc: list[TocEntry] = field(default_factory=list)
    kept: list[TocEntry] = field(default_factory=list)
    archive: Path = Path()
    pre_sql: str = ""
    post_sql: str = ""
    settings: set[str] = field(default_factory=set)
    where: BackupLocation | None = None
    #: steps 5-9 run in one transaction with the drops (see the module doc)
    replacing: bool = False
    timings: dict[str, float] = field(default_factory=dict)


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


def _tables(conn: Conn, schemas: list[str]) -> list[Table]:
    """The application tables, largest first; `binary` only where every column's type has
    binary I/O that is portable (`binary_portable`)."""
    rows = conn.execute(
        "SELECT c.oid, n.nspname, c.relname, "
        "ARRAY(SELECT a.attname FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 "
        "      AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum)::text[], "
        "GREATEST(c.reltuples, 0)::bigint, pg_table_size(c.oid) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
        "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass "
        "      AND d.objid = c.oid AND d.deptype = 'e') "
        "ORDER BY pg_table_size(c.oid) DESC, 2, 3",
        (schemas,),
    ).fetchall()
    types = _column_types(conn, [int(r[0]) for r in rows])
    return [
        Table(str(s), str(n), list(cols), binary_portable(types.get(int(oid), [])), int(e), int(z))
        for oid, s, n, cols, e, z in rows
    ]


def _column_types(conn: Conn, oids: list[int]) -> dict[int, list[ColumnType]]:
    """Each table's column types (domains replaced by their base type), by table OID."""
    found: dict[int, list[ColumnType]] = {}
    for rel, oid, name, kind, e_oid, e_name, e_kind in conn.execute(
        "SELECT a.attrelid::bigint, t.oid::bigint, t.typname::text, t.typtype::text, "
        "  e.oid::bigint, e.typname::text, e.typtype::text "
        "FROM pg_attribute a JOIN pg_type t0 ON t0.oid = a.atttypid "
        "JOIN pg_type t ON t.oid = CASE WHEN t0.typtype = 'd' THEN t0.typbasetype ELSE t0.oid END "
        "LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A' "
        "WHERE a.attrelid = ANY(%s::oid[]) AND a.attnum > 0 AND NOT a.attisdropped",
        (oids,),
    ).fetchall():
        element = ColumnType(int(e_oid), str(e_name), str(e_kind)) if e_oid is not None else None
        found.setdefault(int(rel), []).append(ColumnType(int(oid), str(name), str(kind), element))
    return found


def _existing(conn: Conn, tables: list[Table]) -> list[str]:
    found = []
    for t in tables:
        row = conn.execute(
            "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text))", (t.schema, t.name)
        ).fetchone()
        if row is not None and row[0] is not None:
            found.append(t.label)
    return found


def _existing_objects(conn: Conn, kept: list[TocEntry]) -> list[str]:
    """Objects other than tables the import would create that the target already holds
    (an enum type the app's ORM made, a function, a view): ``kind schema.name``."""
    found = []
    for e in kept:
        kind = _OBJECT_KINDS.get(e.desc)
        if kind is None or kind == "table":
            continue
        if kind == "function":
            query = (
                "SELECT 1 FROM pg_proc WHERE pronamespace = to_regnamespace(%s) AND proname = %s"
            )
            args: tuple[str, ...] = (e.schema, e.tag.split("(", 1)[0])
        elif kind == "type":
            query = "SELECT to_regtype(format('%%I.%%I', %s::text, %s::text))"
            args = (e.schema, e.tag)
        else:
            query = "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text))"
            args = (e.schema, e.tag)
        row = conn.execute(query, args).fetchone()
        if row is not None and row[0] is not None:
            found.append(f"{kind} {e.schema}.{e.tag}")
    return found


# ---------------------------------------------------------------------------------------------
# The sub-steps, in order. Each takes the context, reads what earlier ones chose, and records
# its own choices and results there.


def preflight(ctx: ImportContext) -> None:
    """Step 1: everything that can be refused is refused here, before anything is written."""
    snap, tconn, opts = ctx.snap, ctx.tconn, ctx.opts
    snap.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    snap.read_only = True
    row = snap.execute("SELECT pg_export_snapshot()").fetchone()
    assert row is not None
    ctx.snapshot = str(row[0])
    _check_schemas(ctx)
    refuse_same_database(snap, tconn)
    ctx.tables = _tables(snap, ctx.schemas)
    if not ctx.tables:
        raise PreflightError(
            f"the source {ctx.source.masked} has no tables in schema(s) "
            f"{', '.join(ctx.schemas)}: check the source URL (database name) and `schemas`; "
            "nothing was changed"
        )
    ctx.tools = find_pg_tools(server_major(snap), opts.pg_dump)
    ctx.report.pg_dump = f"{ctx.tools.version} ({ctx.tools.pg_dump})"
    ctx.rep.info(f"pg_dump {ctx.tools.version} ({ctx.tools.pg_dump})")
    ctx.by_oid = supabase.classify(snap, ctx.schemas)
    ctx.publications = supabase.publications(snap, ctx.schemas)
    ctx.layout = read_source_layout(snap)
    ctx.fingerprint = {
        "source": _source_identity(snap, ctx.source),
        "schemas": ctx.schemas,
        "tables": sorted(t.label for t in ctx.tables),
    }
    _read_earlier_run(ctx)
    ctx.settings = target_settings(tconn)
    ctx.where = BackupLocation(opts.backup) if opts.backup else None


def _check_schemas(ctx: ImportContext) -> None:
    known = {
        str(r[0])
        for r in ctx.snap.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", (ctx.schemas,)
        ).fetchall()
    }
    missing = [s for s in ctx.schemas if s not in known]
    if missing:
        raise UnknownSchema(
            f"schema {', '.join(repr(s) for s in missing)} does not exist on the source "
            f"{ctx.source.masked}: check `schemas`"
        )


def _read_earlier_run(ctx: ImportContext) -> None:
    """Resume, discard or refuse an earlier run recorded on the target."""
    run = state.read(ctx.tconn, ctx.opts.state_schema)
    ctx.discard = run is not None and (ctx.opts.restart or ctx.opts.on_existing == "replace")
    if run is not None and not ctx.discard:
        changed = state.differences(run.fingerprint, ctx.fingerprint)
        if changed:
            raise SettingsChanged(
                f"the target holds an import with different settings ({', '.join(changed)}): "
                "run with `restart` to discard it, or use the earlier settings"
            )
        ctx.report.resumed = True
        ctx.report.already_complete = run.complete
    ctx.run = run
    ctx.ours = {f"{s}.{t}" for s, t in run.tables} if run is not None else set()
    ctx.existing = [
        t
        for t in _existing(ctx.tconn, ctx.tables)
        if not (t in ctx.ours and (ctx.discard or ctx.report.resumed))
    ]


def _check_target(ctx: ImportContext) -> None:
    """After the schema dump (it names every object): refuse or plan the replace."""
    if ctx.run is None:
        ctx.objects = _existing_objects(ctx.tconn, ctx.kept)
    found = ctx.existing + ctx.objects
    if found and ctx.opts.on_existing == "fail":
        raise TargetNotEmpty(
            f"the target already holds {', '.join(found)}: nothing was changed; use "
            "`on_existing` replace to back them up and replace them"
        )
    ctx.replacing = ctx.opts.on_existing == "replace" and bool(
        found or (ctx.discard and ctx.run is not None)
    )
    if ctx.existing and ctx.opts.backup is None:
        raise ConfigError(
            "`on_existing` replace needs `backup` to keep the target's tables", setting="backup"
        )
    if ctx.replacing or ctx.discard:
        _refuse_outside_dependents(ctx.tconn, sorted(set(ctx.existing) | ctx.ours))
    vector = ctx.layout.extensions.get("vector")
    if vector and not ctx.opts.dry_run:
        vrow = ctx.tconn.execute(
            "SELECT n.nspname FROM pg_extension e "
            "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'"
        ).fetchone()
        if vrow is None or vrow[0] != vector:
            raise PreflightError(
                f"the target has no vector extension in schema {vector}: "
                "run `qckstrt-migrate extension` first"
            )


def schema_dump(ctx: ImportContext) -> None:
    """Step 2: the source's schema in the snapshot, filtered; pre- and post-data SQL."""
    tools = ctx.tools
    assert tools is not None
    ctx.archive = ctx.tmp / "schema.dump"
    args = ["--format=custom", "--schema-only", "--no-tablespaces"]
    args += [f"--snapshot={ctx.snapshot}", "--file", str(ctx.archive)]
    for s in ctx.schemas:
        args += ["--schema", f'"{s}"']
    with tool_connection(ctx.source, tools.pg_dump) as (conninfo, env):
        run_tool(tools, [str(tools.pg_dump), "--dbname", conninfo, *args], env)
    toc = parse_toc(run_tool(tools, [str(tools.pg_restore), "-l", "-v", str(ctx.archive)]))
    ctx.toc = toc
    ctx.kept, left = filter_toc(toc, ctx.by_oid)
    ctx.report.left_out = left + ctx.publications
    for lo in ctx.report.left_out:
        ctx.rep.info(f"left out {lo.kind} {lo.name}: {lo.reason}")
    listing = ctx.tmp / "keep.list"
    listing.write_text("\n".join(e.line for e in ctx.kept) + "\n")
    base = restore_to_sql_args(tools, listing)
    ctx.pre_sql = run_tool(tools, [*base, "--section=pre-data", str(ctx.archive)])
    ctx.post_sql = run_tool(tools, [*base, "--section=post-data", str(ctx.archive)])
    _check_target(ctx)


def _drops(ctx: ImportContext) -> str:
    """What the import creates, as DROP ... IF EXISTS (no CASCADE), as pg_restore --clean
    writes it for the kept entries: types, functions, sequences, views as well as tables."""
    tools = ctx.tools
    assert tools is not None
    base = restore_to_sql_args(tools, ctx.tmp / "keep.list")
    clean = run_tool(tools, [*base, "--clean", "--if-exists", str(ctx.archive)])
    drops = [ln for ln in clean.splitlines() if ln.startswith(("DROP ", "ALTER TABLE IF EXISTS "))]
    return "\n".join(drops)


def drop_existing(ctx: ImportContext) -> None:
    """Inside the replace's transaction: drop what the import will create, state included.

    The tables first, with CASCADE (what depends on them from outside the import was refused in
    the preflight), then every other object by its own DROP without CASCADE, so an object
    outside the import that uses one (a table with a column of the enum type) stops the
    replace with nothing changed.
    """
    labels = sorted(set(ctx.existing) | ctx.ours)
    for label in labels:
        s, n = label.split(".", 1)
        ctx.tconn.execute(
            sql.SQL("DROP TABLE IF EXISTS {}.{} CASCADE").format(
                sql.Identifier(s), sql.Identifier(n)
            )
        )
    drops = _drops(ctx)
    if drops:
        try:
            with ctx.tconn.transaction():
                ctx.tconn.execute(drops.encode())
        except errors.DependentObjectsStillExist as exc:
            raise PreflightError(
                "replacing would also drop objects that are not part of the import "
                f"({exc.diag.message_detail or exc}): drop or change those first; "
                "nothing was changed"
            ) from None
    state.drop(ctx.tconn, ctx.opts.state_schema)
    ctx.report.discarded = labels
    ctx.run = None
    ctx.report.resumed = ctx.report.already_complete = False


def discard_earlier(ctx: ImportContext) -> None:
    """`restart` without replace: drop the earlier run's objects and state, committed."""
    with ctx.tconn.transaction():
        drop_existing(ctx)


def target_backup(ctx: ImportContext) -> None:
    """Step 3: keep the target's own tables that a replace drops."""
    if ctx.existing and ctx.where is not None and (ctx.replacing or ctx.discard):
        ctx.report.target_backup = backup_target_tables(ctx.tconn, ctx.existing, ctx.where)


def backup(ctx: ImportContext) -> None:
    """Step 4: the source's pg_dump -Fc, streamed (skipped when the resumed run made one)."""
    where, tools, rep = ctx.where, ctx.tools, ctx.rep
    if where is None or (ctx.run is not None and ctx.run.backup):
        ctx.report.backup = ctx.run.backup if ctx.run is not None else None
        return
    assert tools is not None
    sink = where.sink("source.dump")
    rep.start("backup", f"backup to {sink.uri}", None)
    args = ["--format=custom", f"--snapshot={ctx.snapshot}"]
    for s in ctx.schemas:
        args += ["--schema", f'"{s}"']
    # The manifest first: a dump is only ever complete with its manifest beside it.
    write_manifest(where, ctx.schemas, ctx.toc, ctx.kept, ctx.layout.extensions)
    with tool_connection(ctx.source, tools.pg_dump) as (conninfo, env):
        size = run_pg_dump(
            [str(tools.pg_dump), "--dbname", conninfo, *args],
            env,
            sink,
            lambda n: rep.advance("backup", n),
        )
    ctx.report.backup = sink.uri
    rep.finish("backup", f"backup {sink.uri}: {size / 1e6:.1f} MB")


def pre_data(ctx: ImportContext) -> None:
    """Step 5: the schema and the state rows, in one transaction (skipped on a resume)."""
    if ctx.run is not None:
        return
    tconn = ctx.tconn
    with tconn.transaction():
        for s in ctx.schemas:
            tconn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(s)))
        apply_script(tconn, ctx.pre_sql, ctx.settings, ctx.report.left_out)
        state.create(
            tconn,
            ctx.fingerprint,
            [(t.schema, t.name) for t in ctx.tables],
            ctx.report.backup,
            ctx.opts.state_schema,
        )
    ctx.run = state.read(tconn, ctx.opts.state_schema)
    ctx.rep.info(f"schema created: {len(ctx.tables)} tables")


def data(ctx: ImportContext, workers: Workers) -> None:
    """Step 6: the tables not yet copied, `jobs` at a time (one at a time in a replace)."""
    run = ctx.run
    assert run is not None
    todo = [t for t in ctx.tables if run.tables.get((t.schema, t.name)) != "copied"]

    def one(t: Table) -> TableResult:
        return with_retries(
            workers,
            ctx.opts.retries,
            f"copy {t.label}",
            ctx.rep,
            lambda: copy_table(workers, t, ctx.rep),
        )

    results = {f"{r.schema}.{r.table}": r for r in _map(workers, ctx.opts.jobs, one, todo)}
    ctx.report.tables = [
        results.get(t.label)
        or TableResult(
            t.schema, t.name, run.rows.get((t.schema, t.name), 0), 0, 0.0, "copied earlier"
        )
        for t in ctx.tables
    ]


def _map(workers: Workers, jobs: int, work: Callable[[X], Y], items: list[X]) -> list[Y]:
    """`work` over `items`, `jobs` at a time; every item is attempted even when one fails
    (a re-run then has only the failed ones left). In one transaction (a replace): in order,
    stopping at the first failure, which rolls everything back anyway."""
    if workers.fixed is not None:
        return [work(x) for x in items]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(work, items))


def sequences(ctx: ImportContext) -> None:
    """Step 7: each sequence set from the source, recorded with the work."""
    run = ctx.run
    assert run is not None
    if "sequences" in run.steps:
        return
    seqs = _sequences(ctx.snap, ctx.schemas)
    with ctx.tconn.transaction():
        for name, value, called in seqs:
            ctx.tconn.execute(
                "SELECT pg_catalog.setval(%s::regclass, %s, %s)", (name, value, called)
            )
        state.step_done(ctx.tconn, "sequences", ctx.opts.state_schema)
    ctx.report.sequences = len(seqs)


def post_data(ctx: ImportContext, workers: Workers, items: list[SqlItem]) -> None:
    """Step 8: indexes and constraints `jobs` at a time, then the rest in dump order."""
    run = ctx.run
    assert run is not None
    pending = [i for i in items if step_key(i) not in run.steps]
    ctx.rep.start("post-data", "indexes and constraints", len(pending))

    def one(item: SqlItem) -> None:
        with_retries(
            workers,
            ctx.opts.retries,
            f"post-data {item.kind} {item.name}",
            ctx.rep,
            lambda: apply_post_data_item(workers, item, ctx.rep, ctx.report.left_out),
        )

    _map(workers, ctx.opts.jobs, one, [i for i in pending if i.kind in _FIRST_WAVE])
    for item in pending:
        if item.kind not in _FIRST_WAVE:
            one(item)
    ctx.rep.finish("post-data", f"post-data: {len(pending)} statements")
    ctx.report.post_data = len(pending)


def finish(ctx: ImportContext) -> None:
    """Step 9: the run marked complete."""
    with ctx.tconn.transaction():
        state.finish(ctx.tconn, ctx.opts.state_schema)


def dry_run(ctx: ImportContext) -> None:
    """Apply the whole schema (and a replace's drops) in a transaction that is rolled back.

    Proves the schema applies and fills the report's left-out list; before step 1 has run,
    the source's extensions are created inside that transaction too (or stood in for).
    """
    report, opts = ctx.report, ctx.opts
    report.tables = [
        TableResult(t.schema, t.name, t.estimate, t.size, 0.0, "would copy") for t in ctx.tables
    ]
    report.discarded = ctx.existing + sorted(ctx.ours if ctx.discard else [])
    if opts.backup:
        report.backup = f"{BackupLocation(opts.backup).uri} (would write)"
    if ctx.run is not None and not ctx.discard:
        ctx.rep.info("dry run: the schema is already there (an earlier run of this import)")
        return
    with ctx.tconn.transaction(force_rollback=True):
        if ctx.replacing or ctx.discard:
            drop_existing(ctx)
            report.discarded = ctx.existing + sorted(ctx.ours if ctx.discard else [])
        _extensions_for_dry_run(ctx)
        for s in ctx.schemas:
            ctx.tconn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(s)))
        apply_script(ctx.tconn, ctx.pre_sql, ctx.settings, report.left_out)
        report.post_data = apply_script(ctx.tconn, ctx.post_sql, ctx.settings, report.left_out)
    ctx.rep.info("dry run: the schema applies on the target (rolled back)")


def _extensions_for_dry_run(ctx: ImportContext) -> None:
    """The source's extensions, in their schemas, where the target lacks them (rolled back)."""
    conn = ctx.tconn
    wanted = dict(ctx.layout.extensions)
    if ctx.layout.uses_extensions_schema:  # step 1 puts these there (or a stand-in)
        wanted.setdefault("uuid-ossp", EXTENSIONS_SCHEMA)
        wanted.setdefault("pgcrypto", EXTENSIONS_SCHEMA)
    for name, schema in wanted.items():
        if name == "plpgsql":
            continue
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        try:
            with conn.transaction():
                conn.execute(
                    sql.SQL("CREATE EXTENSION IF NOT EXISTS {} SCHEMA {}").format(
                        sql.Identifier(name), sql.Identifier(schema)
                    )
                )
        except psycopg.Error:
            if name == "uuid-ossp":
                row = conn.execute(
                    "SELECT to_regproc(format('%%I.uuid_generate_v4', %s::text))", (schema,)
                ).fetchone()
                if row is None or row[0] is None:
                    conn.execute(UUID_STAND_IN.format(sql.Identifier(schema)))
            else:
                ctx.rep.info(f"dry run: extension {name} could not be created (step 1 decides)")


# ---------------------------------------------------------------------------------------------


def import_database(
    source: Endpoint,
    target: Endpoint,
    options: ImportOptions | None = None,
    reporter: Reporter | None = None,
) -> ImportReport:
    """Import the application schemas of `source` into `target` (resumable).

    :param source: the Supabase (or any PostgreSQL) database.
    :param target: the RDS database, as its master user; step 1 must have run (except for a
        dry run).
    :param options: see `ImportOptions`.
    :param reporter: receives progress (CLI: bars on stderr; provider: pulumi.log.info).
    :raises UnknownSchema, PgDumpUnsuitable, TargetNotEmpty, SettingsChanged, PreflightError:
        before anything is written.
    :raises BackupFailed, ImportFailed: while working; progress so far is kept for a resume
        (a replace's failure leaves the target as it was).
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


STEPS = (
    "preflight",
    "schema dump",
    "target backup",
    "backup",
    "pre-data",
    "data",
    "sequences",
    "post-data",
    "finish",
)


@contextmanager
def _step(ctx: ImportContext, name: str) -> Iterator[None]:
    """Log ``step N/9 name``, time it into the report's timings."""
    number = STEPS.index(name) + 1
    ctx.rep.info(f"step {number}/{len(STEPS)} {name}")
    began = time.monotonic()
    yield
    ctx.timings[name.replace(" ", "_").replace("-", "_")] = round(time.monotonic() - began, 3)


def _import(source: Endpoint, target: Endpoint, opts: ImportOptions, rep: Reporter) -> ImportReport:
    began = time.monotonic()
    schemas = list(dict.fromkeys(opts.schemas))
    report = ImportReport(
        source.masked, target.masked, schemas, pg_dump="", dry_run=opts.dry_run, resumed=False
    )
    with (
        source.connect() as snap,
        target.connect(autocommit=True) as tconn,
        tempfile.TemporaryDirectory(prefix="qckstrt-migrate-") as tmp,
    ):
        ctx = ImportContext(source, target, opts, rep, snap, tconn, Path(tmp), schemas, report)
        with _step(ctx, "preflight"):
            preflight(ctx)
        with _step(ctx, "schema dump"):
            schema_dump(ctx)
        if opts.dry_run:
            dry_run(ctx)
        else:
            _write(ctx)
    ctx.timings["total"] = round(time.monotonic() - began, 3)
    report.timings = ctx.timings
    if not opts.dry_run:
        rep.info(f"import complete in {ctx.timings['total']:.1f}s")
    return report


def _write(ctx: ImportContext) -> None:
    """Steps 3-9; a replace runs 5-9 with its drops in the target's one transaction."""
    with _step(ctx, "target backup"):
        target_backup(ctx)
    if ctx.discard and not ctx.replacing:
        discard_earlier(ctx)
    with _step(ctx, "backup"):
        backup(ctx)
    preamble, items = split_items(clean_sql(ctx.post_sql, ctx.settings))
    if ctx.replacing:
        ctx.rep.info("replace: drop and re-create in one transaction, one table at a time")
        workers = Workers(
            ctx.source,
            ctx.target,
            ctx.snapshot,
            preamble,
            (ctx.snap, ctx.tconn),
            ctx.opts.state_schema,
        )
        with ctx.tconn.transaction():
            drop_existing(ctx)
            _load(ctx, workers, items)
        return
    workers = Workers(
        ctx.source, ctx.target, ctx.snapshot, preamble, state_schema=ctx.opts.state_schema
    )
    try:
        _load(ctx, workers, items)
    finally:
        workers.close()


def _load(ctx: ImportContext, workers: Workers, items: list[SqlItem]) -> None:
    with _step(ctx, "pre-data"):
        pre_data(ctx)
    with _step(ctx, "data"):
        data(ctx, workers)
    with _step(ctx, "sequences"):
        sequences(ctx)
    with _step(ctx, "post-data"):
        post_data(ctx, workers, items)
    with _step(ctx, "finish"):
        finish(ctx)


__all__ = [
    "STEPS",
    "ImportContext",
    "ImportOptions",
    "ImportReport",
    "MigrationError",
    "PgDumpUnsuitable",
    "TableResult",
    "errors",
    "import_database",
]
