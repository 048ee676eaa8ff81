"""The auth step: carry Supabase Auth (GoTrue's schema `auth`) onto the target, faithfully.

After the import of the application schemas, so that GoTrue of the same version starts on the
target without migrating (and a newer one can migrate it):

1. Supabase's service roles, created by the master user (`migration.db.roles`), passwords in the
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

from migration.db import grants, state, supabase
from migration.db.connection import Conn, Endpoint, server_major
from migration.db.lock import target_lock
from migration.db.pgtools import PgTools, clean_sql, find_pg_tools, parse_toc, restore_to_sql_args
from migration.db.roles import (
    LOGIN_ROLES,
    SERVICE_ROLES,
    STORAGE_PASSWORDS,
    STORAGE_ROLES,
    PasswordStore,
    RolesReport,
    ensure_roles,
)
from migration.db.schema_apply import filter_toc
from migration.db.supabase import LeftOut
from migration.errors import ConfigError, ImportFailed, PreflightError
from migration.options import option, validate
from migration.progress import NullReporter, Reporter
from migration.steps.transfer import ImportOptions, import_database


@dataclass(frozen=True)
class ServiceSchema:
    """A Supabase service's schema, carried faithfully and owned by the service's admin role.

    :param name: the schema (`auth` for GoTrue, `storage` for storage-api).
    :param owner: the role the service migrates as; it owns every object in the schema.
    :param state_schema: the target schema keeping this carry's progress (its own, so the
        carry resumes like the import without touching the import's).
    :param marks: tables whose presence on the source says the service's schema is there.
    :param service: the service's name, for messages.
    :param roles: the service roles the carry makes (with a password store) or needs.
    :param passwords: the login roles among them whose passwords the carry's store keeps.
    :param store_setting: the setting that names that store, for messages.
    """

    name: str
    owner: str
    state_schema: str
    marks: tuple[str, ...]
    service: str
    roles: tuple[str, ...]
    passwords: tuple[str, ...]
    store_setting: str

    @property
    def owners_step(self) -> str:
        return f"{self.name}:owners-and-grants"

    @property
    def app_step(self) -> str:
        return f"{self.name}:application-objects"


AUTH = ServiceSchema(
    "auth",
    "supabase_auth_admin",
    "qckstrt_migrate_auth",
    ("users", "schema_migrations"),
    "GoTrue",
    tuple(r.name for r in SERVICE_ROLES),
    LOGIN_ROLES,
    "auth_password_secrets",
)
STORAGE = ServiceSchema(
    "storage",
    "supabase_storage_admin",
    "qckstrt_migrate_storage",
    ("buckets", "objects", "migrations"),
    "storage-api",
    STORAGE_ROLES,
    STORAGE_PASSWORDS,
    "storage_password_secret",
)
SERVICE_SCHEMAS = (AUTH, STORAGE)
AUTH_SCHEMA = AUTH.name
OWNER = AUTH.owner
STATE_SCHEMA = AUTH.state_schema


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
    schema: str = AUTH.name
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
    return carry_service_schema(source, target, AUTH, store, options, reporter)


def carry_service_schema(
    source: Endpoint,
    target: Endpoint,
    spec: ServiceSchema,
    store: PasswordStore | None,
    options: AuthOptions | None = None,
    reporter: Reporter | None = None,
) -> AuthReport:
    """Carry a Supabase service's schema (`spec`), owned by its admin role (resumable).

    The same machinery for `auth` (GoTrue, ``supabase_auth_admin``) and `storage`
    (storage-api, ``supabase_storage_admin``): so both keep their functions, triggers, foreign
    keys, row level security, migrations rows, owner and grants.

    :param store: where the login roles' passwords are kept; with it the service roles are
        made or aligned first. None: the roles must exist already (the auth step made them).
    :raises PreflightError, ConfigError: before anything is written.
    :raises ImportFailed: while working; a re-run resumes.
    """
    opts = options or AuthOptions()
    rep = reporter or NullReporter()
    if spec.name in opts.app_schemas:
        raise ConfigError(
            f"`schemas` names {spec.name}, which the {spec.service} carry takes itself: "
            "leave it out",
            setting="schemas",
        )
    with target_lock(target, opts.lock_wait_seconds):
        return _carry(source, target, spec, store, opts, rep)


def _refuse_missing_service(source: Endpoint, spec: ServiceSchema) -> None:
    """Stop before any role is made when the source has no such service schema to carry."""
    names = [f"{spec.name}.{t}" for t in spec.marks]
    with source.connect() as conn:
        row = conn.execute(
            "SELECT bool_and(to_regclass(n) IS NOT NULL) FROM unnest(%s::text[]) n", (names,)
        ).fetchone()
    if row is None or not row[0]:
        raise PreflightError(
            f"the source {source.masked} has no {spec.service} schema ({', '.join(names)}): "
            f"check the source URL, or leave the {spec.name} step out; nothing was changed"
        )


def _existing_roles(tconn: Conn, spec: ServiceSchema, rep: Reporter) -> RolesReport:
    """Without a password store: the service roles must be there already (made by the auth
    step), else stop before anything is written, naming them and the setting to give."""
    wanted = set(spec.roles)
    missing = sorted(wanted - grants.existing_roles(tconn, wanted))
    if missing:
        raise PreflightError(
            f"the target lacks Supabase's service roles {', '.join(missing)}: give "
            f"`{spec.store_setting}` (the step makes them, passwords in Secrets Manager) or run "
            "the auth step first; nothing was changed"
        )
    rep.info("service roles present (made by the auth step)")
    return RolesReport()


def _carried_before(tconn: Conn, spec: ServiceSchema) -> frozenset[str]:
    """The other service schemas already carried to the target (their references may stay)."""
    others = [s for s in SERVICE_SCHEMAS if s is not spec]
    return frozenset(s.name for s in others if state.read(tconn, s.state_schema) is not None)


def _carry(
    source: Endpoint,
    target: Endpoint,
    spec: ServiceSchema,
    store: PasswordStore | None,
    opts: AuthOptions,
    rep: Reporter,
) -> AuthReport:
    _refuse_missing_service(source, spec)
    with target.connect(autocommit=True) as tconn:
        if store is not None:
            roles = ensure_roles(tconn, store, rep, spec.roles, spec.passwords)
        else:
            roles = _existing_roles(tconn, spec, rep)
        tconn.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(
                sql.Identifier(spec.name), sql.Identifier(spec.owner)
            )
        )
        before = _carried_before(tconn, spec)
    imported = import_database(
        source,
        target,
        ImportOptions(
            schemas=[spec.name],
            jobs=opts.jobs,
            pg_dump=opts.pg_dump,
            lock_wait_seconds=opts.lock_wait_seconds,
            retries=opts.retries,
            state_schema=spec.state_schema,
        ),
        rep,
    )
    report = AuthReport(
        schema=spec.name,
        roles=roles,
        tables={f"{t.schema}.{t.table}": t.rows for t in imported.tables},
        left_out=[lo for lo in imported.left_out if lo.kind not in ("grants", "owners")],
    )
    with source.connect() as snap, target.connect(autocommit=True) as tconn:
        snap.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        snap.read_only = True
        run = state.read(tconn, spec.state_schema)
        done = run.steps if run is not None else set()
        steps = {spec.owners_step, spec.app_step}
        report.already_complete = imported.already_complete and steps <= done
        if spec.owners_step not in done:
            _owners_and_grants(snap, tconn, spec, report, rep)
        if spec.app_step not in done:
            carried = (before, before | {spec.name})
            _application_objects(source, snap, tconn, spec, carried, opts, report, rep)
        report.left_out += (
            _grants_left_out(snap, tconn, spec.name)
            + _default_privileges(snap, spec.name)
            + _still_left_out(snap, tconn, opts.app_schemas, before | {spec.name})
        )
    report.left_out += [
        LeftOut("role attribute", "BYPASSRLS of service_role", note)
        for note in report.roles.notes
        if "BYPASSRLS" in note
    ]
    for lo in report.left_out:
        rep.info(f"left out {lo.kind} {lo.name}: {lo.reason}")
    return report


def _owners_and_grants(
    snap: Conn, tconn: Conn, spec: ServiceSchema, report: AuthReport, rep: Reporter
) -> None:
    """Hand the schema to its owner and replay the source's grants on it, with the step's row."""
    with tconn.transaction():
        report.owners_changed = grants.hand_over(tconn, spec.name, spec.owner)
        applied, _ = grants.apply_grants(tconn, grants.source_grants(snap, [spec.name]))
        report.grants += applied
        state.step_done(tconn, spec.owners_step, spec.state_schema)
    changed = report.owners_changed
    rep.info(f"{spec.name}: {changed} objects owned by {spec.owner}, {applied} grants")


def _grants_left_out(snap: Conn, tconn: Conn, schema: str) -> list[LeftOut]:
    """The source's grants on `schema` to roles the target does not have (every run says so)."""
    wanted = {g.grantee for g in grants.source_grants(snap, [schema])} - {"PUBLIC"}
    missing = sorted(wanted - grants.existing_roles(tconn, wanted))
    if not missing:
        return []
    return [
        LeftOut(
            "grants",
            f"grants on schema {schema} to {', '.join(missing)}",
            "these roles do not exist on the target (Supabase-internal)",
        )
    ]


