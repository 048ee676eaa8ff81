"""The tests' Supabase-shaped source: the package's schema with bulk, uniform data.

The schema (roles, Supabase schemas, policies, QCKSTRT's tables) is `migration.dev.demo_data`'s, so
the demo and the tests import the same shape; the data here is cheap to generate in bulk.
"""

from __future__ import annotations

from migration.dev.demo_data import PUBLIC_TABLES, ROLES, SCHEMA_SQL, roles_sql

__all__ = ["DATA_SQL", "PUBLIC_TABLES", "ROLES", "SCHEMA_SQL", "roles_sql"]

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
