"""After `verify`: GoTrue's users and identities, source against target, when auth was carried.

Its own module beside `migration.steps.verify` (which checks the application schemas): the auth step
carries schema `auth` into the target, and sign-ins depend on exactly these rows, so the check
compares their count and an order-independent checksum (the sum of the first 64 bits of each
row's md5, as `verify` computes it, with both sessions on the same output settings).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from psycopg import sql

from migration.db import state
from migration.db.connection import Conn, Endpoint
from migration.errors import VerificationFailed
from migration.progress import NullReporter, Reporter
from migration.steps.auth import AUTH

#: The tables a sign-in reads; GoTrue writes sessions and tokens after cut-over, not these.
TABLES = ("users", "identities")

_SESSION = (
    "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; "
    "SET extra_float_digits = 1; SET bytea_output = 'hex'"
)


@dataclass(frozen=True)
class AuthTableCheck:
    """One auth table on both sides."""

    table: str
    source_rows: int
    target_rows: int
    source_checksum: str
    target_checksum: str

    @property
    def ok(self) -> bool:
        return (self.source_rows, self.source_checksum) == (self.target_rows, self.target_checksum)


@dataclass
class AuthCheckReport:
    """Users and identities compared; `ok` when nothing differs (a field, so `asdict` keeps it)."""

    tables: list[AuthTableCheck] = field(default_factory=list)
    ok: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _summary(conn: Conn, table: str) -> tuple[int, str]:
    row = conn.execute(
        sql.SQL(
            "SELECT count(*), coalesce(sum(('x' || left(md5(t::text), 16))::bit(64)::bigint"
            "::numeric), 0)::text FROM {}.{} t"
        ).format(sql.Identifier(AUTH.name), sql.Identifier(table))
    ).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def auth_carried(target: Endpoint) -> bool:
    """Whether the auth step has run on `target` (its state schema is there)."""
    with target.connect() as conn:
        return state.read(conn, AUTH.state_schema) is not None


def check_auth(
    source: Endpoint, target: Endpoint, reporter: Reporter | None = None
) -> AuthCheckReport:
    """Compare ``auth.users`` and ``auth.identities`` on source and target.

    :raises VerificationFailed: a count or checksum differs (the report is attached).
    """
    rep = reporter or NullReporter()
    report = AuthCheckReport()
    with source.connect() as sconn, target.connect() as tconn:
        for conn in (sconn, tconn):
            conn.execute(_SESSION)
        for table in TABLES:
            s_rows, s_sum = _summary(sconn, table)
            t_rows, t_sum = _summary(tconn, table)
            check = AuthTableCheck(f"auth.{table}", s_rows, t_rows, s_sum, t_sum)
            report.tables.append(check)
            rep.info(
                f"auth.{table}: {s_rows:,} rows on the source, {t_rows:,} on the target"
                + ("" if check.ok else ", contents differ")
            )
    report.ok = all(t.ok for t in report.tables)
    if not report.ok:
        differ = ", ".join(t.table for t in report.tables if not t.ok)
        raise VerificationFailed(
            f"{differ} differ between source and target: re-run the auth step (it resumes), "
            "or find the changed rows by id on both sides",
            report,
        )
    return report
