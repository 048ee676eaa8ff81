"""Supabase's service roles on the target, made by the RDS master user (not a superuser).

GoTrue connects as ``supabase_auth_admin``, storage-api as ``supabase_storage_admin`` and
PostgREST-style clients as ``authenticator`` (which switches to ``anon``, ``authenticated`` or
``service_role``); policies name those roles. Their attributes and settings follow
supabase/postgres's init scripts and migrations.

Why the master can do it, and what it is granted: since PostgreSQL 16 a CREATEROLE role that
creates a role holds ADMIN OPTION on it, but neither INHERIT nor SET; ``ALTER ... OWNER TO``
and ``CREATE SCHEMA ... AUTHORIZATION`` need SET, and creating objects inside a schema another
role owns needs that role's privileges. So the master grants itself membership WITH INHERIT TRUE,
SET TRUE in the two admin roles whose objects it builds (``OWNER_ROLES``) and nothing else.
``BYPASSRLS`` (Supabase gives it to ``service_role``) can only be given by a role that has it;
when the master lacks it, the report says so.

Passwords of the login roles are generated here, written to the password store *before* the role
gets them (a crash in between leaves a stored password that the next run uses), and sent to the
server as SCRAM verifiers computed by libpq, so no plaintext reaches a server log. An existing
stored password is reused: re-running changes nothing.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from psycopg import sql

from migration.db.connection import Conn
from migration.errors import ConfigError, PreflightError
from migration.progress import NullReporter, Reporter


@dataclass(frozen=True)
class RoleSpec:
    """One service role as Supabase defines it."""

    name: str
    login: bool
    inherit: bool
    settings: tuple[tuple[str, str], ...] = ()
    member_of: tuple[str, ...] = ()
    bypassrls: bool = False


# In creation order (a role is created before it is granted to another).
SERVICE_ROLES = (
    RoleSpec("anon", login=False, inherit=True, settings=(("statement_timeout", "3s"),)),
    RoleSpec("authenticated", login=False, inherit=True, settings=(("statement_timeout", "8s"),)),
    RoleSpec("service_role", login=False, inherit=True, bypassrls=True),
    RoleSpec(
        "authenticator",
        login=True,
        inherit=False,
        settings=(("lock_timeout", "8s"), ("statement_timeout", "8s")),
        member_of=("anon", "authenticated", "service_role"),
    ),
    RoleSpec(
        "supabase_auth_admin",
        login=True,
        inherit=False,
        settings=(("idle_in_transaction_session_timeout", "60000"), ("search_path", "auth")),
    ),
    RoleSpec(
        "supabase_storage_admin",
        login=True,
        inherit=False,
        settings=(("search_path", "storage"),),
        member_of=("authenticator",),
    ),
)
LOGIN_ROLES = tuple(r.name for r in SERVICE_ROLES if r.login)
# The roles whose objects the master builds (schema owners): it needs SET and INHERIT on them.
OWNER_ROLES = ("supabase_auth_admin", "supabase_storage_admin")
#: What storage-api needs when the storage step runs without the auth step: its admin, the API
#: roles its policies and grants name, and ``authenticator`` (through which the admin switches
#: to them). Only the admin's password is the storage step's; ``authenticator``'s is the auth
#: step's (it is made without one and gets it when the auth step runs).
STORAGE_ROLES = ("anon", "authenticated", "service_role", "authenticator", "supabase_storage_admin")
STORAGE_PASSWORDS = ("supabase_storage_admin",)


class PasswordStore(Protocol):
    """Where the login roles' passwords live (Secrets Manager in a stack)."""

    def read(self, role: str) -> str | None:
        """The stored password of `role`, or None when none is stored yet."""
        ...

    def write(self, role: str, password: str) -> None:
        """Store `password` for `role` (replacing any earlier value)."""
        ...


