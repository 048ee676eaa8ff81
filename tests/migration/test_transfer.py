"""Step 2 end to end: Supabase-shaped source -> SSL-only target with a non-superuser master."""

from __future__ import annotations

import subprocess
from pathlib import Path

import boto3
import psycopg
import pytest
from moto import mock_aws
from psycopg import sql

from migration.db.connection import Endpoint
from migration.dev.local import overlay_env
from migration.errors import (
    PgDumpUnsuitable,
    SettingsChanged,
    TargetNotEmpty,
    UnknownSchema,
    VerificationFailed,
)
from migration.progress import LogReporter, NullReporter
from migration.steps.extension import setup_extension
from migration.steps.transfer import ImportOptions, import_database
from migration.steps.verify import verify
from tests.migration.conftest import Servers
from tests.migration.supabase_source import PUBLIC_TABLES, ROLES


def _prepare(source_url: str, target_url: str) -> tuple[Endpoint, Endpoint]:
    src, tgt = Endpoint(source_url, "source"), Endpoint(target_url, "target")
    setup_extension(tgt, src)
    return src, tgt


def _snapshot(url: str) -> tuple[set[str], set[str]]:
    """Schemas and tables of a database: what 'left unchanged' compares."""
    with psycopg.connect(url) as conn:
        schemas = {str(r[0]) for r in conn.execute("SELECT nspname FROM pg_namespace")}
        tables = {
            str(r[0])
            for r in conn.execute(
                "SELECT relnamespace::regnamespace || '.' || relname FROM pg_class "
                "WHERE relkind = 'r'"
            )
        }
    return schemas, tables


def test_import_makes_an_equal_usable_database(
    servers: Servers, source_url: str, target: tuple[str, str], tmp_path: Path
) -> None:
    _, url = target
    src, tgt = _prepare(source_url, url)
    with psycopg.connect(url) as conn:  # roles are cluster-wide: the auth tests may have made some
        roles_before = {str(r[0]) for r in conn.execute("SELECT rolname FROM pg_roles")}
    lines: list[str] = []
    report = import_database(
        src, tgt, ImportOptions(backup=str(tmp_path)), LogReporter(lines.append)
    )
    assert {t.table for t in report.tables} == set(PUBLIC_TABLES)
    left = {(lo.kind, lo.name) for lo in report.left_out}
    assert ("function", "public.vault_read_secret(secret_name text)") in left
    assert ("policy", "users.users_select_own") in left
    assert ("constraint", "users.users_auth_id_fkey") in left
    assert ("publication", "supabase_realtime") in left
    assert any("left out" in line for line in lines)
    assert verify(src, tgt).ok

    with psycopg.connect(url) as conn:  # fresh connection, default settings, master user
        schemas = {str(r[0]) for r in conn.execute("SELECT nspname FROM pg_namespace")}
        assert not schemas & {"auth", "storage", "vault"}
        roles = {str(r[0]) for r in conn.execute("SELECT rolname FROM pg_roles")}
        assert not (roles - roles_before) & set(ROLES)  # the import makes no Supabase role
        assert conn.execute("SELECT count(*) FROM pg_policy").fetchone() == (0,)
        funcs = {
            str(r[0])
            for r in conn.execute(
                "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
            )
        }
        assert "touch_updated_at" in funcs and "vault_read_secret" not in funcs
        uid = conn.execute(
            "INSERT INTO users (email) VALUES ('new@example.com') RETURNING id"
        ).fetchone()
        assert uid is not None and uid[0] is not None
        conn.execute("INSERT INTO audit_logs (action) VALUES ('x')")
        conn.execute("INSERT INTO counters (name) VALUES ('x')")
        vec = "[" + ",".join(["0.1"] * 384) + "]"
        conn.execute(
            "INSERT INTO qckstrt_embeddings_vectors (id, document_id, user_id, content, embedding)"
            " VALUES ('n-0', 'n', 'u', 'c', %s::vector)",
            (vec,),
        )
        rows = conn.execute(
            "SELECT id FROM qckstrt_embeddings_vectors ORDER BY embedding <=> %s::vector LIMIT 3",
            (vec,),
        ).fetchall()
        assert len(rows) == 3 and rows[0][0] == "n-0"
        doc = conn.execute('SELECT "userId" FROM documents LIMIT 1').fetchone()
        assert doc is not None
        conn.execute("DELETE FROM users WHERE id = %s", (doc[0],))
        assert conn.execute(
            'SELECT count(*) FROM documents WHERE "userId" = %s', (doc[0],)
        ).fetchone() == (0,)
    backups = list(tmp_path.glob("*/source.dump"))
    assert len(backups) == 1 and backups[0].stat().st_size > 0

    again = import_database(src, tgt, ImportOptions())
    assert again.resumed and again.already_complete