def _target_roles(tconn: Conn) -> frozenset[str]:
    return frozenset(grants.existing_roles(tconn, supabase.SUPABASE_ROLES))


def _application_objects(
    source: Endpoint,
    snap: Conn,
    tconn: Conn,
    spec: ServiceSchema,
    carried: tuple[frozenset[str], frozenset[str]],
    opts: AuthOptions,
    report: AuthReport,
    rep: Reporter,
) -> None:
    """Apply what the import left out only for want of this schema or the service roles."""
    app_schemas = opts.app_schemas
    roles = _target_roles(tconn)
    before = supabase.classify(snap, app_schemas, carried[0], roles if carried[0] else frozenset())
    after = supabase.classify(snap, app_schemas, carried[1], roles)
    text, labels = "", list[str]()
    if before.keys() - after.keys():
        tools = find_pg_tools(server_major(snap), opts.pg_dump)
        text, labels = _schema_sql(source, snap, tools, app_schemas, before, after, tconn)
    service = {r.name for r in SERVICE_ROLES}
    skipped: list[str] = []
    try:
        with tconn.transaction():
            if text.strip():
                tconn.execute(text.encode())
            applied, _ = grants.apply_grants(
                tconn, grants.source_grants(snap, app_schemas), service, skipped
            )
            state.step_done(tconn, spec.app_step, spec.state_schema)
    except psycopg.Error as exc:
        raise ImportFailed(
            f"putting back the application's objects that use {spec.name} failed: "
            f"{exc.diag.message_primary or exc}; nothing of it was applied"
        ) from exc
    report.reapplied = labels
    report.grants += applied
    if skipped:
        report.left_out.append(_skipped_grants(skipped))
    rep.info(
        f"{spec.name}: put back {len(labels)} application objects, {applied} grants to API roles"
    )


