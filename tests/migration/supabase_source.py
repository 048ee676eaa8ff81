"""A Supabase-shaped source database, written for the tests.

It carries what matters to the import: Supabase's roles and schemas (`auth`, `storage`, `vault`,
`extensions` holding `vector` and a `uuid_generate_v4()` stand-in, as uuid-ossp is missing from the
embedded server), RLS policies calling `auth.uid()`, the vault helpers in `public`, a foreign key
into `auth.users`, a publication, grants to Supabase roles, and QCKSTRT's tables with a few
thousand rows, 384-dimension embeddings, a bigserial and an identity column.
"""

from __future__ import annotations

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

DATA_SQL = r"""
INSERT INTO auth.users (email)
    SELECT 'user' || g || '@example.com' FROM generate_series(1, %(users)s) g;
INSERT INTO public.users (email, "firstName", auth_id, created_at)
    SELECT a.email, 'First ' || row_number() OVER (), a.id, now() - random() * interval '90 days'
    FROM auth.users a;
INSERT INTO public.user_profiles ("userId", bio) SELECT id, 'bio of ' || email FROM public.users;
INSERT INTO public.user_sessions ("userId", token, expires_at)
    SELECT u.id, md5(u.id::text || g), now() + g * interval '1 hour'
    FROM public.users u, generate_series(1, 2) g;
INSERT INTO public.documents ("userId", location, key, size, checksum)
    SELECT u.id, 's3://files/' || u.id, 'doc-' || g, (random() * 100000)::int, md5(u.id::text || g)
    FROM public.users u, generate_series(1, 2) g;
INSERT INTO public.audit_logs (user_id, action, details)
    SELECT u.id, 'login', jsonb_build_object('n', g, 'ip', '10.0.0.' || g)
    FROM public.users u, generate_series(1, 3) g;
INSERT INTO public.counters (name) SELECT 'c' || g FROM generate_series(1, 50) g;
INSERT INTO public.qckstrt_embeddings_vectors (id, document_id, user_id, content, embedding)
    SELECT d.id || '-' || c, d.id, d."userId", 'chunk ' || c || ' of ' || d.key,
           (SELECT array_agg(random())::real[] FROM generate_series(1, 384)
            WHERE d.id IS NOT NULL)::extensions.vector
    FROM (SELECT * FROM public.documents LIMIT %(docs)s) d, generate_series(0, 1) c;
INSERT INTO vault.secrets (name, secret) VALUES ('openai', 'sk-not-real');
INSERT INTO storage.buckets VALUES ('files', 'files');
"""


def roles_sql() -> str:
    """Cluster-wide roles, created once per server."""
    return "\n".join(
        f"DO $$ BEGIN CREATE ROLE {r} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;"
        for r in ROLES
    )
