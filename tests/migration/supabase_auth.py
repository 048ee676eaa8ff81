"""A Supabase source whose schema `auth` is the one GoTrue v2.164.0 builds, with real users.

How it is built, in the order a Supabase database goes through it:

1. cluster roles, as supabase/postgres's init scripts make them
   (``migrations/db/init-scripts/00000000000000-initial-schema.sql``,
   ``00000000000001-auth-schema.sql`` and the role migrations after them);
2. the schema `auth` that Supabase's image creates before GoTrue first starts
   (``00000000000001-auth-schema.sql``: five tables, ``uid()``/``role()``/``email()``, seven
   pre-GoTrue rows in ``schema_migrations``, owners and grants), then
   ``20211115181400_update-auth-permissions.sql`` and ``20211124212715_update-auth-owner.sql``;
3. GoTrue's own 54 migration files of v2.164.0 (vendored unmodified in ``gotrue_v2_164_0/``),
   replayed as its migrator runs them: template rendered with the namespace `auth`, executed as
   ``supabase_auth_admin`` (``search_path`` auth), version recorded in ``auth.schema_migrations``;
4. an application schema in `public` that uses `auth` the way QCKSTRT's Supabase setup does
   (``users.id`` is the GoTrue user id, a foreign key into ``auth.users``, a policy calling
   ``auth.uid()``);
5. users as GoTrue writes them at sign-up: bcrypt ``$2a$10$`` hashes (made with the ``bcrypt``
   package: the embedded server has no pgcrypto), an ``email`` identity each, sessions, refresh
   tokens (ids from the ``bigserial``), AMR claims and audit entries.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bcrypt
import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.databases import Servers

MIGRATIONS = Path(__file__).parent / "gotrue_v2_164_0"
AUTH_TEMPLATE = "supabase_auth_template"
INSTANCE_ID = "00000000-0000-0000-0000-000000000000"
USERS = 12
KNOWN_EMAIL = "user0@example.com"
KNOWN_PASSWORD = "correct horse battery staple 0"
_NAMESPACE = re.compile(r"\{\{\s*index\s+\.Options\s+\"Namespace\"\s*\}\}")
_VERSION = re.compile(r"^(\d+)_")

# Step 1: cluster roles (idempotent: the cluster is shared by every template).
ROLES_SQL = r"""
DO $$ BEGIN CREATE ROLE supabase_admin NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE anon NOLOGIN NOINHERIT;
  EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE authenticated NOLOGIN NOINHERIT;
  EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
  EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE authenticator LOGIN NOINHERIT;
  EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE dashboard_user NOSUPERUSER CREATEDB CREATEROLE REPLICATION;
  EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE supabase_auth_admin NOINHERIT CREATEROLE LOGIN NOREPLICATION;
  EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE supabase_storage_admin NOINHERIT CREATEROLE LOGIN NOREPLICATION;
  EXCEPTION WHEN duplicate_object THEN NULL; END $$;
