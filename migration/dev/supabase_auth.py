"""Supabase Auth's schema as GoTrue v2.164.0 builds it: for the demo's source and the tests.

Why replayed rather than sketched: the auth step must carry the real thing (GoTrue's 54
migrations leave types, functions, indexes, foreign keys and row level security that a
hand-written `auth.users` lacks), and a GoTrue of the same version must start on the target
without migrating. In the order a Supabase database goes through it:

1. cluster roles, as supabase/postgres's init scripts make them
   (``migrations/db/init-scripts/00000000000000-initial-schema.sql``,
   ``00000000000001-auth-schema.sql`` and the role migrations after them);
2. the schema `auth` that Supabase's image creates before GoTrue first starts
   (``00000000000001-auth-schema.sql``: five tables, ``uid()``/``role()``/``email()``, seven
   pre-GoTrue rows in ``schema_migrations``, owners and grants), then
   ``20211115181400_update-auth-permissions.sql`` and ``20211124212715_update-auth-owner.sql``;
3. GoTrue's own 54 migration files of v2.164.0 (vendored unmodified in ``gotrue_v2_164_0/``,
   shipped as package data), replayed as its migrator runs them: template rendered with the
   namespace `auth`, executed as ``supabase_auth_admin`` (``search_path`` auth), version
   recorded in ``auth.schema_migrations``.

Users are written as GoTrue writes them at sign-up: bcrypt ``$2a$10$`` hashes
(`password_hash`, with the ``bcrypt`` package of the `local` extra: the embedded server has no
pgcrypto).
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

MIGRATIONS = Path(__file__).with_name("gotrue_v2_164_0")
INSTANCE_ID = "00000000-0000-0000-0000-000000000000"
_NAMESPACE = re.compile(r"\{\{\s*index\s+\.Options\s+\"Namespace\"\s*\}\}")
_VERSION = re.compile(r"^(\d+)_")

# Step 1: cluster roles (idempotent: the cluster is shared by every database).
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


def gotrue_migrations() -> list[tuple[str, str]]:
    """(version, SQL rendered for namespace `auth`) of every vendored file, in run order."""
    out = []
    for path in sorted(MIGRATIONS.glob("*.up.sql")):
        match = _VERSION.match(path.name)
        if match is None:
            raise ValueError(f"{path.name}: not a GoTrue migration file name")
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
    import bcrypt  # the `local` extra: only the demo and the tests hash passwords

    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10, prefix=b"2a")).decode()


def install_auth_schema(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Steps 1 to 3 in `conn`'s database (a superuser's): roles, Supabase's bootstrap, GoTrue.

    The roles are cluster-wide and created only when missing, so this runs on any database.
    """
    conn.execute(ROLES_SQL)
    conn.execute(BOOTSTRAP_SQL)
    replay_gotrue(conn)


def sign_up(
    cur: psycopg.Cursor[tuple[object, ...]], user_id: str, email: str, password: str, at: datetime
) -> None:
    """A confirmed email user and its ``email`` identity, the rows GoTrue's sign-up writes."""
    cur.execute(
        "INSERT INTO auth.users (instance_id, id, aud, role, email, encrypted_password, "
        "email_confirmed_at, confirmation_token, recovery_token, email_change_token_new, "
        "email_change, raw_app_meta_data, raw_user_meta_data, created_at, updated_at, "
        "last_sign_in_at, is_sso_user) VALUES (%s, %s, 'authenticated', 'authenticated', "
        "%s, %s, %s, '', '', '', '', %s, %s, %s, %s, %s, false)",
        (
            INSTANCE_ID,
            user_id,
            email,
            password_hash(password),
            at,
            Jsonb({"provider": "email", "providers": ["email"]}),
            Jsonb({}),
            at,
            at,
            at,
        ),
    )
    identity = {"sub": user_id, "email": email, "email_verified": False, "phone_verified": False}
    cur.execute(
        "INSERT INTO auth.identities (provider_id, user_id, identity_data, provider, "
        "last_sign_in_at, created_at, updated_at) VALUES (%s, %s, %s, 'email', %s, %s, %s)",
        (user_id, user_id, Jsonb(identity), at, at, at),
    )
