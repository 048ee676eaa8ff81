"""What a replacing restore must keep that the backup does not hold.

The import's backup leaves out what needs schema `auth` or Supabase's roles (policies calling
``auth.uid()``, row-level security, the foreign key into ``auth.users``, grants to the API
roles); the auth step puts those back on the target afterwards. Restoring the backup over such a
target drops the tables and creates them as the backup has them: without this, the restore
either stops (a policy on one table that reads another blocks ``DROP TABLE``) or, once the user
drops the policies, leaves the application's tables without their row-level security. So the
target's own policies, row-level security flags, foreign keys and grants on the replaced tables,
and the functions whose signature uses their row type, are read first, the policies and those
functions dropped (the policies go with their tables anyway), and whatever the restored tables
lack is put back, in the restore's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from migration.db.connection import Conn

_POLICIES = (
    "SELECT p.schemaname, p.tablename, p.policyname, p.permissive, p.roles, p.cmd, p.qual, "
    "p.with_check FROM pg_policies p WHERE format('%%I.%%I', p.schemaname, p.tablename) "
    "= ANY(%s) ORDER BY 1, 2, 3"
)
_RLS = (
    "SELECT n.nspname, c.relname, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE format('%%I.%%I', n.nspname, c.relname) = ANY(%s)"
)
_FKS = (
    "SELECT n.nspname, c.relname, k.conname, pg_get_constraintdef(k.oid) FROM pg_constraint k "
    "JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE k.contype = 'f' AND format('%%I.%%I', n.nspname, c.relname) = ANY(%s) ORDER BY 3"
)
_GRANTS = (
    "SELECT n.nspname, c.relname, CASE a.grantee WHEN 0 THEN 'PUBLIC' "
    "ELSE pg_get_userbyid(a.grantee) END, a.privilege_type FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a "
    "WHERE format('%%I.%%I', n.nspname, c.relname) = ANY(%s) AND a.grantee <> c.relowner"
)

# Functions whose signature uses a replaced table's row type (they block its DROP), with the
# statement that makes them and their grants.
_FUNCTIONS = (
    "SELECT DISTINCT p.oid::regprocedure::text, pg_get_functiondef(p.oid), p.proacl::text[] "
    "FROM pg_depend d JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid "
    "JOIN pg_class c ON (d.refclassid = 'pg_class'::regclass AND d.refobjid = c.oid) "
    "OR (d.refclassid = 'pg_type'::regclass AND d.refobjid = c.reltype) "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE format('%%I.%%I', n.nspname, c.relname) = ANY(%s) ORDER BY 1"
)
_FUNCTION_GRANTS = (
    "SELECT CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END "
    "FROM pg_proc p, aclexplode(p.proacl) a WHERE p.oid = %s::regprocedure "
    "AND a.grantee <> p.proowner AND a.privilege_type = 'EXECUTE'"
)


@dataclass
class TargetExtras:
    """The target's policies, RLS flags, foreign keys and grants on the replaced tables."""

    names: list[str] = field(default_factory=list)
    policies: list[tuple[Any, ...]] = field(default_factory=list)
    rls: list[tuple[str, str, bool, bool]] = field(default_factory=list)
    fks: list[tuple[str, str, str, str]] = field(default_factory=list)
    grants: list[tuple[str, str, str, str]] = field(default_factory=list)
    functions: list[tuple[str, str, list[str]]] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)


def _identifiers(tables: list[str], conn: Conn) -> list[str]:
    """``schema.table`` labels as ``format('%I.%I')`` writes them (quoted where needed)."""
    out = []
    for label in tables:
        schema, name = label.split(".", 1)
        row = conn.execute(
            "SELECT format('%%I.%%I', %s::text, %s::text)", (schema, name)
        ).fetchone()
        assert row is not None
        out.append(str(row[0]))
    return out


def read_extras(conn: Conn, tables: list[str]) -> TargetExtras:
    """Read what the target has on `tables` (``schema.table`` each) before they are replaced."""
    names = _identifiers(tables, conn)
    row = conn.execute("SELECT current_setting('search_path')").fetchone()
    assert row is not None
    # An empty search_path makes the server print every name in the expressions qualified, so
    # they mean the same under the restore's own (empty) search_path.
    conn.execute("SELECT set_config('search_path', '', false)")
    try:
        return TargetExtras(
            names=names,
            policies=[tuple(r) for r in conn.execute(_POLICIES, (names,)).fetchall()],
            rls=[(str(a), str(b), bool(c), bool(d)) for a, b, c, d in conn.execute(_RLS, (names,))],
            fks=[(str(a), str(b), str(c), str(d)) for a, b, c, d in conn.execute(_FKS, (names,))],
            grants=[
                (str(a), str(b), str(c), str(d)) for a, b, c, d in conn.execute(_GRANTS, (names,))
            ],
            functions=[
                (str(f), str(body), _function_grantees(conn, str(f)))
                for f, body, _ in conn.execute(_FUNCTIONS, (names,)).fetchall()
            ],
        )
    finally:
        conn.execute("SELECT set_config('search_path', %s, false)", (str(row[0]),))