ALTER ROLE authenticator NOINHERIT LOGIN;
ALTER ROLE service_role BYPASSRLS;
GRANT anon, authenticated, service_role TO authenticator;
ALTER ROLE authenticated INHERIT;
ALTER ROLE anon INHERIT;
ALTER ROLE service_role INHERIT;
ALTER ROLE anon SET statement_timeout = '3s';
ALTER ROLE authenticated SET statement_timeout = '8s';
ALTER ROLE authenticator SET statement_timeout = '8s';
ALTER ROLE authenticator SET lock_timeout = '8s';
ALTER ROLE supabase_auth_admin SET search_path = "auth";
ALTER ROLE supabase_auth_admin SET idle_in_transaction_session_timeout TO 60000;
ALTER ROLE supabase_storage_admin SET search_path = "storage";
GRANT authenticator TO supabase_storage_admin;
"""

# Step 2: supabase/postgres 00000000000001-auth-schema.sql (its role creation is in ROLES_SQL),
# then 20211115181400_update-auth-permissions.sql and 20211124212715_update-auth-owner.sql.
BOOTSTRAP_SQL = r"""
CREATE SCHEMA IF NOT EXISTS auth AUTHORIZATION supabase_admin;
CREATE TABLE auth.users (
    instance_id uuid NULL,
    id uuid NOT NULL UNIQUE,
    aud varchar(255) NULL,
    "role" varchar(255) NULL,
    email varchar(255) NULL UNIQUE,
    encrypted_password varchar(255) NULL,
    confirmed_at timestamptz NULL,
    invited_at timestamptz NULL,
    confirmation_token varchar(255) NULL,
    confirmation_sent_at timestamptz NULL,
    recovery_token varchar(255) NULL,
    recovery_sent_at timestamptz NULL,
    email_change_token varchar(255) NULL,
    email_change varchar(255) NULL,
    email_change_sent_at timestamptz NULL,
    last_sign_in_at timestamptz NULL,
    raw_app_meta_data jsonb NULL,
    raw_user_meta_data jsonb NULL,
    is_super_admin bool NULL,
    created_at timestamptz NULL,
    updated_at timestamptz NULL,
    CONSTRAINT users_pkey PRIMARY KEY (id)
);
CREATE INDEX users_instance_id_email_idx ON auth.users USING btree (instance_id, email);
CREATE INDEX users_instance_id_idx ON auth.users USING btree (instance_id);
comment on table auth.users is 'Auth: Stores user login data within a secure schema.';
CREATE TABLE auth.refresh_tokens (
    instance_id uuid NULL,
    id bigserial NOT NULL,
    "token" varchar(255) NULL,
    user_id varchar(255) NULL,
    revoked bool NULL,
    created_at timestamptz NULL,
    updated_at timestamptz NULL,
    CONSTRAINT refresh_tokens_pkey PRIMARY KEY (id)
);
CREATE INDEX refresh_tokens_instance_id_idx ON auth.refresh_tokens USING btree (instance_id);
CREATE INDEX refresh_tokens_instance_id_user_id_idx
    ON auth.refresh_tokens USING btree (instance_id, user_id);
CREATE INDEX refresh_tokens_token_idx ON auth.refresh_tokens USING btree (token);
comment on table auth.refresh_tokens is
    'Auth: Store of tokens used to refresh JWT tokens once they expire.';
CREATE TABLE auth.instances (
    id uuid NOT NULL,
    uuid uuid NULL,
    raw_base_config text NULL,
    created_at timestamptz NULL,
    updated_at timestamptz NULL,
    CONSTRAINT instances_pkey PRIMARY KEY (id)
);
comment on table auth.instances is 'Auth: Manages users across multiple sites.';
CREATE TABLE auth.audit_log_entries (
    instance_id uuid NULL,
    id uuid NOT NULL,
    payload json NULL,
    created_at timestamptz NULL,
    CONSTRAINT audit_log_entries_pkey PRIMARY KEY (id)
);
CREATE INDEX audit_logs_instance_id_idx ON auth.audit_log_entries USING btree (instance_id);
comment on table auth.audit_log_entries is 'Auth: Audit trail for user actions.';
CREATE TABLE auth.schema_migrations (
    "version" varchar(255) NOT NULL,
    CONSTRAINT schema_migrations_pkey PRIMARY KEY ("version")
);
comment on table auth.schema_migrations is 'Auth: Manages updates to the auth system.';
INSERT INTO auth.schema_migrations (version)
VALUES  ('20171026211738'), ('20171026211808'), ('20171026211834'), ('20180103212743'),
        ('20180108183307'), ('20180119214651'), ('20180125194653');
create or replace function auth.uid() returns uuid as $$
  select nullif(current_setting('request.jwt.claim.sub', true), '')::uuid;
$$ language sql stable;
create or replace function auth.role() returns text as $$
  select nullif(current_setting('request.jwt.claim.role', true), '')::text;
$$ language sql stable;
create or replace function auth.email() returns text as $$
  select nullif(current_setting('request.jwt.claim.email', true), '')::text;
$$ language sql stable;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
GRANT ALL PRIVILEGES ON SCHEMA auth TO supabase_auth_admin;
GRANT ALL PRIVILEGES ON ALL TABLES IN SCHEMA auth TO supabase_auth_admin;
GRANT ALL PRIVILEGES ON ALL SEQUENCES IN SCHEMA auth TO supabase_auth_admin;
ALTER table "auth".users OWNER TO supabase_auth_admin;
ALTER table "auth".refresh_tokens OWNER TO supabase_auth_admin;
ALTER table "auth".audit_log_entries OWNER TO supabase_auth_admin;
ALTER table "auth".instances OWNER TO supabase_auth_admin;
ALTER table "auth".schema_migrations OWNER TO supabase_auth_admin;
GRANT USAGE ON SCHEMA auth TO postgres;
GRANT ALL ON ALL TABLES IN SCHEMA auth TO postgres, dashboard_user;
GRANT ALL ON ALL SEQUENCES IN SCHEMA auth TO postgres, dashboard_user;
GRANT ALL ON ALL ROUTINES IN SCHEMA auth TO postgres, dashboard_user;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_auth_admin IN SCHEMA auth
    GRANT ALL ON TABLES TO postgres, dashboard_user;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_auth_admin IN SCHEMA auth
    GRANT ALL ON SEQUENCES TO postgres, dashboard_user;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_auth_admin IN SCHEMA auth
    GRANT ALL ON ROUTINES TO postgres, dashboard_user;