def _skipped_grants(labels: list[str]) -> LeftOut:
    """The application's grants to API roles on objects the import left out (vault helpers)."""
    shown = "; ".join(labels[:3]) + (f"; and {len(labels) - 3} more" if len(labels) > 3 else "")
    return LeftOut(
        "grants",
        f"{len(labels)} grants on objects not on the target ({shown})",
        "their objects were left out by the import",
    )


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
        was_kept = {e.dump_id for e in filter_toc(toc, before)[0]}
        entries = [e for e in filter_toc(toc, after)[0] if e.dump_id not in was_kept]
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


def _default_privileges(snap: Conn, schema: str) -> list[LeftOut]:
    """Supabase's ``ALTER DEFAULT PRIVILEGES`` in a service schema: not carried."""
    rows = snap.execute(
        "SELECT DISTINCT pg_get_userbyid(d.defaclrole) FROM pg_default_acl d "
        "JOIN pg_namespace n ON n.oid = d.defaclnamespace WHERE n.nspname = %s ORDER BY 1",
        (schema,),
    ).fetchall()
    return [
        LeftOut(
            "default privileges",
            f"for role {r[0]} in schema {schema}",
            "default privileges only shape objects created later; the carried objects have "
            "their grants already, and a newer service's migrations grant what they add",
        )
        for r in rows
    ]


def _still_left_out(
    snap: Conn, tconn: Conn, app_schemas: list[str], carried: frozenset[str]
) -> list[LeftOut]:
    """What the application schemas still leave behind with `carried` on the target, and why."""
    after = supabase.classify(snap, app_schemas, carried, _target_roles(tconn))
    return sorted(after.values(), key=lambda lo: (lo.kind, lo.name))
