"""Benchmark: the migration guide's dump-and-psql against `qckstrt-migrate import`.

Run by hand (results go in docs/benchmarks.md):

    .venv/bin/python bench/import.py [--users 20000] [--events 1000000] [--vectors 50000]

It starts two embedded PostgreSQL 16 servers (source and target, plain TCP on 127.0.0.1, fsync
on), generates a source database of at least a million rows with a 384-dimension vector table,
then times, into fresh target databases:

- the guide: ``pg_dump --no-owner -f dump.sql`` then ``psql -f dump.sql`` (PostgreSQL 16 binaries);
- this import: `migration.steps.transfer.import_database` (no backup), jobs=2;
- verification of this import, reported separately.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from migration.db.connection import Endpoint
from migration.dev.local import LocalPostgres, overlay_env
from migration.steps.extension import setup_extension
from migration.steps.transfer import ImportOptions, import_database
from migration.steps.verify import verify

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email varchar(255) NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE documents (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    "userId" uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    key text NOT NULL,
    size integer NOT NULL
);
CREATE TABLE audit_logs (
    id bigserial PRIMARY KEY,
    user_id uuid NOT NULL,
    action text NOT NULL,
    details jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_logs_user_idx ON audit_logs (user_id, created_at);
CREATE TABLE qckstrt_embeddings_vectors (
    id varchar(255) PRIMARY KEY,
    document_id varchar(255) NOT NULL,
    user_id varchar(255) NOT NULL,
    content text NOT NULL,
    embedding vector(384) NOT NULL,
    created_at timestamptz DEFAULT now()
);
CREATE INDEX qckstrt_embeddings_vectors_document_id_idx ON qckstrt_embeddings_vectors (document_id);
CREATE INDEX qckstrt_embeddings_vectors_user_id_idx ON qckstrt_embeddings_vectors (user_id);
"""

DATA = """
INSERT INTO users (email) SELECT 'u' || g || '@example.com' FROM generate_series(1, %(users)s) g;
INSERT INTO documents ("userId", key, size)
    SELECT id, 'doc-' || email, 1000 FROM users;
CREATE TEMP TABLE ids AS SELECT array_agg(id ORDER BY email) AS u FROM users;
INSERT INTO audit_logs (user_id, action, details, created_at)
    SELECT ids.u[1 + g %% %(users)s], 'login', jsonb_build_object('n', g),
           now() - g * interval '1 second'
    FROM ids, generate_series(1, %(events)s) g;
CREATE TEMP TABLE docs AS SELECT array_agg(id ORDER BY id) AS d,
    array_agg("userId" ORDER BY id) AS u FROM documents;
INSERT INTO qckstrt_embeddings_vectors (id, document_id, user_id, content, embedding)
    SELECT docs.d[1 + g %% %(users)s] || '-' || g, docs.d[1 + g %% %(users)s],
           docs.u[1 + g %% %(users)s], repeat('chunk text ', 40),
           (SELECT array_agg(random())::real[] FROM generate_series(1, 384)
            WHERE g IS NOT NULL)::vector
    FROM docs, generate_series(0, %(vectors)s - 1) g;
"""


def _run(args: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    subprocess.run(args, env=env, check=True, capture_output=True)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--vectors", type=int, default=50_000)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="qckstrt-bench-"))
    source = LocalPostgres(base / "source").start()
    target = LocalPostgres(base / "target").start()
    try:
        source.create_database("app")
        with source.superuser("app") as conn:
            started = time.monotonic()
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute(SCHEMA)
            psycopg.ClientCursor(conn).execute(
                DATA, {"users": args.users, "events": args.events, "vectors": args.vectors}
            )
            conn.execute("VACUUM ANALYZE")
            row = conn.execute("SELECT pg_size_pretty(pg_database_size('app'))").fetchone()
            rows = sum(
                int(str(r[0]))
                for r in conn.execute(
                    "SELECT n_live_tup FROM pg_stat_user_tables WHERE schemaname = 'public'"
                ).fetchall()
            )
            print(
                f"generated {rows:,} rows, {row[0] if row else '?'} "
                f"in {time.monotonic() - started:.1f}s",
                file=sys.stderr,
            )

        bin_dir = source.bin_dir
        env = overlay_env() | {"PGPASSWORD": source.superuser_password}
        dump = base / "dump.sql"
        target.create_database("guide")
        with target.superuser("guide") as conn:
            conn.execute("CREATE EXTENSION vector")  # as the guide does before restoring
        t_dump = _run(
            [
                str(bin_dir / "pg_dump"),
                "--no-owner",
                "--no-privileges",
                "-h",
                "127.0.0.1",
                "-p",
                str(source.port),
                "-U",
                "postgres",
                "-d",
                "app",
                "-f",
                str(dump),
            ],
            env,
        )
        env_t = overlay_env() | {"PGPASSWORD": target.superuser_password}
        t_psql = _run(
            [
                str(bin_dir / "psql"),
                "-q",
                "-v",
                "ON_ERROR_STOP=0",
                "-h",
                "127.0.0.1",
                "-p",
                str(target.port),
                "-U",
                "postgres",
                "-d",
                "guide",
                "-f",
                str(dump),
            ],
            env_t,
        )
        guide = t_dump + t_psql

        target.create_database("ours")
        url = target.create_master_role("master", "bench-pw", "ours")
        src, tgt = Endpoint(source.url("app"), "source"), Endpoint(url, "target")
        setup_extension(tgt, src)
        started = time.monotonic()
        report = import_database(src, tgt, ImportOptions(jobs=args.jobs))
        ours = time.monotonic() - started
        started = time.monotonic()
        checked = verify(src, tgt)
        t_verify = time.monotonic() - started
        result = {
            "rows": rows,
            "guide_seconds": {
                "pg_dump": round(t_dump, 2),
                "psql": round(t_psql, 2),
                "total": round(guide, 2),
            },
            "import_seconds": round(ours, 2),
            "import_steps": report.timings,
            "ratio": round(ours / guide, 3),
            "verify_seconds": round(t_verify, 2),
            "verified": checked.ok,
        }
        print(json.dumps(result, indent=2))
    finally:
        source.stop()
        target.stop()


if __name__ == "__main__":
    main()