ALTER FUNCTION auth.uid OWNER TO supabase_auth_admin;
ALTER FUNCTION auth.role OWNER TO supabase_auth_admin;
ALTER FUNCTION auth.email OWNER TO supabase_auth_admin;
"""

# Step 4: the application's side (QCKSTRT keys its users by the GoTrue user id).
APP_SQL = r"""
CREATE SCHEMA IF NOT EXISTS extensions;
CREATE EXTENSION IF NOT EXISTS vector SCHEMA extensions;
CREATE TABLE public.qckstrt_embeddings_vectors (
    id varchar(255) PRIMARY KEY,
    document_id varchar(255) NOT NULL,
    user_id varchar(255) NOT NULL,
    content text NOT NULL,
    embedding extensions.vector(384) NOT NULL,
    created_at timestamptz DEFAULT now()
);
CREATE TABLE public.users (
    id uuid PRIMARY KEY,
    email varchar(255) NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_id_fkey FOREIGN KEY (id) REFERENCES auth.users(id) ON DELETE CASCADE
);
CREATE TABLE public.documents (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    "userId" uuid NOT NULL REFERENCES public.users(id) ON DELETE CASCADE,
    key text NOT NULL
);
CREATE FUNCTION public.my_documents() RETURNS SETOF public.documents LANGUAGE sql STABLE
    AS $$ SELECT * FROM public.documents WHERE "userId" = auth.uid() $$;
ALTER TABLE public.documents ENABLE ROW LEVEL SECURITY;
CREATE POLICY documents_own ON public.documents FOR SELECT TO authenticated
    USING ("userId" = auth.uid());
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
GRANT SELECT ON public.documents, public.users TO authenticated;
"""


def gotrue_migrations() -> list[tuple[str, str]]:
    """(version, SQL rendered for namespace `auth`) of every vendored file, in run order."""
    out = []
    for path in sorted(MIGRATIONS.glob("*.up.sql")):
        match = _VERSION.match(path.name)
        assert match, path.name
        out.append((match.group(1), _NAMESPACE.sub("auth", path.read_text())))
    return out


def replay_gotrue(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Run GoTrue's migrations as its migrator does: as supabase_auth_admin, one at a time."""
    conn.execute("SET ROLE supabase_auth_admin")
    conn.execute("SET search_path = auth")
    for version, text in gotrue_migrations():
        with conn.transaction():
            conn.execute(text.encode())
            conn.execute("INSERT INTO auth.schema_migrations (version) VALUES (%s)", (version,))
    conn.execute("RESET ROLE")
    conn.execute("RESET search_path")


