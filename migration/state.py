"""The import's progress, kept in the target (schema `qckstrt_migrate`).

Each row is written in the transaction that does the work it records (a table's COPY, a
sequence reset, a post-data statement), so the state can never claim more than was done. Only
settings go in the fingerprint, never credentials.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from migration.connection import Conn

SCHEMA = "qckstrt_migrate"
COMPLETE = "complete"


def _t(name: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(name))


@dataclass
class RunState:
    """What the target says about an earlier import."""

    fingerprint: dict[str, Any]
    status: str
    backup: str | None
    tables: dict[tuple[str, str], str] = field(default_factory=dict)
    rows: dict[tuple[str, str], int] = field(default_factory=dict)
    steps: set[str] = field(default_factory=set)

    @property
    def complete(self) -> bool:
        return self.status == COMPLETE


def exists(conn: Conn) -> bool:
    row = conn.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.run",)).fetchone()
    return row is not None and row[0] is not None


def read(conn: Conn) -> RunState | None:
    """Return the recorded run, or None when the target holds no import state."""
    if not exists(conn):
        return None
    row = conn.execute(
        sql.SQL("SELECT fingerprint, status, backup FROM {} WHERE id = 1").format(_t("run"))
    ).fetchone()
    if row is None:
        return None
    fp = row[0] if isinstance(row[0], dict) else json.loads(row[0])
    state = RunState(fingerprint=fp, status=str(row[1]), backup=row[2])
    for schema, table, status, rows in conn.execute(
        sql.SQL("SELECT schema_name, table_name, status, rows FROM {}").format(_t("tables"))
    ).fetchall():
        state.tables[(str(schema), str(table))] = str(status)
        state.rows[(str(schema), str(table))] = int(rows) if rows is not None else 0
    state.steps = {
        str(r[0])
        for r in conn.execute(sql.SQL("SELECT name FROM {}").format(_t("steps"))).fetchall()
    }
    return state


def create(
    conn: Conn, fingerprint: dict[str, Any], tables: list[tuple[str, str]], backup: str | None
) -> None:
    """Create the state schema and the run (inside the caller's pre-data transaction)."""
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (id int PRIMARY KEY CHECK (id = 1), fingerprint jsonb NOT NULL, "
            "status text NOT NULL, backup text, started_at timestamptz NOT NULL DEFAULT now(), "
            "finished_at timestamptz)"
        ).format(_t("run"))
    )
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (schema_name text, table_name text, status text NOT NULL, "
            "rows bigint, bytes bigint, seconds double precision, copied_at timestamptz, "
            "PRIMARY KEY (schema_name, table_name))"
        ).format(_t("tables"))
    )
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (name text PRIMARY KEY, done_at timestamptz NOT NULL DEFAULT now())"
        ).format(_t("steps"))
    )
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (id, fingerprint, status, backup) VALUES (1, %s, 'data', %s)"
        ).format(_t("run")),
        (Jsonb(fingerprint), backup),
    )
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL(
                "INSERT INTO {} (schema_name, table_name, status) VALUES (%s, %s, 'pending')"
            ).format(_t("tables")),
            tables,
        )


def table_done(conn: Conn, schema: str, table: str, rows: int, nbytes: int, seconds: float) -> None:
    conn.execute(
        sql.SQL(
            "UPDATE {} SET status = 'copied', rows = %s, bytes = %s, seconds = %s, "
            "copied_at = now() WHERE schema_name = %s AND table_name = %s"
        ).format(_t("tables")),
        (rows, nbytes, seconds, schema, table),
    )


def step_done(conn: Conn, name: str) -> None:
    conn.execute(
        sql.SQL("INSERT INTO {} (name) VALUES (%s) ON CONFLICT DO NOTHING").format(_t("steps")),
        (name,),
    )


def finish(conn: Conn) -> None:
    conn.execute(
        sql.SQL("UPDATE {} SET status = %s, finished_at = now() WHERE id = 1").format(_t("run")),
        (COMPLETE,),
    )


def drop(conn: Conn) -> None:
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Names of the settings that differ between two fingerprints."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
