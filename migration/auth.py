"""The auth step: carry Supabase Auth (GoTrue's schema `auth`) onto the target, faithfully.

After the import of the application schemas, so that GoTrue of the same version starts on the
target without migrating (and a newer one can migrate it):

1. Supabase's service roles, created by the master user (`migration.roles`), passwords in the
   password store; schema `auth` created owned by ``supabase_auth_admin``.
2. Schema `auth` through the import machinery (`import_database` with its own progress state,
   ``qckstrt_migrate_auth``): every table, type, sequence (value set), function, default,
   constraint (the foreign keys inside `auth`), index, comment and row level security, and
   GoTrue's ``schema_migrations`` rows. It resumes like the import.
3. Owners and grants: every object in `auth` handed to ``supabase_auth_admin``; the source's
   grants on `auth` replayed for the roles the target has.
4. The application's objects that the import left out only because `auth` or the service roles
   were missing (foreign keys into ``auth.users``, policies calling ``auth.uid()``, their row
   level security, functions), and the application's grants to the service roles, applied from
   the same kind of schema dump, in one transaction.

Steps 3 and 4 are recorded in the step's state in the transaction that does them: a second run
changes nothing. What stays behind is listed in the report with the reason.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from migration import grants, state, supabase
from migration.connection import Conn, Endpoint, server_major
from migration.errors import ConfigError, ImportFailed, PreflightError
from migration.lock import target_lock
from migration.options import option, validate
from migration.pgtools import PgTools, clean_sql, find_pg_tools, parse_toc, restore_to_sql_args
from migration.progress import NullReporter, Reporter
from migration.roles import SERVICE_ROLES, PasswordStore, RolesReport, ensure_roles
from migration.supabase import LeftOut
from migration.transfer import ImportOptions, _filter_toc, import_database

AUTH_SCHEMA = "auth"
OWNER = "supabase_auth_admin"
STATE_SCHEMA = "qckstrt_migrate_auth"
_OWNERS_STEP = "auth:owners-and-grants"
_APP_STEP = "auth:application-objects"


@dataclass
class AuthOptions:
    """Settings of the auth step; defaults and validation from ``migration.options``.

    :param app_schemas: the application schemas whose auth-dependent objects are put back (the
        import's `schemas`).
    :param jobs: tables copied at once.
    :param pg_dump: a pg_dump to use instead of the newest suitable one.
    :param lock_wait_seconds: how long to wait for another run's lock on the target.
    :param retries: retries of a table copy after a lost connection.
    """

    app_schemas: list[str] = option("schemas")
    jobs: int = option("jobs")
    pg_dump: str | None = option("pg_dump")
    lock_wait_seconds: float = option("lock_wait_seconds")
    retries: int = option("retries")

    def __post_init__(self) -> None:
        validate(self)
        if AUTH_SCHEMA in self.app_schemas:
            raise ConfigError(
                "`schemas` names auth, which the auth step carries itself: leave it out",
                setting="schemas",
            )


@dataclass
class AuthReport:
    """The outcome of the auth step; `as_dict` is JSON-able and holds no password."""

    roles: RolesReport
    tables: dict[str, int] = field(default_factory=dict)
    already_complete: bool = False
    owners_changed: int = 0
    grants: int = 0
    reapplied: list[str] = field(default_factory=list)
    left_out: list[LeftOut] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def carry_auth(
    source: Endpoint,
    target: Endpoint,
    store: PasswordStore,
    options: AuthOptions | None = None,
    reporter: Reporter | None = None,
) -> AuthReport:
    """Carry schema `auth` and the roles GoTrue needs from `source` to `target` (resumable).

    :param source: the Supabase database.
    :param target: the RDS database as its master user (CREATEROLE, not a superuser); the
        import of the application schemas has run.
    :param store: where the login roles' passwords are kept (Secrets Manager in a stack).
    :param options: see `AuthOptions`.
    :param reporter: receives progress; never a password.
    :raises PreflightError, ConfigError: before anything is written.
    :raises ImportFailed: while working; a re-run resumes.
    """
    opts = options or AuthOptions()
    rep = reporter or NullReporter()
    with target_lock(target, opts.lock_wait_seconds):
        return _carry(source, target, store, opts, rep)


def _refuse_non_gotrue(source: Endpoint) -> None:
    """Stop before any role is made when the source has no GoTrue schema to carry."""
    with source.connect() as conn:
        row = conn.execute(
            "SELECT to_regclass('auth.users') IS NOT NULL "
            "AND to_regclass('auth.schema_migrations') IS NOT NULL"
        ).fetchone()
    if row is None or not row[0]:
        raise PreflightError(
            f"the source {source.masked} has no GoTrue schema (auth.users and "
            "auth.schema_migrations): check the source URL, or leave the auth step out; "
            "nothing was changed"
        )


def _carry(
    source: Endpoint, target: Endpoint, store: PasswordStore, opts: AuthOptions, rep: Reporter
) -> AuthReport:
    _refuse_non_gotrue(source)
    with target.connect(autocommit=True) as tconn:
        roles = ensure_roles(tconn, store, rep)
        tconn.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(
                sql.Identifier(AUTH_SCHEMA), sql.Identifier(OWNER)
            )
        )
    imported = import_database(
        source,
        target,
        ImportOptions(
            schemas=[AUTH_SCHEMA],
            jobs=opts.jobs,
            pg_dump=opts.pg_dump,
            lock_wait_seconds=opts.lock_wait_seconds,
            retries=opts.retries,
            state_schema=STATE_SCHEMA,
        ),
        rep,
    )
    report = AuthReport(
        roles=roles,
        tables={f"{t.schema}.{t.table}": t.rows for t in imported.tables},
        left_out=[lo for lo in imported.left_out if lo.kind not in ("grants", "owners")],
    )
    with source.connect() as snap, target.connect(autocommit=True) as tconn:
        snap.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        snap.read_only = True
        run = state.read(tconn, STATE_SCHEMA)
        done = run.steps if run is not None else set()
        report.already_complete = imported.already_complete and {_OWNERS_STEP, _APP_STEP} <= done
        if _OWNERS_STEP not in done:
            _owners_and_grants(snap, tconn, report, rep)
        if _APP_STEP not in done:
            _application_objects(source, snap, tconn, opts.app_schemas, opts, report, rep)
        report.left_out += (
            _grants_left_out(snap, tconn)
            + _default_privileges(snap)
            + _still_left_out(snap, tconn, opts.app_schemas)
        )
    report.left_out += [
        LeftOut("role attribute", "BYPASSRLS of service_role", note)
        for note in report.roles.notes
        if "BYPASSRLS" in note
    ]
    for lo in report.left_out:
        rep.info(f"left out {lo.kind} {lo.name}: {lo.reason}")
    return report


def _owners_and_grants(snap: Conn, tconn: Conn, report: AuthReport, rep: Reporter) -> None:
    """Hand `auth` to its owner and replay the source's grants on it, with the step's row."""
    with tconn.transaction():
        report.owners_changed = grants.hand_over(tconn, AUTH_SCHEMA, OWNER)
        applied, _ = grants.apply_grants(tconn, grants.source_grants(snap, [AUTH_SCHEMA]))
        report.grants += applied
        state.step_done(tconn, _OWNERS_STEP, STATE_SCHEMA)
    rep.info(f"auth: {report.owners_changed} objects owned by {OWNER}, {applied} grants")


def _grants_left_out(snap: Conn, tconn: Conn) -> list[LeftOut]:
    """The source's grants on `auth` to roles the target does not have (every run says so)."""
    wanted = {g.grantee for g in grants.source_grants(snap, [AUTH_SCHEMA])} - {"PUBLIC"}
    missing = sorted(wanted - grants.existing_roles(tconn, wanted))
    if not missing:
        return []
    return [
        LeftOut(
            "grants",
            f"grants on schema auth to {', '.join(missing)}",
            "these roles do not exist on the target (Supabase-internal)",
        )
    ]


def _target_roles(tconn: Conn) -> frozenset[str]:
    return frozenset(grants.existing_roles(tconn, supabase.SUPABASE_ROLES))


def _application_objects(
    source: Endpoint,
    snap: Conn,
    tconn: Conn,
    app_schemas: list[str],
    opts: AuthOptions,
    report: AuthReport,
    rep: Reporter,
) -> None:
    """Apply what the import left out only for want of `auth` or the service roles."""
    before = supabase.classify(snap, app_schemas)
    after = supabase.classify(snap, app_schemas, {AUTH_SCHEMA}, _target_roles(tconn))
    text, labels = "", list[str]()
    if before.keys() - after.keys():
        tools = find_pg_tools(server_major(snap), opts.pg_dump)
        text, labels = _schema_sql(source, snap, tools, app_schemas, before, after, tconn)
    service = {r.name for r in SERVICE_ROLES}
    try:
        with tconn.transaction():
            if text.strip():
                tconn.execute(text.encode())
            applied, _ = grants.apply_grants(
                tconn, grants.source_grants(snap, app_schemas), service
            )
            state.step_done(tconn, _APP_STEP, STATE_SCHEMA)
    except psycopg.Error as exc:
        raise ImportFailed(
            "putting back the application's objects that use auth failed: "
            f"{exc.diag.message_primary or exc}; nothing of it was applied"
        ) from exc
    report.reapplied = labels
    report.grants += applied
    rep.info(f"auth: put back {len(labels)} application objects, {applied} grants to API roles")


def _schema_sql(
    source: Endpoint,
    snap: Conn,
    tools: PgTools,
    app_schemas: list[str],
    before: supabase.Decisions,
    after: supabase.Decisions,
    tconn: Conn,
) -> tuple[str, list[str]]:
    """SQL of the TOC entries kept with `auth` carried but not without (and their labels)."""
    with tempfile.TemporaryDirectory(prefix="qckstrt-auth-") as tmp:
        conninfo, env = source.libpq_env()
        archive = Path(tmp) / "app.dump"
        row = snap.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        args = [
            str(tools.pg_dump),
            "--dbname",
            conninfo,
            "--format=custom",
            "--schema-only",
            "--no-tablespaces",
            f"--snapshot={row[0]}",
            "--file",
            str(archive),
        ]
        for s in app_schemas:
            args += ["--schema", f'"{s}"']
        _run(tools, args, env)
        toc = parse_toc(_run(tools, [str(tools.pg_restore), "-l", "-v", str(archive)]))
        was_kept = {e.dump_id for e in _filter_toc(toc, before)[0]}
        entries = [e for e in _filter_toc(toc, after)[0] if e.dump_id not in was_kept]
        listing = Path(tmp) / "keep.list"
        listing.write_text("\n".join(e.line for e in entries) + "\n")
        text = _run(tools, [*restore_to_sql_args(tools, listing), str(archive)])
    settings = {str(r[0]).lower() for r in tconn.execute("SELECT name FROM pg_settings")}
    labels = [f"{e.desc.lower()} {e.schema}.{e.tag}" for e in entries]
    return clean_sql(text, settings), labels


def _run(tools: PgTools, args: list[str], env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        cause = lines[-1] if lines else proc.returncode
        raise ImportFailed(f"{Path(args[0]).name} {tools.version} failed: {cause}")
    return proc.stdout


def _default_privileges(snap: Conn) -> list[LeftOut]:
    """Supabase's ``ALTER DEFAULT PRIVILEGES`` in `auth` name its internal roles: not carried."""
    rows = snap.execute(
        "SELECT DISTINCT pg_get_userbyid(d.defaclrole) FROM pg_default_acl d "
        "JOIN pg_namespace n ON n.oid = d.defaclnamespace WHERE n.nspname = %s ORDER BY 1",
        (AUTH_SCHEMA,),
    ).fetchall()
    return [
        LeftOut(
            "default privileges",
            f"for role {r[0]} in schema auth",
            "they grant to Supabase-internal roles (postgres, dashboard_user); GoTrue does not "
            "need them",
        )
        for r in rows
    ]


def _still_left_out(snap: Conn, tconn: Conn, app_schemas: list[str]) -> list[LeftOut]:
    """What the application schemas still leave behind with `auth` carried, and why."""
    after = supabase.classify(snap, app_schemas, {AUTH_SCHEMA}, _target_roles(tconn))
    return sorted(after.values(), key=lambda lo: (lo.kind, lo.name))