def password_hash(password: str) -> str:
    """A hash as GoTrue writes it (Go's x/crypto/bcrypt, cost 10: ``$2a$10$...``)."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10, prefix=b"2a")).decode()


@dataclass(frozen=True)
class AuthUser:
    id: str
    email: str
    password: str


def seed_users(conn: psycopg.Connection[tuple[object, ...]], count: int = USERS) -> list[AuthUser]:
    """Sign `count` users up, confirmed, each with one session and two refresh tokens."""
    now = datetime(2026, 11, 1, tzinfo=UTC)
    users = [
        AuthUser(
            str(uuid.uuid5(uuid.NAMESPACE_URL, f"user{i}")),
            f"user{i}@example.com",
            f"correct horse battery staple {i}",
        )
        for i in range(count)
    ]
    with conn.transaction(), conn.cursor() as cur:
        for i, u in enumerate(users):
            at = now + timedelta(minutes=i)
            cur.execute(
                "INSERT INTO auth.users (instance_id, id, aud, role, email, encrypted_password, "
                "email_confirmed_at, confirmation_token, recovery_token, email_change_token_new, "
                "email_change, raw_app_meta_data, raw_user_meta_data, created_at, updated_at, "
                "last_sign_in_at, is_sso_user) VALUES (%s, %s, 'authenticated', 'authenticated', "
                "%s, %s, %s, '', '', '', '', %s, %s, %s, %s, %s, false)",
                (
                    INSTANCE_ID,
                    u.id,
                    u.email,
                    password_hash(u.password),
                    at,
                    Jsonb({"provider": "email", "providers": ["email"]}),
                    Jsonb({}),
                    at,
                    at,
                    at,
                ),
            )
            cur.execute(
                "INSERT INTO auth.identities (provider_id, user_id, identity_data, provider, "
                "last_sign_in_at, created_at, updated_at) VALUES (%s, %s, %s, 'email', %s, %s, %s)",
                (
                    u.id,
                    u.id,
                    Jsonb(
                        {
                            "sub": u.id,
                            "email": u.email,
                            "email_verified": False,
                            "phone_verified": False,
                        }
                    ),
                    at,
                    at,
                    at,
                ),
            )
            session = str(uuid.uuid5(uuid.NAMESPACE_URL, f"session{i}"))
            cur.execute(
                "INSERT INTO auth.sessions (id, user_id, created_at, updated_at, aal, "
                "user_agent, ip) VALUES (%s, %s, %s, %s, 'aal1', 'test', '10.0.0.1')",
                (session, u.id, at, at),
            )
            cur.execute(
                "INSERT INTO auth.mfa_amr_claims (session_id, created_at, updated_at, "
                "authentication_method, id) VALUES (%s, %s, %s, 'password', %s)",
                (session, at, at, str(uuid.uuid5(uuid.NAMESPACE_URL, f"amr{i}"))),
            )
            for n in range(2):
                cur.execute(
                    "INSERT INTO auth.refresh_tokens (instance_id, token, user_id, revoked, "
                    "created_at, updated_at, parent, session_id) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        INSTANCE_ID,
                        f"rt{i}x{n}",
                        u.id,
                        n == 0,
                        at,
                        at,
                        f"rt{i}x0" if n else None,
                        session,
                    ),
                )
            cur.execute(
                "INSERT INTO auth.audit_log_entries (instance_id, id, payload, created_at, "
                "ip_address) VALUES (%s, %s, %s, %s, '10.0.0.1')",
                (
                    INSTANCE_ID,
                    str(uuid.uuid5(uuid.NAMESPACE_URL, f"audit{i}")),
                    Jsonb({"action": "user_signedup", "actor_id": u.id}),
                    at,
                ),
            )
            cur.execute("INSERT INTO public.users (id, email) VALUES (%s, %s)", (u.id, u.email))
            cur.execute(
                'INSERT INTO public.documents ("userId", key) VALUES (%s, %s), (%s, %s)',
                (u.id, f"{u.email}/a.pdf", u.id, f"{u.email}/b.pdf"),
            )
        cur.execute(
            "INSERT INTO public.qckstrt_embeddings_vectors (id, document_id, user_id, content, "
            "embedding) SELECT d.id || '-0', d.id, d.\"userId\", 'Quarterly revenue of ' || d.key, "
            "(SELECT array_agg(0.1::real) FROM generate_series(1, 384))::extensions.vector "
            "FROM public.documents d ORDER BY d.key LIMIT 4"
        )
    return users


def build_template(servers: Servers, name: str = AUTH_TEMPLATE) -> list[AuthUser]:
    """Create the template database on the session's source server; return its users."""
    with servers.source.superuser() as conn:
        conn.execute(ROLES_SQL)
    servers.source.create_database(name)
    with servers.source.superuser(name) as conn:
        conn.execute(BOOTSTRAP_SQL)
        replay_gotrue(conn)
        conn.execute(APP_SQL)
        users = seed_users(conn)
        conn.execute("ANALYZE")
    return users


@dataclass
class AuthSource:
    """The template's users; `new_db` gives a fresh copy: (dbname, superuser URL)."""

    servers: Servers
    users: list[AuthUser]
    _n: Iterator[int]

    def new_db(self) -> tuple[str, str]:
        name = f"authsrc_{next(self._n)}"
        self.servers.source.create_database(name, template=AUTH_TEMPLATE)
        return name, self.servers.source.url(name)


@pytest.fixture(scope="session")
def auth_source(servers: Servers) -> AuthSource:
    import itertools

    return AuthSource(servers, build_template(servers), itertools.count())
