"""The pgvector settings the app's sessions inherit, set on the database.

The app's vector query runs with default session settings and cannot be changed, so the only
way to reach it is a database-level (or role-level) default: ``ALTER DATABASE <db> SET
hnsw.ef_search = ...``, which every new session of that database inherits. With pgvector's
defaults (``ef_search`` 40, no iterative scan) an HNSW scan yields 40 candidates before the
app's ``WHERE user_id = ...`` filter, so a user who owns a small share of the table gets fewer
than k rows; `bench/retrieval.py` measures what fixes it (docs/benchmarks.md).

Applied idempotently: only settings that differ are changed, and a setting equal to pgvector's
default is removed (``RESET``) rather than set. Three facts of PostgreSQL shape the code:

- ``ALTER DATABASE ... SET`` needs the database's owner (on RDS, the master user owns the
  database it created; it is not a superuser).
- a non-superuser may set (or reset) ``hnsw.*`` only while pgvector's library is loaded in the
  session: before that they are placeholders, which only a superuser may set, and ``RESET ALL``
  silently skips them. The session loads it by using the type first.
- the settings reach sessions opened afterwards, not the app's open pooled connections.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from psycopg import errors, sql

from migration.db.connection import Conn
from migration.errors import PreflightError
from migration.options import get, option, validate

ITERATIVE_SCAN_MODES = get("iterative_scan").choices
#: pgvector 0.8's defaults: a setting equal to its default is removed from the database.
PGVECTOR_DEFAULTS = {
    "hnsw.ef_search": "40",
    "hnsw.iterative_scan": "off",
    "hnsw.max_scan_tuples": "20000",
}


@dataclass(frozen=True)
class SearchSettings:
    """What the app's sessions should get; defaults and bounds from ``migration.options``.

    :param ef_search: candidates an HNSW scan keeps (pgvector 1..1000, default 40).
    :param iterative_scan: ``off``, ``relaxed_order`` or ``strict_order``: whether a scan
        continues past ``ef_search`` candidates when filtering left fewer than the LIMIT.
    :param max_scan_tuples: the most tuples an iterative scan visits (default 20000).
    """

    ef_search: int = option("ef_search")
    iterative_scan: str = option("iterative_scan")
    max_scan_tuples: int = option("max_scan_tuples")

    def __post_init__(self) -> None:
        validate(self)

    def wanted(self) -> dict[str, str | None]:
        """Setting -> value to set, or None to remove (equal to pgvector's default)."""
        values = {
            "hnsw.ef_search": str(self.ef_search),
            "hnsw.iterative_scan": self.iterative_scan,
            "hnsw.max_scan_tuples": str(self.max_scan_tuples),
        }
        return {k: (None if v == PGVECTOR_DEFAULTS[k] else v) for k, v in values.items()}


@dataclass
class SearchSettingsReport:
    """The database's pgvector settings after the step, and what the step changed."""

    database: str
    settings: dict[str, str] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)


def database_settings(conn: Conn) -> dict[str, str]:
    """The current database's own settings (``ALTER DATABASE ... SET``), every role."""
    row = conn.execute(
        "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d "
        "ON d.oid = s.setdatabase WHERE d.datname = current_database() AND s.setrole = 0"
    ).fetchone()
    pairs = [str(item).split("=", 1) for item in (row[0] if row and row[0] else [])]
    return {p[0]: p[1] for p in pairs if len(p) == 2}


def _changes(conn: Conn, s: SearchSettings) -> dict[str, str | None]:
    current = database_settings(conn)
    return {k: v for k, v in s.wanted().items() if current.get(k) != v}


def check_can_apply(conn: Conn, s: SearchSettings) -> None:
    """Refuse early, before any data is written, when settings must change and cannot.

    :raises PreflightError: the connected role does not own the database.
    """
    if not _changes(conn, s):
        return
    row = conn.execute(
        "SELECT datname, pg_has_role(current_user, datdba, 'USAGE') FROM pg_database "
        "WHERE datname = current_database()"
    ).fetchone()
    if row is not None and not row[1]:
        raise PreflightError(
            f"the re-index sets pgvector's search settings on database {row[0]} (ALTER DATABASE "
            f"... SET hnsw.ef_search), which only its owner may do: connect as the owner (on "
            f"RDS the master user), or keep pgvector's defaults (`ef_search` 40, "
            f"`iterative_scan` off, `max_scan_tuples` 20000) to leave the database alone"
        )


def apply_search_settings(
    conn: Conn, s: SearchSettings, vector_schema: str
) -> SearchSettingsReport:
    """Set, change or remove the database's pgvector settings so they match `s`.

    :param conn: an autocommit session of the database's owner.
    :param vector_schema: where the `vector` type lives (used to load pgvector's library).
    :raises PreflightError: the role may not alter the database.
    """
    database = str((conn.execute("SELECT current_database()").fetchone() or [""])[0])
    changes = _changes(conn, s)
    report = SearchSettingsReport(database)
    if changes:
        check_can_apply(conn, s)
        # Loads pgvector's library, so that hnsw.* are real settings in this session.
        conn.execute(sql.SQL("SELECT '[1]'::{}.vector").format(sql.Identifier(vector_schema)))
    for name, value in changes.items():
        prefix, _, suffix = name.partition(".")
        setting = sql.SQL("{}.{}").format(sql.Identifier(prefix), sql.Identifier(suffix))
        db = sql.Identifier(database)
        try:
            if value is None:
                conn.execute(sql.SQL("ALTER DATABASE {} RESET {}").format(db, setting))
                report.changed.append(f"reset {name}")
            else:
                conn.execute(
                    sql.SQL("ALTER DATABASE {} SET {} = {}").format(db, setting, sql.Literal(value))
                )
                report.changed.append(f"set {name} = {value}")
        except errors.InsufficientPrivilege as exc:
            raise PreflightError(
                f"cannot change {name} on database {database}: {exc.diag.message_primary}; "
                "connect as the database's owner"
            ) from None
    report.settings = {
        k: v for k, v in sorted(database_settings(conn).items()) if k in PGVECTOR_DEFAULTS
    }
    return report
