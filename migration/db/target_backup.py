"""Keeping the target's own tables before a replace (import or restore) drops them.

The target may be SSL-only and the embedded client binaries have no SSL, so the data goes out by
binary COPY through psycopg (``target/<schema>.<table>.copy``) and each table's column
definitions from the catalog go in ``target/tables.json``: readable with any PostgreSQL.
"""

from __future__ import annotations

import json
from typing import Any

from psycopg import sql

from migration.backends.backup import BackupLocation, Sink
from migration.db.connection import Conn


def backup_target_tables(conn: Conn, tables: list[str], where: BackupLocation) -> str:
    """Write `tables` (``schema.table`` labels) of the target under `where`; return the folder.

    :raises BackupFailed: a sink could not be written (nothing on the target was touched).
    """
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
