"""A Supabase-shaped QCKSTRT database, generated: the demo's source, and the tests' schema.

It carries what matters to the import: Supabase's roles and schemas (`auth`, `storage`, `vault`,
`extensions` holding `vector` and a `uuid_generate_v4()` stand-in, as uuid-ossp is missing from the
embedded server), RLS policies calling `auth.uid()`, the vault helpers in `public`, a foreign key
into `auth.users`, a publication, grants to Supabase roles, and QCKSTRT's tables (DESIGN.md §2).

Why generated text rather than lorem ipsum: the demo ends with a RAG retrieval, which is only
convincing when the chunks are about something. Each document is about one topic of a small
office's life (revenue, hiring, security, ...), split into ~1,000-character chunks as the app's
splitter makes them, with stale random vectors that the re-index replaces.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import psycopg

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

SCHEMA_SQL = r"""
CREATE SCHEMA extensions;
CREATE SCHEMA auth;
CREATE SCHEMA storage;
CREATE SCHEMA vault;
CREATE EXTENSION vector SCHEMA extensions;
CREATE FUNCTION extensions.uuid_generate_v4() RETURNS uuid LANGUAGE sql VOLATILE
    AS 'SELECT pg_catalog.gen_random_uuid()';

CREATE TABLE auth.users (
    id uuid PRIMARY KEY DEFAULT extensions.uuid_generate_v4(),
    email text NOT NULL
);
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid
$$;
CREATE TABLE storage.buckets (id text PRIMARY KEY, name text NOT NULL);
CREATE TABLE vault.secrets (
    id uuid PRIMARY KEY DEFAULT extensions.uuid_generate_v4(),
    name text UNIQUE,
    secret text
);
CREATE VIEW vault.decrypted_secrets AS
    SELECT id, name, secret AS decrypted_secret FROM vault.secrets;

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
CREATE TABLE public.qckstrt_embeddings_vectors (
    id varchar(255) PRIMARY KEY,
    document_id varchar(255) NOT NULL,
    user_id varchar(255) NOT NULL,
    content text NOT NULL,
    embedding extensions.vector(384) NOT NULL,
    created_at timestamptz DEFAULT now()
);
CREATE INDEX qckstrt_embeddings_vectors_document_id_idx
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


def seed(conn: psycopg.Connection[tuple[object, ...]], chunks: int, rng_seed: int = 7) -> int:
    """Create the schema and generated data in `conn`'s database (a superuser's); return users.

    About four chunks per document and five documents per user, so `chunks` sets the size.
    """
    rnd = random.Random(rng_seed)
    conn.execute(roles_sql())
    conn.execute(SCHEMA_SQL)
    users = max(1, chunks // 20)
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO auth.users (email) SELECT 'user' || g || '@example.com' "
            "FROM generate_series(1, %s) g",
            (users,),
        )
        cur.execute(
            'INSERT INTO public.users (email, "firstName", auth_id, created_at) '
            "SELECT a.email, 'First ' || a.email, a.id, now() - random() * interval '90 days' "
            "FROM auth.users a ORDER BY a.email"
        )
        cur.execute(
            'INSERT INTO public.user_profiles ("userId", bio) '
            "SELECT id, 'bio of ' || email FROM public.users"
        )
        cur.execute(
            'INSERT INTO public.user_sessions ("userId", token, expires_at) '
            "SELECT u.id, md5(u.id::text || g), now() + g * interval '1 hour' "
            "FROM public.users u, generate_series(1, 2) g"
        )
        user_ids = [
            str(r[0])
            for r in cur.execute(
                "SELECT id FROM public.users ORDER BY (email = 'user1@example.com') DESC, email"
            ).fetchall()
        ]
        topics = list(TOPICS)
        rows: list[Chunk] = []
        documents: list[tuple[str, str, str, int]] = []
        d = 0
        while len(rows) < chunks:
            user = user_ids[d % len(user_ids)]
            # The first user's first document is the revenue report the demo asks about.
            topic = topics[0] if d == 0 else rnd.choice(topics)
            key = f"{topic.replace(' ', '-')}-{d}.pdf"
            document = cur.execute(
                'INSERT INTO public.documents ("userId", location, key, size, checksum) '
                "VALUES (%s, %s, %s, %s, md5(%s)) RETURNING id",
                (user, f"s3://files/{user}/{key}", key, rnd.randint(10_000, 900_000), key),
            ).fetchone()
            assert document is not None
            doc_id = str(document[0])
            documents.append((doc_id, user, topic, d))
            for c in range(min(4, chunks - len(rows))):
                rows.append(Chunk(f"{doc_id}-{c}", doc_id, user, _chunk_text(rnd, topic)))
            d += 1
        with cur.copy(
            "COPY public.qckstrt_embeddings_vectors (id, document_id, user_id, content, embedding) "
            "FROM STDIN"
        ) as copy:
            for chunk in rows:
                stale = ",".join(f"{rnd.uniform(-1, 1):.4f}" for _ in range(384))
                copy.write_row(
                    (chunk.id, chunk.document_id, chunk.user_id, chunk.content, f"[{stale}]")
                )
        cur.execute(
            "INSERT INTO public.audit_logs (user_id, action, details) "
            "SELECT u.id, 'upload', jsonb_build_object('n', g) "
            "FROM public.users u, generate_series(1, 3) g"
        )
        cur.execute(
            "INSERT INTO public.counters (name) SELECT 'c' || g FROM generate_series(1, 50) g"
        )
        cur.execute("INSERT INTO vault.secrets (name, secret) VALUES ('openai', 'sk-not-real')")
        cur.execute("INSERT INTO storage.buckets VALUES ('files', 'files')")
    conn.execute("ANALYZE")
    return users


def roles_sql() -> str:
    """Cluster-wide roles, created once per server."""
    return "\n".join(
        f"DO $$ BEGIN CREATE ROLE {r} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;"
        for r in ROLES
    )
