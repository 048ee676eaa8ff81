"""A Supabase-shaped QCKSTRT database, generated: the demo's source, and the tests' schema.

It carries what matters to the migration: Supabase's roles and schemas (`vault`, `extensions`
holding `vector` and a `uuid_generate_v4()` stand-in, as uuid-ossp is missing from the embedded
server; in the demo the real `auth` and `storage` of GoTrue and storage-api with users and
files, in the tests' bulk source small stand-ins of them), RLS policies calling `auth.uid()`,
the vault helpers in `public`, a foreign key into `auth.users`, a publication, grants to
Supabase roles, and QCKSTRT's tables (DESIGN.md §2).

Why generated text rather than lorem ipsum: the demo ends with a RAG retrieval, which is only
convincing when the chunks are about something. Each document is about one topic of a small
office's life (revenue, hiring, security, ...), split into ~1,000-character chunks as the app's
splitter makes them, with stale random vectors that the re-index replaces.
"""

from __future__ import annotations

import hashlib
import random
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from migration.dev.supabase_auth import install_auth_schema, sign_up
from migration.dev.supabase_storage import (
    StoredObject,
    insert_rows,
    install_storage_schema,
    write_files,
    xattrs_supported,
)

ROLES = ("supabase_admin", "anon", "authenticated", "service_role", "authenticator")

PUBLIC_TABLES = (
    "users",
    "user_profiles",
    "user_sessions",
    "documents",
    "audit_logs",
    "counters",
    "qckstrt_embeddings_vectors",
)

#: Schemas `extensions` (vector, a uuid-ossp stand-in) and `vault`, as on every Supabase.
BASE_SQL = r"""
CREATE SCHEMA extensions;
CREATE SCHEMA vault;
CREATE EXTENSION vector SCHEMA extensions;
CREATE FUNCTION extensions.uuid_generate_v4() RETURNS uuid LANGUAGE sql VOLATILE
    AS 'SELECT pg_catalog.gen_random_uuid()';
CREATE TABLE vault.secrets (
    id uuid PRIMARY KEY DEFAULT extensions.uuid_generate_v4(),
    name text UNIQUE,
    secret text
);
CREATE VIEW vault.decrypted_secrets AS
    SELECT id, name, secret AS decrypted_secret FROM vault.secrets;
"""

#: The tests' bulk source: just enough of `auth` and `storage` for the app's references (the
#: demo builds the real ones: `migration.dev.supabase_auth`, `migration.dev.supabase_storage`).
STANDIN_SQL = r"""
CREATE SCHEMA auth;
CREATE SCHEMA storage;
CREATE TABLE auth.users (
    id uuid PRIMARY KEY DEFAULT extensions.uuid_generate_v4(),
    email text NOT NULL
);
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid
$$;
CREATE TABLE storage.buckets (id text PRIMARY KEY, name text NOT NULL);
"""

#: The app's vector table as its pgvector provider creates it (DESIGN.md §2); the tests' own
#: small app schemas take it from here too.
VECTOR_TABLE_SQL = """CREATE TABLE public.qckstrt_embeddings_vectors (
    id varchar(255) PRIMARY KEY,
    document_id varchar(255) NOT NULL,
    user_id varchar(255) NOT NULL,
    content text NOT NULL,
    embedding extensions.vector(384) NOT NULL,
    created_at timestamptz DEFAULT now()
);
"""