def test_backup_streams_to_s3_and_restores(
    servers: Servers, source_url: str, target: tuple[str, str]
) -> None:
    _, url = target
    src, tgt = _prepare(source_url, url)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="stack-bucket")
        report = import_database(
            src, tgt, ImportOptions(backup="s3://stack-bucket/migration/staging")
        )
        assert report.backup is not None
        key = report.backup.removeprefix("s3://stack-bucket/")
        assert key.startswith("migration/staging/") and key.endswith("/source.dump")
        body = s3.get_object(Bucket="stack-bucket", Key=key)["Body"].read()
    archive = servers.source.datadir.parent / f"restore-{len(body)}.dump"
    archive.write_bytes(body)
    scratch = f"scratch_{len(body)}"
    servers.source.create_database(scratch)
    with servers.source.superuser(scratch) as conn:  # what the dump expects to exist
        conn.execute(
            "CREATE SCHEMA extensions; CREATE EXTENSION vector SCHEMA extensions; "
            "CREATE FUNCTION extensions.uuid_generate_v4() RETURNS uuid LANGUAGE sql "
            "AS 'SELECT gen_random_uuid()'"
        )
    pg_restore = servers.source.bin_dir / "pg_restore"
    if report.pg_dump.startswith("18"):
        pg_restore = Path(report.pg_dump.split("(", 1)[1].rstrip(")")).with_name("pg_restore")
    # Plain server (no SSL), the wheel's pg_restore; errors on Supabase-only objects are expected.
    subprocess.run(
        [
            str(pg_restore),
            "--no-owner",
            "--no-privileges",
            "-h",
            "127.0.0.1",
            "-p",
            str(servers.source.port),
            "-U",
            "postgres",
            "-d",
            scratch,
            str(archive),
        ],
        env=overlay_env() | {"PGPASSWORD": servers.source.superuser_password},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    for table in PUBLIC_TABLES:
        query = sql.SQL("SELECT count(*) FROM public.{}").format(sql.Identifier(table))
        with psycopg.connect(servers.source.url(scratch)) as conn:
            restored = conn.execute(query).fetchone()
        with psycopg.connect(source_url) as conn:
            assert conn.execute(query).fetchone() == restored, table
    servers.source.drop_database(scratch)


class _Interrupt(Exception):
    pass


class _StopAfter(NullReporter):
    """Interrupts the import right after the first table was committed."""

    def finish(self, key: str, message: str | None = None) -> None:
        if key.startswith("copy:"):
            raise _Interrupt(key)


def test_interrupted_import_resumes_and_verify_refuses_partial(
    servers: Servers, source_url: str, target: tuple[str, str]
) -> None:
    _, url = target
    src, tgt = _prepare(source_url, url)
    with pytest.raises(_Interrupt):
        import_database(src, tgt, ImportOptions(jobs=1), _StopAfter())
    with pytest.raises(VerificationFailed, match="incomplete"):
        verify(src, tgt)
    with pytest.raises(SettingsChanged, match="schemas"):
        import_database(src, tgt, ImportOptions(schemas=["public", "extensions"]))
    resumed = import_database(src, tgt, ImportOptions())
    assert resumed.resumed
    statuses = {t.status for t in resumed.tables}
    assert statuses == {"copied", "copied earlier"}
    assert verify(src, tgt).ok
    restarted = import_database(src, tgt, ImportOptions(restart=True))
    assert not restarted.resumed and set(restarted.discarded) >= {"public.users"}
    assert verify(src, tgt).ok


def test_non_empty_target_is_refused_unchanged_or_replaced(
    servers: Servers, source_url: str, target: tuple[str, str], tmp_path: Path
) -> None:
    _, url = target
    src, tgt = _prepare(source_url, url)
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE public.users (id int PRIMARY KEY, note text)")
        conn.execute("INSERT INTO public.users VALUES (1, 'keep me')")
    before = _snapshot(url)
    with pytest.raises(TargetNotEmpty, match=r"public\.users"):
        import_database(src, tgt, ImportOptions())
    assert _snapshot(url) == before
    dry = import_database(
        src, tgt, ImportOptions(dry_run=True, on_existing="replace", backup=str(tmp_path))
    )
    assert dry.dry_run and {t.table for t in dry.tables} == set(PUBLIC_TABLES)
    assert not list(tmp_path.iterdir())  # a dry run writes no backup either
    assert _snapshot(url) == before
    report = import_database(src, tgt, ImportOptions(on_existing="replace", backup=str(tmp_path)))
    assert report.discarded == ["public.users"]
    assert list(tmp_path.glob("*/target/public.users.copy"))
    assert verify(src, tgt).ok


def test_unknown_schema_and_old_pg_dump_leave_target_unchanged(
    servers: Servers, source_url: str, target: tuple[str, str], tmp_path: Path
) -> None:
    _, url = target
    src, tgt = _prepare(source_url, url)
    before = _snapshot(url)
    with pytest.raises(UnknownSchema, match="nope"):
        import_database(src, tgt, ImportOptions(schemas=["public", "nope"]))
    fake = tmp_path / "pg_dump"
    fake.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 12.0'\n")
    fake.chmod(0o755)
    with pytest.raises(PgDumpUnsuitable, match=r"12\.0.*older.*PostgreSQL 16"):
        import_database(src, tgt, ImportOptions(pg_dump=str(fake)))
    with pytest.raises(PgDumpUnsuitable, match="16"):
        import_database(src, tgt, ImportOptions(pg_dump="/usr/bin/pg_dump"))
    assert _snapshot(url) == before


def test_replace_never_drops_what_it_was_not_asked_to(
    servers: Servers, source_url: str, target: tuple[str, str], tmp_path: Path
) -> None:
    from migration.errors import PreflightError

    _, url = target
    src, tgt = _prepare(source_url, url)
    with psycopg.connect(url, autocommit=True) as conn:  # the target's own objects
        conn.execute(
            "CREATE TABLE public.users (id uuid PRIMARY KEY, email text);"
            "CREATE VIEW public.user_emails AS SELECT email FROM public.users;"
            "CREATE TABLE public.notes (id int, user_id uuid REFERENCES public.users(id))"
        )
    before = _snapshot(url)
    replace = ImportOptions(on_existing="replace", backup=str(tmp_path))
    with pytest.raises(PreflightError) as info:
        import_database(src, tgt, replace)
    message = str(info.value)
    assert "view public.user_emails" in message and "on public.notes" in message
    assert "nothing was changed" in message
    assert _snapshot(url) == before
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP VIEW public.user_emails; DROP TABLE public.notes")
    assert import_database(src, tgt, replace).discarded == ["public.users"]
    assert verify(src, tgt).ok

    # Over an earlier import too: a view the app added since is named, not dropped.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE VIEW public.recent_docs AS SELECT id FROM public.documents")
    with pytest.raises(PreflightError, match="recent_docs"):
        import_database(src, tgt, ImportOptions(on_existing="replace", backup=str(tmp_path)))
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT to_regclass('public.recent_docs')").fetchone() != (None,)
    assert verify(src, tgt).ok