def _function_grantees(conn: Conn, function: str) -> list[str]:
    return [str(r[0]) for r in conn.execute(_FUNCTION_GRANTS, (function,)).fetchall()]


def _table(schema: str, name: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


def drop_policies(conn: Conn, extras: TargetExtras) -> None:
    """Drop the policies (their tables are dropped next): a policy reading another replaced
    table would otherwise block that table's ``DROP``."""
    for schema, table, name, *_ in extras.policies:
        conn.execute(
            sql.SQL("DROP POLICY {} ON {}").format(sql.Identifier(name), _table(schema, table))
        )
    for function, _, _ in extras.functions:  # regprocedure text, as the server printed it
        conn.execute(sql.SQL("DROP FUNCTION {}").format(sql.SQL(function)))


def put_back(conn: Conn, extras: TargetExtras) -> list[str]:
    """Create what the restored tables lack of `extras`; return labels of what was put back."""
    done: list[str] = []
    for function, body, grantees in extras.functions:
        row = conn.execute("SELECT to_regprocedure(%s)", (function,)).fetchone()
        if row is not None and row[0] is not None:
            continue  # the backup made it again
        conn.execute(sql.SQL(body))  # pg_get_functiondef's own text
        for name in grantees:
            to = sql.SQL("PUBLIC") if name == "PUBLIC" else sql.Identifier(name)
            conn.execute(
                sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(sql.SQL(function), to)
            )
        done.append(f"function {function}")
    have = {tuple(r) for r in conn.execute(_POLICIES, (extras.names,)).fetchall()}
    have_names = {(r[0], r[1], r[2]) for r in have}
    for schema, table, name, permissive, roles, cmd, qual, check in extras.policies:
        if (schema, table, name) in have_names:
            continue
        conn.execute(_create_policy(schema, table, name, permissive, roles, cmd, qual, check))
        done.append(f"policy {schema}.{table} {name}")
    for schema, table, rls, force in extras.rls:
        for on, verb in ((rls, "ENABLE"), (force, "FORCE")):
            if on:
                conn.execute(
                    sql.SQL("ALTER TABLE {} " + verb + " ROW LEVEL SECURITY").format(
                        _table(schema, table)
                    )
                )
    fks = {(s, t, n) for s, t, n, _ in conn.execute(_FKS, (extras.names,))}
    for schema, table, name, definition in extras.fks:
        if (schema, table, name) not in fks:
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                    _table(schema, table), sql.Identifier(name), sql.SQL(definition)
                )
            )
            done.append(f"constraint {schema}.{table} {name}")
    for schema, table, grantee, privilege in extras.grants:
        who = sql.SQL("PUBLIC") if grantee == "PUBLIC" else sql.Identifier(grantee)
        conn.execute(
            sql.SQL("GRANT {} ON TABLE {} TO {}").format(
                sql.SQL(privilege), _table(schema, table), who
            )
        )
    if extras.grants:
        done.append(f"{len(extras.grants)} grants")
    extras.restored = done
    return done


def _create_policy(
    schema: str,
    table: str,
    name: str,
    permissive: str,
    roles: object,
    cmd: str,
    qual: str | None,
    check: str | None,
) -> sql.Composed:
    """CREATE POLICY as the catalog describes it (expressions as the server printed them)."""
    to = sql.SQL(", ").join(
        sql.SQL("PUBLIC") if r == "public" else sql.Identifier(str(r))
        for r in (roles if isinstance(roles, list) else [roles])
    )
    query = sql.SQL("CREATE POLICY {} ON {} AS {} FOR {} TO {}").format(
        sql.Identifier(name), _table(schema, table), sql.SQL(permissive), sql.SQL(cmd), to
    )
    if qual is not None:
        query += sql.SQL(" USING ({})").format(sql.SQL(qual))
    if check is not None:
        query += sql.SQL(" WITH CHECK ({})").format(sql.SQL(check))
    return query