class SecretsManagerStore:
    """One Secrets Manager secret per login role, given by ARN; values ``{"username", "password"}``.

    The secrets are the stack's (encrypted with its KMS key); this only puts values into them.
    Errors name the role and the ARN, never a value.

    :param arns: login role -> secret ARN.
    :param client: a boto3 ``secretsmanager`` client; one for the ARNs' region when None.
    :param roles: the login roles whose passwords this store keeps (default: all of them; the
        storage step alone keeps only ``supabase_storage_admin``'s).
    :raises ConfigError: a login role has no ARN.
    """

    def __init__(
        self, arns: Mapping[str, str], client: Any = None, roles: tuple[str, ...] = LOGIN_ROLES
    ) -> None:
        missing = [r for r in roles if not arns.get(r)]
        if missing:
            raise ConfigError(
                f"no Secrets Manager secret ARN for role(s) {', '.join(missing)}: give one "
                "secret per login role (the stack creates them)"
            )
        self.arns = dict(arns)
        if client is None:
            import boto3

            region = next(iter(self.arns.values())).split(":")[3]
            client = boto3.client("secretsmanager", region_name=region)
        self.client = client

    def read(self, role: str) -> str | None:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_secret_value(SecretId=self.arns[role])
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            if code == "ResourceNotFoundException":
                return None  # the secret has no value yet (or does not exist: write says)
            raise ConfigError(
                f"cannot read the password secret of {role} ({self.arns[role]}, {code}): the "
                "identity running the step needs secretsmanager:GetSecretValue and kms:Decrypt"
            ) from None
        try:
            value = json.loads(response.get("SecretString") or "{}").get("password")
        except (ValueError, AttributeError):
            value = None
        return str(value) if value else None

    def write(self, role: str, password: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.put_secret_value(
                SecretId=self.arns[role],
                SecretString=json.dumps({"username": role, "password": password}),
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise ConfigError(
                f"cannot store the password of {role} in {self.arns[role]} ({code}): check the "
                "ARN, and that the identity may call secretsmanager:PutSecretValue and "
                "kms:GenerateDataKey on the secret's key"
            ) from None


@dataclass
class RolesReport:
    """What the roles step found and did; `as_dict` is JSON-able and holds no password."""

    created: list[str] = field(default_factory=list)
    altered: list[str] = field(default_factory=list)
    passwords_set: list[str] = field(default_factory=list)
    granted_to_master: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.altered or self.passwords_set or self.granted_to_master)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _role(conn: Conn, name: str) -> tuple[bool, bool, bool] | None:
    """(can login, inherits, bypasses RLS) of `name`, or None when it does not exist."""
    row = conn.execute(
        "SELECT rolcanlogin, rolinherit, rolbypassrls FROM pg_roles WHERE rolname = %s", (name,)
    ).fetchone()
    return None if row is None else (bool(row[0]), bool(row[1]), bool(row[2]))


def _verifier(conn: Conn, role: str, password: str) -> str:
    """A SCRAM-SHA-256 verifier computed by libpq: the server never sees the password."""
    raw = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
    return raw.decode()


def _set_password(conn: Conn, role: str, password: str) -> None:
    conn.execute(
        sql.SQL("ALTER ROLE {} PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(_verifier(conn, role, password))
        )
    )


def _administers(conn: Conn, name: str) -> bool:
    row = conn.execute(
        "SELECT pg_has_role(current_user, %s, 'USAGE WITH ADMIN OPTION') "
        "OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)",
        (name,),
    ).fetchone()
    return row is not None and bool(row[0])


def _refuse_unmanageable(conn: Conn, names: list[str]) -> None:
    """Stop before any change when an existing role is not the master's to administer."""
    foreign = [n for n in names if _role(conn, n) is not None and not _administers(conn, n)]
    if foreign:
        row = conn.execute("SELECT current_user").fetchone()
        user = str(row[0]) if row else "the master user"
        raise PreflightError(
            f"role(s) {', '.join(foreign)} exist on the target but {user} has no ADMIN OPTION on "
            f"them: have their creator run GRANT <role> TO {user} WITH ADMIN OPTION, or drop them; "
            "nothing was changed"
        )


def _password(
    spec: RoleSpec, store: PasswordStore, passwords: tuple[str, ...]
) -> tuple[str | None, bool]:
    """(password, fresh): the stored one, or a new one stored before any role gets it; None for
    a role without login or whose password is not this caller's (`passwords`)."""
    if not spec.login or spec.name not in passwords:
        return None, False
    stored = store.read(spec.name)
    if stored is not None:
        return stored, False
    fresh = secrets.token_urlsafe(32)
    store.write(spec.name, fresh)
    return fresh, True


def _ensure_role(
    conn: Conn, spec: RoleSpec, store: PasswordStore, passwords: tuple[str, ...], rep: RolesReport
) -> None:
    found = _role(conn, spec.name)
    ident = sql.Identifier(spec.name)
    attrs = sql.SQL(
        ("LOGIN" if spec.login else "NOLOGIN") + (" INHERIT" if spec.inherit else " NOINHERIT")
    )
    password, fresh = _password(spec, store, passwords)
    if found is None:
        conn.execute(sql.SQL("CREATE ROLE {} ").format(ident) + attrs)
        rep.created.append(spec.name)
        if spec.login and password is None:
            rep.notes.append(
                f"{spec.name} was made without a password (it is the auth step's to give): it "
                "cannot sign in until the auth step runs"
            )
    elif found[:2] != (spec.login, spec.inherit):
        conn.execute(sql.SQL("ALTER ROLE {} ").format(ident) + attrs)
        rep.altered.append(spec.name)
    if password is not None and (fresh or found is None):
        _set_password(conn, spec.name, password)
        rep.passwords_set.append(spec.name)
    _ensure_settings(conn, spec, rep)
    for parent in spec.member_of:
        if not _is_member(conn, spec.name, parent):
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(parent), ident))
            rep.altered.append(f"{spec.name} (member of {parent})")
    now = _role(conn, spec.name)
    if spec.bypassrls and now is not None and not now[2]:
        _grant_bypassrls(conn, spec.name, rep)


