"""Which objects of a Supabase dump stay behind, and why (decided from the source's catalog).

Decisions are made by object identity (the catalog OID that `pg_restore -l` prints for each TOC
entry), not by regexes over SQL text: a policy is left out because its expression, read with
``pg_get_expr``, calls into schema `auth`; a foreign key because the table it references lives
in a schema that is not imported; and so on. Entries that hang off a left-out entry (its comment,
its grants, a trigger calling a left-out function) follow it.
"""

from __future__ import annotations

import re
from collections.abc import Set as AbstractSet
from dataclasses import asdict, dataclass

from migration.db.connection import Conn

# Schemas Supabase runs its services from; nothing in them exists on RDS.
SUPABASE_SCHEMAS = frozenset(
    {
        "auth",
        "storage",
        "vault",
        "realtime",
        "_realtime",
        "graphql",
        "graphql_public",
        "pgsodium",
        "pgsodium_masks",
        "supabase_functions",
        "supabase_migrations",
        "net",
        "cron",
        "pgbouncer",
        "_analytics",
    }
)
SUPABASE_ROLES = frozenset(
    {
        "supabase_admin",
        "supabase_auth_admin",
        "supabase_storage_admin",
        "supabase_realtime_admin",
        "supabase_replication_admin",
        "supabase_read_only_user",
        "anon",
        "authenticated",
        "service_role",
        "authenticator",
        "dashboard_user",
        "pgbouncer",
        "pgsodium_keyholder",
        "pgsodium_keyiduser",
        "pgsodium_keymaker",
    }
)
VAULT_HELPERS = frozenset({"vault_read_secret", "vault_list_secrets"})

_REF = re.compile(
    r"(?<![\w$])\"?(" + "|".join(sorted(SUPABASE_SCHEMAS)) + r")\"?\s*\.", re.IGNORECASE
)


@dataclass(frozen=True)
class LeftOut:
    """One object the import does not bring over."""

    kind: str
    name: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def supabase_reference(text: str | None, allowed: AbstractSet[str] = frozenset()) -> str | None:
    """Return the first Supabase schema that `text` (SQL) refers to, other than `allowed`."""
    if not text:
        return None
    for match in _REF.finditer(text):
        schema = match.group(1).lower()
        if schema not in allowed:
            return schema
    return None


@dataclass(frozen=True)
class Scope:
    """What the target will have, which decides what may stay.

    :param schemas: the schemas being imported.
    :param carried: Supabase schemas that exist on the target (imported now or carried by the
        auth step): references to them are kept.
    :param roles: Supabase roles that exist on the target: policies granted to them are kept.
    """

    schemas: list[str]
    carried: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()

    @property
    def allowed(self) -> frozenset[str]:
        return frozenset(self.schemas) | self.carried


Decisions = dict[tuple[str, int], LeftOut]


def classify(
    conn: Conn,
    schemas: list[str],
    carried: AbstractSet[str] = frozenset(),
    roles: AbstractSet[str] = frozenset(),
) -> Decisions:
    """Decide, by catalog OID, which objects of the application `schemas` stay behind.

    References to a schema being imported are never a reason: importing `auth` keeps its own
    foreign keys, defaults and functions.

    :param conn: a source connection (inside the import's snapshot).
    :param schemas: the application schemas being imported.
    :param carried: Supabase schemas present on the target besides `schemas` (see `Scope`).
    :param roles: Supabase roles present on the target (see `Scope`).
    :returns: (kind, OID) -> why it is left out (functions, policies, constraints, triggers,
        defaults, views, and tables whose row-level security served only left-out policies).
        The kind is part of the key because a table and its ROW SECURITY entry share an OID.
    """
    scope = Scope(list(schemas), frozenset(carried), frozenset(roles))
    out: Decisions = {}
    for rule in (_functions, _policies, _constraints, _triggers, _defaults, _views, _row_security):
        out.update(rule(conn, scope, out))
    return out


def _functions(conn: Conn, scope: Scope, _: Decisions) -> Decisions:
    out: Decisions = {}
    for oid, schema, name, args, src in conn.execute(
        "SELECT p.oid, n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), p.prosrc "
        "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = ANY(%s) AND NOT EXISTS (SELECT 1 FROM pg_depend d "
        "WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')",
        (scope.schemas,),
    ).fetchall():
        label = f"{schema}.{name}({args})"
        if name in VAULT_HELPERS and "vault" not in scope.allowed:
            out[("function", int(oid))] = LeftOut(
                "function", label, "Supabase vault helper (no vault on RDS)"
            )
        elif ref := supabase_reference(str(src), scope.allowed):
            out[("function", int(oid))] = LeftOut("function", label, f"references schema {ref}")
    return out


def _policies(conn: Conn, scope: Scope, _: Decisions) -> Decisions:
    out: Decisions = {}
    for oid, table, name, qual, check, roles in conn.execute(
        "SELECT pol.oid, c.relname, pol.polname, pg_get_expr(pol.polqual, pol.polrelid), "
        "pg_get_expr(pol.polwithcheck, pol.polrelid), "
        "ARRAY(SELECT rolname FROM pg_roles WHERE oid = ANY(pol.polroles))::text[] "
        "FROM pg_policy pol JOIN pg_class c ON c.oid = pol.polrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY(%s)",
        (scope.schemas,),
    ).fetchall():
        ref = supabase_reference(qual, scope.allowed) or supabase_reference(check, scope.allowed)
        missing = sorted(set(roles or []) & (SUPABASE_ROLES - scope.roles))
        if ref:
            out[("policy", int(oid))] = LeftOut(
                "policy", f"{table}.{name}", f"references schema {ref}"
            )
        elif missing:
            out[("policy", int(oid))] = LeftOut(
                "policy", f"{table}.{name}", f"granted to Supabase roles {', '.join(missing)}"
            )
    return out