# QCKSTRT's tables before the vector table (declared once, above), and the rest after it.
_APP_TABLES_SQL = r"""
CREATE TABLE public.users (
    id uuid PRIMARY KEY DEFAULT extensions.uuid_generate_v4(),
    email varchar(255) NOT NULL UNIQUE,
    "firstName" varchar(255),
    auth_id uuid REFERENCES auth.users(id),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE public.user_profiles (
    id uuid PRIMARY KEY DEFAULT extensions.uuid_generate_v4(),
    "userId" uuid NOT NULL REFERENCES public.users(id) ON DELETE CASCADE,
    bio text
);
CREATE TABLE public.user_sessions (
    id uuid PRIMARY KEY DEFAULT extensions.uuid_generate_v4(),
    "userId" uuid NOT NULL REFERENCES public.users(id) ON DELETE CASCADE,
    token varchar(255) NOT NULL,
    expires_at timestamptz
);
CREATE TABLE public.documents (
    id uuid PRIMARY KEY DEFAULT extensions.uuid_generate_v4(),
    "userId" uuid NOT NULL REFERENCES public.users(id) ON DELETE CASCADE,
    location text NOT NULL,
    key text NOT NULL,
    size integer NOT NULL,
    checksum text,
    status varchar(32) NOT NULL DEFAULT 'processed',
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE public.audit_logs (
    id bigserial PRIMARY KEY,
    user_id uuid,
    action text NOT NULL,
    details jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE public.counters (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL
);
"""
_APP_REST_SQL = r"""CREATE INDEX qckstrt_embeddings_vectors_document_id_idx
    ON public.qckstrt_embeddings_vectors (document_id);
CREATE INDEX qckstrt_embeddings_vectors_user_id_idx
    ON public.qckstrt_embeddings_vectors (user_id);
CREATE INDEX documents_user_idx ON public.documents ("userId");

CREATE FUNCTION public.touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
CREATE TRIGGER documents_touch BEFORE UPDATE ON public.documents
    FOR EACH ROW EXECUTE FUNCTION public.touch_updated_at();

CREATE FUNCTION public.vault_read_secret(secret_name text) RETURNS text
    LANGUAGE sql SECURITY DEFINER AS $$
    SELECT decrypted_secret FROM vault.decrypted_secrets WHERE name = secret_name
$$;
CREATE FUNCTION public.vault_list_secrets() RETURNS TABLE(name text) LANGUAGE sql AS $$
    SELECT name FROM vault.secrets
$$;

ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;
CREATE POLICY users_select_own ON public.users FOR SELECT TO authenticated
    USING (auth_id = auth.uid());
ALTER TABLE public.documents ENABLE ROW LEVEL SECURITY;
CREATE POLICY documents_own ON public.documents TO authenticated
    USING ("userId" IN (SELECT id FROM public.users WHERE auth_id = auth.uid()));

CREATE PUBLICATION supabase_realtime FOR TABLE public.documents;
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO anon, authenticated;
GRANT ALL ON ALL TABLES IN SCHEMA public TO service_role;
ALTER TABLE public.audit_logs OWNER TO supabase_admin;
"""
#: QCKSTRT's tables, policies, functions, publication and grants (DESIGN.md §2).
APP_SQL = _APP_TABLES_SQL + VECTOR_TABLE_SQL + _APP_REST_SQL

#: The tests' Supabase-shaped schema (stand-ins for `auth` and `storage`).
SCHEMA_SQL = BASE_SQL + STANDIN_SQL + APP_SQL


TOPICS: dict[str, list[str]] = {
    "quarterly revenue": [
        "Quarterly revenue grew {n}% year over year, driven by subscription renewals.",
        "Enterprise contracts contributed {n} percent of new bookings this quarter.",
        "Gross margin improved to {n}% as hosting costs fell after the migration.",
        "The finance team expects revenue growth to slow to {n}% next quarter.",
        "Churn among small customers rose to {n}% and offset part of the revenue gain.",
    ],
    "hiring plan": [
        "The hiring plan adds {n} engineers and two designers before the end of the year.",
        "Recruiting will focus on senior backend roles; {n} interviews are scheduled.",
        "Onboarding for new hires now takes {n} days instead of three weeks.",
        "Headcount budget allows {n} new positions across support and sales.",
    ],
    "security policy": [
        "All laptops must use full-disk encryption; {n} devices were non-compliant last audit.",
        "Multi-factor authentication is mandatory for every account with admin rights.",
        "Passwords rotate every {n} days and may not be reused within a year.",
        "Incident reports must reach the security team within {n} hours of discovery.",
    ],
    "product roadmap": [
        "The roadmap ships document search in Q{n} and a mobile app after that.",
        "Customers asked for offline mode; {n} accounts voted for it in the survey.",
        "The team will deprecate the legacy API after {n} months of notice.",
        "Retrieval quality improves with re-embedding every chunk on the new model.",
    ],
    "customer feedback": [
        "Support received {n} tickets about slow uploads in the last month.",
        "Customers praise the answer quality but want sources cited next to each answer.",
        "Net promoter score rose to {n} after the redesign of the upload page.",
        "Several users asked for bulk export of their documents and chat history.",
    ],
    "office logistics": [
        "The office moves to the third floor in {n} weeks; desks are assigned by team.",
        "Board meetings take place on the first Tuesday; coffee is provided.",
        "Parking permits are renewed every {n} months at the front desk.",
        "The kitchen is cleaned on Fridays; label your food with the date.",
    ],
}