def _is_member(conn: Conn, member: str, parent: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_auth_members m WHERE m.member = to_regrole(%s) "
        "AND m.roleid = to_regrole(%s)",
        (member, parent),
    ).fetchone()
    return row is not None


def _ensure_settings(conn: Conn, spec: RoleSpec, rep: RolesReport) -> None:
    """Per-role settings (``ALTER ROLE ... SET``), changed only where they differ."""
    row = conn.execute(
        "SELECT s.setconfig FROM pg_db_role_setting s "
        "WHERE s.setrole = to_regrole(%s) AND s.setdatabase = 0",
        (spec.name,),
    ).fetchone()
    current = dict(str(kv).split("=", 1) for kv in (row[0] if row and row[0] else []))
    for key, value in spec.settings:
        if current.get(key) != value:
            conn.execute(
                sql.SQL("ALTER ROLE {} SET {} = {}").format(
                    sql.Identifier(spec.name), sql.Identifier(key), sql.Literal(value)
                )
            )
            rep.altered.append(f"{spec.name} ({key})")


def _grant_bypassrls(conn: Conn, role: str, rep: RolesReport) -> None:
    row = conn.execute(
        "SELECT rolbypassrls OR rolsuper FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    if row is not None and row[0]:
        conn.execute(sql.SQL("ALTER ROLE {} BYPASSRLS").format(sql.Identifier(role)))
        rep.altered.append(f"{role} (BYPASSRLS)")
    else:
        rep.notes.append(
            f"{role} is without BYPASSRLS: only a role that has BYPASSRLS may give it, and the "
            "master user has not; row level security applies to it (grant it as a superuser if "
            "the app relies on the service key bypassing policies)"
        )


def _grant_to_master(conn: Conn, names: tuple[str, ...], rep: RolesReport) -> None:
    """Membership WITH INHERIT, SET in the owner roles: what ALTER ... OWNER TO needs."""
    for name in (n for n in OWNER_ROLES if n in names):
        row = conn.execute(
            "SELECT m.inherit_option AND m.set_option FROM pg_auth_members m "
            "WHERE m.member = to_regrole(current_user) AND m.roleid = to_regrole(%s) "
            "ORDER BY 1 DESC LIMIT 1",
            (name,),
        ).fetchone()
        if row is None or not row[0]:
            conn.execute(
                sql.SQL("GRANT {} TO CURRENT_USER WITH INHERIT TRUE, SET TRUE").format(
                    sql.Identifier(name)
                )
            )
            rep.granted_to_master.append(name)


def ensure_roles(
    conn: Conn,
    store: PasswordStore,
    reporter: Reporter | None = None,
    roles: tuple[str, ...] | None = None,
    passwords: tuple[str, ...] | None = None,
) -> RolesReport:
    """Create or align Supabase's service roles on the target, as its master user; idempotent.

    :param conn: an autocommit connection to the target as the master user (CREATEROLE).
    :param store: where login passwords are kept (read first; written before a role gets one).
    :param reporter: receives one line per change (never a password).
    :param roles: the roles to make (default: all of `SERVICE_ROLES`; the storage step alone
        makes `STORAGE_ROLES`).
    :param passwords: the login roles whose passwords `store` keeps (default: every login role
        in `roles`); another login role is made without a password and left as it is.
    :raises PreflightError: an existing role the master cannot administer (nothing changed).
    :raises ConfigError: the password store cannot be read or written.
    """
    rep = reporter or NullReporter()
    report = RolesReport()
    specs = [r for r in SERVICE_ROLES if roles is None or r.name in roles]
    names = tuple(r.name for r in specs)
    keeps = passwords if passwords is not None else tuple(r.name for r in specs if r.login)
    _refuse_unmanageable(conn, list(names))
    with conn.transaction():
        for spec in specs:
            _ensure_role(conn, spec, store, keeps, report)
        _grant_to_master(conn, names, report)
    for name in report.created:
        rep.info(f"created role {name}")
    for name in report.passwords_set:
        rep.info(f"set the password of {name} (kept in its secret)")
    for note in report.notes:
        rep.info(note)
    return report