def _constraints(conn: Conn, scope: Scope, _: Decisions) -> Decisions:
    out: Decisions = {}
    for oid, table, name, ref_schema, ref_table, definition in conn.execute(
        "SELECT con.oid, c.relname, con.conname, rn.nspname, r.relname, "
        "pg_get_constraintdef(con.oid) FROM pg_constraint con "
        "JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_class r ON r.oid = con.confrelid "
        "LEFT JOIN pg_namespace rn ON rn.oid = r.relnamespace "
        "WHERE n.nspname = ANY(%s) AND con.contype IN ('f', 'c')",
        (scope.schemas,),
    ).fetchall():
        if ref_schema is not None and ref_schema not in scope.allowed:
            out[("constraint", int(oid))] = LeftOut(
                "constraint",
                f"{table}.{name}",
                f"references {ref_schema}.{ref_table}, which is not imported",
            )
        elif ref := supabase_reference(str(definition), scope.allowed):
            out[("constraint", int(oid))] = LeftOut(
                "constraint", f"{table}.{name}", f"references schema {ref}"
            )
    return out


def _triggers(conn: Conn, scope: Scope, decided: Decisions) -> Decisions:
    out: Decisions = {}
    for oid, table, name, fn_oid, fn_schema in conn.execute(
        "SELECT t.oid, c.relname, t.tgname, p.oid, pn.nspname FROM pg_trigger t "
        "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace pn ON pn.oid = p.pronamespace "
        "WHERE n.nspname = ANY(%s) AND NOT t.tgisinternal",
        (scope.schemas,),
    ).fetchall():
        if ("function", int(fn_oid)) in decided or (
            fn_schema in SUPABASE_SCHEMAS and fn_schema not in scope.allowed
        ):
            out[("trigger", int(oid))] = LeftOut(
                "trigger", f"{table}.{name}", "calls a function that is not imported"
            )
    return out


def _defaults(conn: Conn, scope: Scope, _: Decisions) -> Decisions:
    out: Decisions = {}
    for oid, table, column, expr in conn.execute(
        "SELECT d.oid, c.relname, a.attname, pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d "
        "JOIN pg_class c ON c.oid = d.adrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum "
        "WHERE n.nspname = ANY(%s)",
        (scope.schemas,),
    ).fetchall():
        if ref := supabase_reference(str(expr), scope.allowed):
            out[("default", int(oid))] = LeftOut(
                "default", f"{table}.{column}", f"references schema {ref}"
            )
    return out


def _views(conn: Conn, scope: Scope, _: Decisions) -> Decisions:
    out: Decisions = {}
    for oid, name, definition in conn.execute(
        "SELECT c.oid, c.relname, pg_get_viewdef(c.oid) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = ANY(%s) AND c.relkind IN ('v', 'm')",
        (scope.schemas,),
    ).fetchall():
        if ref := supabase_reference(str(definition), scope.allowed):
            out[("view", int(oid))] = LeftOut("view", str(name), f"references schema {ref}")
    return out


def _row_security(conn: Conn, scope: Scope, decided: Decisions) -> Decisions:
    """Row-level security that only served left-out policies would deny every non-owner.

    A table with row-level security and no policy at all (GoTrue's 16 tables) keeps it: that
    deny-all is what its owner meant.
    """
    out: Decisions = {}
    for oid, table, policies in conn.execute(
        "SELECT c.oid, c.relname, ARRAY(SELECT p.oid FROM pg_policy p WHERE p.polrelid = c.oid) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = ANY(%s) AND c.relrowsecurity",
        (scope.schemas,),
    ).fetchall():
        if policies and all(("policy", int(p)) in decided for p in policies):
            out[("row security", int(oid))] = LeftOut(
                "row security",
                str(table),
                "enabled only for Supabase's auth policies, which are left out",
            )
    return out


def publications(conn: Conn, schemas: list[str]) -> list[LeftOut]:
    """Publications covering application tables (Supabase realtime); never imported."""
    rows = conn.execute(
        "SELECT DISTINCT pubname FROM pg_publication_tables WHERE schemaname = ANY(%s) ORDER BY 1",
        (schemas,),
    ).fetchall()
    return [
        LeftOut("publication", str(r[0]), "Supabase realtime publication; not used on RDS")
        for r in rows
    ]


# TOC entry types (pg_restore -l) -> the kinds `classify` uses.
TOC_KINDS = {
    "FUNCTION": "function",
    "PROCEDURE": "function",
    "POLICY": "policy",
    "FK CONSTRAINT": "constraint",
    "CONSTRAINT": "constraint",
    "CHECK CONSTRAINT": "constraint",
    "TRIGGER": "trigger",
    "DEFAULT": "default",
    "VIEW": "view",
    "MATERIALIZED VIEW": "view",
    "ROW SECURITY": "row security",
}