#: The demo's question and the user it asks for (the first user owns a revenue report).
QUESTION = "How did revenue grow this quarter?"
#: The demo's known user: the demo prints the password and checks it on the target as GoTrue.
KNOWN_EMAIL = "user1@example.com"
KNOWN_PASSWORD = "correct horse battery staple"
#: storage-api's bucket of the app's files; a document's `location` is ``s3://files/<name>``.
BUCKET = "files"
CONTENT_TYPE = "text/markdown;charset=UTF-8"
CACHE_CONTROL = "max-age=3600"


@dataclass(frozen=True)
class Chunk:
    id: str
    document_id: str
    user_id: str
    content: str


def _chunk_text(rnd: random.Random, topic: str, size: int = 1000) -> str:
    """About `size` characters of sentences on `topic`, as the app's splitter would cut them."""
    sentences: list[str] = []
    length = 0
    while length < size - 120:
        sentence = rnd.choice(TOPICS[topic]).format(n=rnd.randint(2, 40))
        sentences.append(sentence)
        length += len(sentence) + 1
    return " ".join(sentences)


def seed(
    conn: psycopg.Connection[tuple[object, ...]],
    chunks: int,
    storage_root: Path,
    rng_seed: int = 7,
) -> int:
    """Build the Supabase source in `conn`'s database (a superuser's); return its user count.

    Schemas `auth` (GoTrue v2.164.0's migrations replayed) and `storage` (storage-api
    v1.11.8's), the app's schema, users signed up as GoTrue does (``public.users.id`` is the
    GoTrue user id), and one file per document: a row in ``storage.objects`` and its bytes in a
    storage-api file-backend tree under `storage_root`. About four chunks per document and five
    documents per user, so `chunks` sets the size.
    """
    rnd = random.Random(rng_seed)
    install_auth_schema(conn)
    install_storage_schema(conn)
    conn.execute(roles_sql())
    conn.execute(BASE_SQL + APP_SQL)
    user_ids = _sign_up(conn, rnd, max(1, chunks // 20))
    with conn.cursor() as cur:
        rows, objects = _documents(cur, rnd, user_ids, chunks)
        _copy_chunks(cur, rnd, rows)
        _other_rows(cur)
    insert_rows(conn, objects, ((BUCKET, False),), owner=user_ids[0])
    storage_root.mkdir(parents=True, exist_ok=True)
    write_files(storage_root, objects, xattrs=xattrs_supported(storage_root))
    conn.execute("ANALYZE")
    return len(user_ids)


def _sign_up(
    conn: psycopg.Connection[tuple[object, ...]], rnd: random.Random, users: int
) -> list[str]:
    """GoTrue users (bcrypt hashes; the known user's password is `KNOWN_PASSWORD`, the others'
    random) and the app's rows for them; their ids, the known user's first."""
    now = datetime.now(UTC)
    ids: list[str] = []
    with conn.cursor() as cur:
        for i in range(1, users + 1):
            user_id = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
            email = f"user{i}@example.com"
            password = KNOWN_PASSWORD if email == KNOWN_EMAIL else secrets.token_urlsafe(12)
            at = now - timedelta(days=rnd.uniform(1, 90))
            sign_up(cur, user_id, email, password, at)
            cur.execute(
                'INSERT INTO public.users (id, email, "firstName", auth_id, created_at) '
                "VALUES (%s, %s, %s, %s, %s)",
                (user_id, email, f"First {email}", user_id, at),
            )
            ids.append(user_id)
        cur.execute(
            'INSERT INTO public.user_profiles ("userId", bio) '
            "SELECT id, 'bio of ' || email FROM public.users"
        )
        cur.execute(
            'INSERT INTO public.user_sessions ("userId", token, expires_at) '
            "SELECT u.id, md5(u.id::text || g), now() + g * interval '1 hour' "
            "FROM public.users u, generate_series(1, 2) g"
        )
    # The order the documents are dealt out in: the known user first, then by email.
    emails = {user_id: f"user{i}@example.com" for i, user_id in enumerate(ids, 1)}
    return sorted(ids, key=lambda u: (emails[u] != KNOWN_EMAIL, emails[u]))


def _documents(
    cur: psycopg.Cursor[tuple[object, ...]], rnd: random.Random, user_ids: list[str], chunks: int
) -> tuple[list[Chunk], list[StoredObject]]:
    """Documents about a topic each, their chunks, and their files (the chunks' text)."""
    topics = list(TOPICS)
    rows: list[Chunk] = []
    objects: list[StoredObject] = []
    d = 0
    while len(rows) < chunks:
        user = user_ids[d % len(user_ids)]
        # The first user's first document is the revenue report the demo asks about.
        topic = topics[0] if d == 0 else rnd.choice(topics)
        key = f"{topic.replace(' ', '-')}-{d}.md"
        texts = [_chunk_text(rnd, topic) for _ in range(min(4, chunks - len(rows)))]
        data = (f"# {topic}\n\n" + "\n\n".join(texts) + "\n").encode()
        name = f"{user}/{key}"
        document = cur.execute(
            'INSERT INTO public.documents ("userId", location, key, size, checksum) '
            "VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (user, f"s3://{BUCKET}/{name}", key, len(data), hashlib.md5(data).hexdigest()),
        ).fetchone()
        assert document is not None
        doc_id = str(document[0])
        rows.extend(Chunk(f"{doc_id}-{c}", doc_id, user, t) for c, t in enumerate(texts))
        version = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
        objects.append(
            StoredObject(BUCKET, name, data, CONTENT_TYPE, CACHE_CONTROL, version, owner=user)
        )
        d += 1
    return rows, objects


def _copy_chunks(
    cur: psycopg.Cursor[tuple[object, ...]], rnd: random.Random, rows: list[Chunk]
) -> None:
    """The chunks with stale random vectors, which the re-index replaces."""
    with cur.copy(
        "COPY public.qckstrt_embeddings_vectors (id, document_id, user_id, content, embedding) "
        "FROM STDIN"
    ) as copy:
        for chunk in rows:
            stale = ",".join(f"{rnd.uniform(-1, 1):.4f}" for _ in range(384))
            copy.write_row(
                (chunk.id, chunk.document_id, chunk.user_id, chunk.content, f"[{stale}]")
            )


def _other_rows(cur: psycopg.Cursor[tuple[object, ...]]) -> None:
    cur.execute(
        "INSERT INTO public.audit_logs (user_id, action, details) "
        "SELECT u.id, 'upload', jsonb_build_object('n', g) "
        "FROM public.users u, generate_series(1, 3) g"
    )
    cur.execute("INSERT INTO public.counters (name) SELECT 'c' || g FROM generate_series(1, 50) g")
    cur.execute("INSERT INTO vault.secrets (name, secret) VALUES ('openai', 'sk-not-real')")


def roles_sql() -> str:
    """Cluster-wide roles, created once per server."""
    return "\n".join(
        f"DO $$ BEGIN CREATE ROLE {r} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;"
        for r in ROLES
    )
