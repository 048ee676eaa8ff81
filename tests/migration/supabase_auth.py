"""The tests' GoTrue source: `migration.dev.supabase_auth`'s schema, an app, and real users.

The schema `auth` is built by the package (`install_auth_schema`: Supabase's roles and
bootstrap, then GoTrue v2.164.0's own migrations replayed); here on top of it:

4. an application schema in `public` that uses `auth` the way QCKSTRT's Supabase setup does
   (``users.id`` is the GoTrue user id, a foreign key into ``auth.users``, a policy calling
   ``auth.uid()``);
5. users as GoTrue writes them at sign-up: bcrypt ``$2a$10$`` hashes, an ``email`` identity
   each, sessions, refresh tokens (ids from the ``bigserial``), AMR claims and audit entries.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.types.json import Jsonb

from migration.dev.demo_data import VECTOR_TABLE_SQL
from migration.dev.supabase_auth import INSTANCE_ID, install_auth_schema, sign_up
from tests.databases import Servers

AUTH_TEMPLATE = "supabase_auth_template"
USERS = 12
KNOWN_EMAIL = "user0@example.com"
KNOWN_PASSWORD = "correct horse battery staple 0"

# Step 4: the application's side (QCKSTRT keys its users by the GoTrue user id).
# Around the app's vector table, which comes from demo_data.
_APP_HEAD_SQL = r"""
CREATE SCHEMA IF NOT EXISTS extensions;
CREATE EXTENSION IF NOT EXISTS vector SCHEMA extensions;
"""
_APP_REST_SQL = r"""CREATE TABLE public.users (
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
APP_SQL = _APP_HEAD_SQL + VECTOR_TABLE_SQL + _APP_REST_SQL


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
            sign_up(cur, u.id, u.email, u.password, at)
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
    servers.source.create_database(name)
    with servers.source.superuser(name) as conn:
        install_auth_schema(conn)
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
