"""Owners and grants of carried objects, which the import itself leaves out.

The import applies its schema with ``--no-owner --no-privileges`` (a target has none of the
source's roles), so everything it creates is the master's, with default privileges. Where the
roles exist on the target (the auth step creates Supabase's), this puts back what GoTrue and the
API roles rely on: the owner (GoTrue migrates as ``supabase_auth_admin``) and the source's
grants to roles the target has (``USAGE`` on schema `auth` for ``authenticated``: a policy
calling ``auth.uid()`` needs it).
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from psycopg import errors, sql

from migration.db.connection import Conn

_PRIVILEGES = frozenset(
    {
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "TRUNCATE",
        "REFERENCES",
        "TRIGGER",
        "USAGE",
        "CREATE",
        "EXECUTE",
        "MAINTAIN",
    }
)

# One row per (object, grantee, privilege) of the source's ACLs, without the owner's own.
_ACLS = """
SELECT k, s, o, a, CASE g WHEN 0 THEN 'PUBLIC' ELSE pg_get_userbyid(g) END, p, w FROM (
SELECT 'SCHEMA', n.nspname, NULL, NULL, a.grantee, a.privilege_type, a.is_grantable
FROM pg_namespace n, aclexplode(n.nspacl) a
WHERE n.nspname = ANY(%(s)s) AND a.grantee <> n.nspowner
UNION ALL
SELECT CASE WHEN c.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, n.nspname, c.relname, NULL,
       a.grantee, a.privilege_type, a.is_grantable
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
WHERE n.nspname = ANY(%(s)s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
  AND a.grantee <> c.relowner
UNION ALL
SELECT CASE WHEN p.prokind = 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, n.nspname, p.proname,
       pg_get_function_identity_arguments(p.oid), a.grantee, a.privilege_type, a.is_grantable
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace, aclexplode(p.proacl) a
WHERE n.nspname = ANY(%(s)s) AND a.grantee <> p.proowner
) x(k, s, o, a, g, p, w) ORDER BY 1, 2, 3, 5, 6
"""


@dataclass(frozen=True)
class Grant:
    """One privilege on one object, as the source grants it."""

    kind: str
    schema: str
    name: str | None
    args: str | None
    grantee: str
    privilege: str
    grantable: bool

    @property
    def label(self) -> str:
        obj = self.schema if self.name is None else f"{self.schema}.{self.name}"
        return f"{self.privilege} on {self.kind.lower()} {obj} to {self.grantee}"

    def statement(self) -> sql.Composed:
        target: sql.Composable
        if self.name is None:
            target = sql.Identifier(self.schema)
        else:
            target = sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(self.name))
        if self.args is not None:
            # identity arguments as the source's catalog prints them (types only, quoted there)
            target = sql.SQL("{}({})").format(target, sql.SQL(self.args))
        grantee = sql.SQL("PUBLIC") if self.grantee == "PUBLIC" else sql.Identifier(self.grantee)
        return sql.SQL("GRANT {} ON {} {} TO {}{}").format(
            sql.SQL(self.privilege),
            sql.SQL(self.kind),
            target,
            grantee,
            sql.SQL(" WITH GRANT OPTION" if self.grantable else ""),
        )


def source_grants(conn: Conn, schemas: list[str]) -> list[Grant]:
    """The source's grants on `schemas` and the tables, sequences and functions in them."""
    rows = conn.execute(_ACLS, {"s": schemas}).fetchall()
    return [
        Grant(str(k), str(s), o, a, str(g), str(p), bool(w))
        for k, s, o, a, g, p, w in rows
        if str(p) in _PRIVILEGES
    ]


def existing_roles(conn: Conn, names: AbstractSet[str]) -> set[str]:
    """Which of `names` exist as roles on the server of `conn`."""
    rows = conn.execute(
        "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (sorted(names),)
    ).fetchall()
    return {str(r[0]) for r in rows}


#: What GRANT raises when its object is not on the target.
_NO_OBJECT = (errors.UndefinedFunction, errors.UndefinedTable, errors.InvalidSchemaName)


def apply_grants(
    target: Conn,
    grants: list[Grant],
    grantees: AbstractSet[str] | None = None,
    skipped: list[str] | None = None,
) -> tuple[int, list[str]]:
    """Grant on the target what the source grants, to roles the target has.

    :param grantees: only these grantees (None: any role that exists on the target, and PUBLIC).
    :param skipped: given, a grant whose object is not on the target is left out (its label
        appended here) instead of failing: the application's grants include those on objects
        the import leaves out (Supabase's vault helpers get the API roles' default privileges).
        Must be called inside a transaction (each such grant runs in a savepoint).
    :returns: (grants applied, labels of the grants left out because their role is missing).
    """
    wanted = [g for g in grants if grantees is None or g.grantee in grantees]
    present = existing_roles(target, {g.grantee for g in wanted}) | {"PUBLIC"}
    applied = 0
    for g in wanted:
        if g.grantee not in present:
            continue
        if skipped is None:
            target.execute(g.statement())
        elif not _grant_if_present(target, g):
            skipped.append(g.label)
            continue
        applied += 1
    missing = sorted({g.grantee for g in wanted if g.grantee not in present})
    return applied, missing


def _grant_if_present(target: Conn, grant: Grant) -> bool:
    """Run `grant` in a savepoint; False (nothing changed) when its object does not exist."""
    try:
        with target.transaction():
            target.execute(grant.statement())
    except _NO_OBJECT:
        return False
    return True


_NOT_OWNED = (
    "SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' "
    "WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, c.relname, NULL FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %(s)s "
    "AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND c.relowner <> to_regrole(%(o)s) "
    "ORDER BY 2",
    "SELECT 'SEQUENCE', c.relname, NULL FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %(s)s "
    "AND c.relkind = 'S' AND c.relowner <> to_regrole(%(o)s) ORDER BY 2",
    "SELECT CASE WHEN p.prokind = 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, p.proname, "
    "pg_get_function_identity_arguments(p.oid) FROM pg_proc p "
    "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %(s)s "
    "AND p.proowner <> to_regrole(%(o)s) ORDER BY 2, 3",
    "SELECT CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, t.typname, NULL "
    "FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
    "WHERE n.nspname = %(s)s AND t.typtype IN ('e', 'd', 'r', 'c') "
    "AND (t.typrelid = 0 OR (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c') "
    "AND t.typowner <> to_regrole(%(o)s) ORDER BY 2",
)


def hand_over(conn: Conn, schema: str, owner: str) -> int:
    """Make `owner` the owner of every table, sequence, function and type in `schema`.

    Tables first: ``ALTER TABLE ... OWNER`` carries their indexes and owned sequences along, so
    each kind is read only after the kinds before it have changed.

    :returns: how many objects changed owner (0 when they all were `owner`'s already).
    """
    changed = 0
    for query in _NOT_OWNED:
        for kind, name, args in conn.execute(query, {"s": schema, "o": owner}).fetchall():
            target = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(str(name)))
            if args is not None:
                target = sql.SQL("{}({})").format(target, sql.SQL(str(args)))
            conn.execute(
                sql.SQL("ALTER {} {} OWNER TO {}").format(
                    sql.SQL(str(kind)), target, sql.Identifier(owner)
                )
            )
            changed += 1
    return changed
