"""Step 1: pgvector (and the Supabase `extensions` schema) on the target.

Everything happens in one transaction, so a failure (pgvector missing, no right to create it)
leaves the target exactly as it was.

The uuid stand-in: Supabase dumps say ``extensions.uuid_generate_v4()``. Where the server offers
`uuid-ossp` it is created in schema `extensions`; where it does not (the embedded test server),
``extensions.uuid_generate_v4()`` is created as a one-line SQL function over
``gen_random_uuid()`` (core since PostgreSQL 13), which returns the same kind of value (a random
version-4 UUID). The report says which of the two was installed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg import errors, sql

from migration.db.connection import Conn, Endpoint, refuse_same_database
from migration.db.lock import target_lock
from migration.errors import ExtensionUnavailable
from migration.progress import NullReporter, Reporter

EXTENSIONS_SCHEMA = "extensions"

REMEDY = (
    "pgvector is not available on this server: on RDS use PostgreSQL 15.2+ or 16.x, where "
    "`vector` is in pg_available_extensions; self-hosted: install pgvector "
    "(e.g. apt install postgresql-16-pgvector, or build it from github.com/pgvector/pgvector) "
    "and run this step again"
)

UUID_STAND_IN = sql.SQL(
    "CREATE FUNCTION {}.uuid_generate_v4() RETURNS uuid LANGUAGE sql VOLATILE PARALLEL SAFE "
    "AS 'SELECT pg_catalog.gen_random_uuid()'"
)


@dataclass
class SourceLayout:
    """Where the source keeps its extensions (read from its catalog)."""

    vector_schema: str = "public"
    uses_extensions_schema: bool = False
    extensions: dict[str, str] = field(default_factory=dict)


@dataclass
class ExtensionReport:
    """What step 1 found and did; `as_dict` is JSON-able."""

    vector_version: str
    vector_schema: str
    vector_created: bool
    vector_updated: bool
    available_versions: list[str]
    extensions_schema: str | None
    uuid_generate_v4: str | None
    pgcrypto: str | None
    search_path: str | None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_source_layout(conn: Conn) -> SourceLayout:
    """Read which schema holds `vector` and whether schema `extensions` is used on the source."""
    rows = conn.execute(
        "SELECT e.extname, n.nspname FROM pg_extension e "
        "JOIN pg_namespace n ON n.oid = e.extnamespace"
    ).fetchall()
    exts = {str(name): str(schema) for name, schema in rows}
    has_schema = conn.execute(
        "SELECT 1 FROM pg_namespace WHERE nspname = %s", (EXTENSIONS_SCHEMA,)
    ).fetchone()
    return SourceLayout(
        vector_schema=exts.get("vector", "public"),
        uses_extensions_schema=has_schema is not None,
        extensions=exts,
    )


def _available(conn: Conn, name: str) -> str | None:
    row = conn.execute(
        "SELECT default_version FROM pg_available_extensions WHERE name = %s", (name,)
    ).fetchone()
    return None if row is None else str(row[0])


def _installed(conn: Conn, name: str) -> tuple[str, str] | None:
    row = conn.execute(
        "SELECT e.extversion, n.nspname FROM pg_extension e "
        "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = %s",
        (name,),
    ).fetchone()
    return None if row is None else (str(row[0]), str(row[1]))


def _function_exists(conn: Conn, schema: str, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = %s AND p.proname = %s",
        (schema, name),
    ).fetchone()
    return row is not None


def _resolves(conn: Conn, search_path: list[str], schemas: list[str]) -> bool:
    return all(s in search_path for s in schemas)


def _database_search_path(conn: Conn) -> list[str]:
    """The search_path a fresh session gets (database setting, else the server default)."""
    row = conn.execute(
        "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
        "WHERE d.datname = current_database() AND s.setrole = 0"
    ).fetchone()
    value = None
    for item in row[0] if row and row[0] else []:
        if str(item).startswith("search_path="):
            value = str(item).split("=", 1)[1]
    if value is None:
        boot = conn.execute(
            "SELECT boot_val FROM pg_settings WHERE name = 'search_path'"
        ).fetchone()
        value = str(boot[0]) if boot else '"$user", public'
    return [p.strip().strip('"') for p in value.split(",") if p.strip()]


def setup_extension(
    target: Endpoint,
    source: Endpoint | None = None,
    *,
    vector_schema: str | None = None,
    reporter: Reporter | None = None,
    lock_wait_seconds: float = 0.0,
) -> ExtensionReport:
    """Create or update `vector` on the target in the schema the source uses for it.

    When the source keeps extensions in schema `extensions` (Supabase), that schema is created
    with `uuid-ossp` (or the documented stand-in) and `pgcrypto` where available, and the
    database's `search_path` is extended so that the app's unqualified SQL resolves over a fresh
    connection.

    :param target: the target, as its master user (on RDS: member of rds_superuser).
    :param source: read to learn where `vector` and the other extensions live; optional.
    :param vector_schema: overrides the schema for `vector` (default: the source's, or public).
    :param reporter: receives progress lines.
    :param lock_wait_seconds: how long to wait for another run's lock on the target.
    :raises TargetBusy: another run holds the target's lock.
    :raises ExtensionUnavailable: `vector` is not offered, or the role may not create it.
    :raises ConnectionFailed: a database cannot be reached.
    """
    rep = reporter or NullReporter()
    layout = _source_layout(target, source)
    schema = vector_schema or layout.vector_schema
    ext_schema = EXTENSIONS_SCHEMA if layout.uses_extensions_schema else None
    schemas = list(dict.fromkeys([schema, *([ext_schema] if ext_schema else [])]))
    notes: list[str] = []

    with target_lock(target, lock_wait_seconds), target.connect() as conn:
        default_version = _available(conn, "vector")
        if default_version is None:
            raise ExtensionUnavailable(REMEDY)
        versions = _available_versions(conn)
        with conn.transaction():
            for s in schemas:
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(s)))
            installed, created = _create_vector(conn, schema, notes)
            installed, updated = _update_vector(conn, installed, default_version, notes)
            uuid_kind: str | None = None
            pgcrypto: str | None = None
            if ext_schema is not None:
                uuid_kind, pgcrypto = _extensions_schema(conn, ext_schema, notes)
            needed = list(dict.fromkeys([installed[1], *([ext_schema] if ext_schema else [])]))
            search_path = _set_search_path(conn, needed, notes)

    report = ExtensionReport(
        vector_version=installed[0],
        vector_schema=installed[1],
        vector_created=created,
        vector_updated=updated,
        available_versions=versions,
        extensions_schema=ext_schema,
        uuid_generate_v4=uuid_kind,
        pgcrypto=pgcrypto,
        search_path=search_path,
        notes=notes,
    )
    verb = "created" if created else ("updated" if updated else "present")
    rep.info(f"vector {report.vector_version} {verb} in schema {report.vector_schema}")
    for note in notes:
        rep.info(note)
    return report


def _source_layout(target: Endpoint, source: Endpoint | None) -> SourceLayout:
    """Where the source keeps its extensions (empty without a source); refuses source = target."""
    if source is None:
        return SourceLayout()
    with source.connect(autocommit=True) as sconn:
        layout = read_source_layout(sconn)
        with target.connect(autocommit=True) as tcheck:
            refuse_same_database(sconn, tcheck)
    return layout


def _available_versions(conn: Conn) -> list[str]:
    return [
        str(r[0])
        for r in conn.execute(
            "SELECT version FROM pg_available_extension_versions WHERE name = 'vector' "
            "ORDER BY string_to_array(version, '.')::int[]"
        ).fetchall()
    ]


def _create_vector(conn: Conn, schema: str, notes: list[str]) -> tuple[tuple[str, str], bool]:
    """Create `vector` in `schema` unless it is installed (where it is, it stays).

    :returns: (version, schema) as installed, and whether it was created now.
    :raises ExtensionUnavailable: the role may not create it.
    """
    user = str(conn.execute("SELECT current_user").fetchone()[0])  # type: ignore[index]
    before = _installed(conn, "vector")
    if before is not None and before[1] != schema:
        notes.append(
            f"vector already installed in schema {before[1]!r} (wanted {schema!r}); left there"
        )
        schema = before[1]
    try:
        conn.execute(
            sql.SQL("CREATE EXTENSION IF NOT EXISTS vector SCHEMA {}").format(
                sql.Identifier(schema)
            )
        )
    except errors.InsufficientPrivilege as exc:  # the transaction is aborted: no query here
        raise ExtensionUnavailable(
            f"role {user!r} may not create extension vector: on RDS connect as the master "
            "user (member of rds_superuser); self-hosted: have a superuser run "
            f"CREATE EXTENSION vector SCHEMA {schema} in this database"
        ) from exc
    installed = _installed(conn, "vector")
    assert installed is not None
    return installed, before is None


def _update_vector(
    conn: Conn, installed: tuple[str, str], default_version: str, notes: list[str]
) -> tuple[tuple[str, str], bool]:
    """``ALTER EXTENSION vector UPDATE`` when a newer version is offered (extensions do not
    upgrade with the engine); a refusal is a note, not a failure."""
    if installed[0] == default_version:
        return installed, False
    updated = False
    try:
        with conn.transaction():
            conn.execute("ALTER EXTENSION vector UPDATE")
        updated = True
    except (errors.InsufficientPrivilege, errors.FeatureNotSupported) as exc:
        notes.append(
            f"vector {installed[0]} not updated to {default_version}: {exc.diag.message_primary}"
        )
    after = _installed(conn, "vector")
    assert after is not None
    return after, updated


def _set_search_path(conn: Conn, needed: list[str], notes: list[str]) -> str | None:
    """Extend the database's search_path with `needed`, so the app's unqualified SQL resolves
    over a fresh connection; returns the search_path, or None when it could not be set."""
    current = _database_search_path(conn)
    if _resolves(conn, current, needed):
        return ", ".join(current)
    wanted = current + [s for s in needed if s not in current]
    value = ", ".join(f'"{p}"' if p == "$user" else p for p in wanted)
    try:
        with conn.transaction():
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET search_path TO {}").format(
                    sql.Identifier(str(conn.info.dbname)),
                    sql.SQL(", ").join(sql.Identifier(p) for p in wanted),
                )
            )
    except errors.InsufficientPrivilege:
        notes.append(
            f"could not set the database search_path to {value}: run ALTER DATABASE "
            f"{conn.info.dbname} SET search_path TO {value} as its owner"
        )
        return None
    return value


def _extensions_schema(conn: Conn, schema: str, notes: list[str]) -> tuple[str, str | None]:
    """Create uuid-ossp (or its stand-in) and pgcrypto in `schema`; return what was used."""
    ident = sql.Identifier(schema)
    uuid_kind: str
    if _installed(conn, "uuid-ossp") is not None:
        uuid_kind = "uuid-ossp"
    elif _available(conn, "uuid-ossp") is not None:
        try:
            with conn.transaction():
                conn.execute(
                    sql.SQL('CREATE EXTENSION IF NOT EXISTS "uuid-ossp" SCHEMA {}').format(ident)
                )
            uuid_kind = "uuid-ossp"
        except errors.InsufficientPrivilege:
            uuid_kind = _stand_in(conn, schema, notes)
    else:
        uuid_kind = _stand_in(conn, schema, notes)
    pgcrypto: str | None = None
    if _installed(conn, "pgcrypto") is not None:
        pgcrypto = "pgcrypto"
    elif _available(conn, "pgcrypto") is not None:
        try:
            with conn.transaction():
                conn.execute(
                    sql.SQL("CREATE EXTENSION IF NOT EXISTS pgcrypto SCHEMA {}").format(ident)
                )
            pgcrypto = "pgcrypto"
        except psycopg.errors.InsufficientPrivilege:
            notes.append("pgcrypto could not be created (no privilege); gen_random_uuid() is core")
    else:
        notes.append(
            "pgcrypto is not available here; gen_random_uuid() is core since PostgreSQL 13"
        )
    return uuid_kind, pgcrypto


def _stand_in(conn: Conn, schema: str, notes: list[str]) -> str:
    if _function_exists(conn, schema, "uuid_generate_v4"):
        notes.append(
            f"uuid-ossp is not available: {schema}.uuid_generate_v4() is already there (the "
            "stand-in over gen_random_uuid(), or the source's own function)"
        )
        return "stand-in"
    conn.execute(UUID_STAND_IN.format(sql.Identifier(schema)))
    notes.append(
        f"uuid-ossp is not available: installed {schema}.uuid_generate_v4() as a SQL stand-in "
        "over gen_random_uuid() (random version-4 UUIDs, same as uuid-ossp's)"
    )
    return "stand-in"
