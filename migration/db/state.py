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

from migration.db.connection import Conn

SCHEMA = "qckstrt_migrate"
COMPLETE = "complete"


def _t(name: str, schema: str = SCHEMA) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


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


def exists(conn: Conn, schema: str = SCHEMA) -> bool:
    row = conn.execute("SELECT to_regclass(format('%%I.run', %s::text))", (schema,)).fetchone()
    return row is not None and row[0] is not None


def read(conn: Conn, schema: str = SCHEMA) -> RunState | None:
    """Return the recorded run, or None when the target holds no import state.

    :param schema: where the state lives (each import of its own schemas has its own).
    """
    if not exists(conn, schema):
        return None
    row = conn.execute(
        sql.SQL("SELECT fingerprint, status, backup FROM {} WHERE id = 1").format(_t("run", schema))
    ).fetchone()
    if row is None:
        return None
    fp = row[0] if isinstance(row[0], dict) else json.loads(row[0])
    state = RunState(fingerprint=fp, status=str(row[1]), backup=row[2])
    for tschema, table, status, rows in conn.execute(
        sql.SQL("SELECT schema_name, table_name, status, rows FROM {}").format(_t("tables", schema))
    ).fetchall():
        state.tables[(str(tschema), str(table))] = str(status)
        state.rows[(str(tschema), str(table))] = int(rows) if rows is not None else 0
    state.steps = {
        str(r[0])
        for r in conn.execute(sql.SQL("SELECT name FROM {}").format(_t("steps", schema))).fetchall()
    }
    return state


def create(
    conn: Conn,
    fingerprint: dict[str, Any],
    tables: list[tuple[str, str]],
    backup: str | None,
    schema: str = SCHEMA,
) -> None:
    """Create the state schema and the run (inside the caller's pre-data transaction)."""
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (id int PRIMARY KEY CHECK (id = 1), fingerprint jsonb NOT NULL, "
            "status text NOT NULL, backup text, started_at timestamptz NOT NULL DEFAULT now(), "
            "finished_at timestamptz)"
        ).format(_t("run", schema))
    )
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (schema_name text, table_name text, status text NOT NULL, "
            "rows bigint, bytes bigint, seconds double precision, copied_at timestamptz, "
            "PRIMARY KEY (schema_name, table_name))"
        ).format(_t("tables", schema))
    )
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (name text PRIMARY KEY, done_at timestamptz NOT NULL DEFAULT now())"
        ).format(_t("steps", schema))
    )
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (id, fingerprint, status, backup) VALUES (1, %s, 'data', %s)"
        ).format(_t("run", schema)),
        (Jsonb(fingerprint), backup),
    )
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL(
                "INSERT INTO {} (schema_name, table_name, status) VALUES (%s, %s, 'pending')"
            ).format(_t("tables", schema)),
            tables,
        )


def table_done(
    conn: Conn,
    schema: str,
    table: str,
    rows: int,
    nbytes: int,
    seconds: float,
    state_schema: str = SCHEMA,
) -> None:
    conn.execute(
        sql.SQL(
            "UPDATE {} SET status = 'copied', rows = %s, bytes = %s, seconds = %s, "
            "copied_at = now() WHERE schema_name = %s AND table_name = %s"
        ).format(_t("tables", state_schema)),
        (rows, nbytes, seconds, schema, table),
    )


def step_done(conn: Conn, name: str, schema: str = SCHEMA) -> None:
    conn.execute(
        sql.SQL("INSERT INTO {} (name) VALUES (%s) ON CONFLICT DO NOTHING").format(
            _t("steps", schema)
        ),
        (name,),
    )


def finish(conn: Conn, schema: str = SCHEMA) -> None:
    conn.execute(
        sql.SQL("UPDATE {} SET status = %s, finished_at = now() WHERE id = 1").format(
            _t("run", schema)
        ),
        (COMPLETE,),
    )


def drop(conn: Conn, schema: str = SCHEMA) -> None:
    conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Names of the settings that differ between two fingerprints."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
