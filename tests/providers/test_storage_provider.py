"""The storage step's dynamic provider, driven through ``python -m pulumi.dynamic`` over gRPC.

Secrets and both buckets are moto's (``moto.server`` on 127.0.0.1 through ``AWS_ENDPOINT_URL``);
the source database holds storage-api v1.11.8's schema and rows, the file backend a tmp tree;
the target (SSL-only, as RDS) is the one the step's check dials for its ``storage.objects``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from moto.server import ThreadedMotoServer

from migration.providers import PROVIDER_VERSION
from tests.databases import MASTER, Servers
from tests.migration.supabase_storage import (
    OBJECTS,
    insert_rows,
    install_storage_schema,
    write_files,
    xattrs_supported,
)
from tests.providers.host import ProviderHost, free_port

REGION = "us-east-1"
BUCKET = "qckstrt-storage-step-bucket"
SOURCE_KEY = "src-s3cr3t-Value-not-to-leak"


@dataclass
class StorageWorld:
    host: ProviderHost
    s3: Any
    source_arn: str
    source_url: str
    credentials_arn: str
    root: Path
    connection: dict[str, Any]
    master_password: str = ""

    def props(self, **overrides: Any) -> dict[str, Any]:
        props: dict[str, Any] = {
            "provider_version": PROVIDER_VERSION,
            **self.connection,
            "source_secret_arn": self.source_arn,
            "bucket": BUCKET,
            "region": REGION,
            "source_path": str(self.root),
            "after": {"import": "run-1"},
            # The files only; `test_storage_schema_carried_without_the_auth_step` carries it.
            "storage_schema": "skip",
        }
        return {**props, **overrides}

    def secrets(self) -> list[str]:
        password = self.source_url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
        return [password, self.source_url, SOURCE_KEY, self.master_password]


@pytest.fixture(scope="module")
def world(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StorageWorld]:
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
    }
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    sm = session.client("secretsmanager", endpoint_url=endpoint)
    s3 = session.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})

    servers.source.create_database("storage_provider")
    with servers.source.superuser("storage_provider") as conn:
        install_storage_schema(conn)
        insert_rows(conn, OBJECTS)
    source_url = servers.source.url("storage_provider")
    root = tmp_path_factory.mktemp("volumes") / "storage"
    (root / "stub").mkdir(parents=True)
    write_files(root, OBJECTS, xattrs=xattrs_supported(root))
    # The same objects in an S3-compatible store, for the S3 source.
    s3.create_bucket(Bucket="storage-step-old-storage")
    for obj in OBJECTS:
        s3.put_object(
            Bucket="storage-step-old-storage",
            Key=obj.key(),
            Body=obj.data,
            ContentType=obj.content_type,
            CacheControl=obj.cache_control,
        )
    source = sm.create_secret(Name="storage-step/source-database-url", SecretString=source_url)
    keys = sm.create_secret(
        Name="storage-step/source-storage-keys",
        SecretString=json.dumps({"accessKeyId": "AKIASRC", "secretAccessKey": SOURCE_KEY}),
    )
    target_db, _ = servers.target_db()
    master = sm.create_secret(
        Name="storage-step/rds-master",
        SecretString=json.dumps({"username": MASTER, "password": servers.master_password}),
    )
    connection = {
        "host": "127.0.0.1",
        "port": servers.proxy.port,
        "database": target_db,
        "master_secret_arn": master["ARN"],
        "ssl_mode": "require",
    }
    host = ProviderHost(env, tmp_path_factory.mktemp("storage-host"))
    try:
        yield StorageWorld(
            host,
            s3,
            source["ARN"],
            source_url,
            keys["ARN"],
            root,
            connection,
            servers.master_password,
        )
    finally:
        host.close()
        moto.stop()


def _assert_no_secret(world: StorageWorld, value: Any, where: str) -> None:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    for secret in world.secrets():
        assert secret not in text, f"a secret appears in {where}"


def _keys(world: StorageWorld, prefix: str) -> list[str]:
    listed = world.s3.list_object_versions(Bucket=BUCKET, Prefix=prefix).get("Versions", [])
    return sorted(v["Key"] for v in listed)


def test_check_names_bad_inputs_without_echoing_secrets(world: StorageWorld) -> None:
    bad = world.props(
        source_bucket="storage-step-old-storage",  # and source_path: two sources
        tenant="migration",
        bucket="Not_A_Bucket",
        source_credentials_secret_arn=SOURCE_KEY,  # the key pasted where its ARN belongs
        workers=0,
    )
    _, failures = world.host.check("StorageCopy", bad)
    named = {prop for prop, _ in failures}
    assert named == {
        "source_path",
        "tenant",
        "bucket",
        "source_credentials_secret_arn",
        "workers",
    }
    _assert_no_secret(world, failures, "check failures")
    inputs, failures = world.host.check("StorageCopy", world.props())
    assert failures == [] and inputs["tenant"] == "stub" and inputs["allow_missing"] is False


def test_create_copies_then_unchanged_inputs_do_nothing_and_after_reruns(
    world: StorageWorld,
) -> None:
    inputs, _ = world.host.check("StorageCopy", world.props())
    id_, outs = world.host.create("StorageCopy", inputs)
    assert id_ == f"storage:{BUCKET}/stub"
    assert (outs["objects"], outs["copied"], outs["already_there"]) == (
        len(OBJECTS),
        len(OBJECTS),
        0,
    )
    assert outs["missing"] == []
    # The check after the copy: every row's bytes at its key; the target has no storage schema.
    assert outs["storage_checked"] is True and outs["target_rows_compared"] is False
    assert outs["objects_in_bucket"] == outs["storage_rows"] == len(OBJECTS)
    assert (
        outs["bytes_in_bucket"] == outs["storage_rows_bytes"] == sum(len(o.data) for o in OBJECTS)
    )
    assert len(outs["storage_rows_checksum"]) == 32
    assert _keys(world, "stub/") == sorted(o.key() for o in OBJECTS)
    for obj in OBJECTS:
        got = world.s3.get_object(Bucket=BUCKET, Key=obj.key())
        assert got["Body"].read() == obj.data

    news = {k: outs[k] for k in inputs}
    assert not world.host.diff("StorageCopy", outs, news).some
    rerun = {**news, "after": {"import": "run-2"}}
    answer = world.host.diff("StorageCopy", outs, rerun)
    assert answer.some and answer.replaces == []
    again = world.host.update("StorageCopy", id_, outs, rerun)
    assert (again["copied"], again["already_there"]) == (0, len(OBJECTS))
    assert again["run_id"] == outs["run_id"], "nothing changed: later steps must not re-run"
    assert _keys(world, "stub/") == sorted(o.key() for o in OBJECTS), "duplicates"

    _check_looks_at_the_files_again(world, again["run_id"])

    world.host.delete("StorageCopy", id_, again)
    assert _keys(world, "stub/") == sorted(o.key() for o in OBJECTS), "delete must keep files"
    log = world.host.stderr()
    assert "info: storage copy: " in log and "are kept" in log
    _assert_no_secret(world, log, "provider host stderr")
    _assert_no_secret(world, again, "outputs")


def _check_looks_at_the_files_again(world: StorageWorld, storage_run: str) -> None:
    """MigrationCheck with the storage step's bucket: after verify(), the files again."""
    props = {
        "provider_version": PROVIDER_VERSION,
        **world.connection,
        "source_secret_arn": world.source_arn,
        "region": REGION,
        "bucket": BUCKET,
        "after": {"storage": storage_run},
    }
    inputs, failures = world.host.check("MigrationCheck", props)
    assert failures == [] and inputs["tenant"] == "stub"
    _, outs = world.host.create("MigrationCheck", inputs)
    assert outs["ok"] is True and outs["storage_checked"] is True
    assert outs["objects_in_bucket"] == len(OBJECTS)
    gone = OBJECTS[1]
    world.s3.delete_object(Bucket=BUCKET, Key=gone.key())  # a delete marker: the key is gone
    try:
        with pytest.raises(Exception) as failed:
            world.host.create("MigrationCheck", inputs)
        assert f"1 not in the bucket: '{gone.bucket_id}/{gone.name}'" in str(failed.value)
    finally:
        markers = world.s3.list_object_versions(Bucket=BUCKET, Prefix=gone.key())
        for marker in markers.get("DeleteMarkers", []):
            world.s3.delete_object(Bucket=BUCKET, Key=gone.key(), VersionId=marker["VersionId"])


def test_s3_compatible_source_with_keys_from_a_secret(world: StorageWorld) -> None:
    props = world.props(
        source_path="",
        source_bucket="storage-step-old-storage",
        source_credentials_secret_arn=world.credentials_arn,
        tenant="prod-tenant",
        source_tenant="stub",
    )
    inputs, failures = world.host.check("StorageCopy", props)
    assert failures == []
    _, outs = world.host.create("StorageCopy", inputs)
    assert (
        outs["copied"] == len(OBJECTS) and outs["source_backend"] == "s3://storage-step-old-storage"
    )
    assert _keys(world, "prod-tenant/") == sorted(o.key("prod-tenant") for o in OBJECTS)
    _assert_no_secret(world, outs, "outputs")
    _assert_no_secret(world, world.host.stderr(), "provider host stderr")


def test_missing_files_fail_the_step_by_name(world: StorageWorld, tmp_path: Path) -> None:
    empty = tmp_path / "storage"
    (empty / "stub").mkdir(parents=True)
    inputs, _ = world.host.check("StorageCopy", world.props(source_path=str(empty), tenant="t2"))
    with pytest.raises(Exception) as failed:
        world.host.create("StorageCopy", inputs)
    # The library's neutral setting, in the stack's words: the key that accepts the loss.
    assert OBJECTS[0].name in str(failed.value) and "storageAllowMissing" in str(failed.value)
    assert _keys(world, "t2/") == []
    _assert_no_secret(world, str(failed.value), "the error")


def test_storage_schema_carried_without_the_auth_step(
    world: StorageWorld, servers: Servers
) -> None:
    """`storage_schema` carry (the default) with the stack's storage admin secret: the step
    makes storage-api's roles itself, writes the password to the secret (never to outputs or
    logs) and carries schema storage, owned by supabase_storage_admin, before the files."""
    props = world.props(storage_schema="carry", tenant="carried", source_tenant="stub")
    _, failures = world.host.check("StorageCopy", props)
    assert [prop for prop, _ in failures] == ["password_secret_arn"]
    assert "storage_schema skip" in failures[0][1]

    sm = boto3.client(
        "secretsmanager",
        region_name=REGION,
        endpoint_url=world.s3.meta.endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    arn = sm.create_secret(Name="qckstrt/test/db-role-supabase-storage-admin")["ARN"]
    dbname, target_url = servers.target_db()
    props = {**props, "database": dbname, "password_secret_arn": arn}
    inputs, failures = world.host.check("StorageCopy", props)
    assert failures == []
    _, outs = world.host.create("StorageCopy", inputs)
    assert outs["schema_carried"] is True and outs["target_rows_compared"] is True
    assert outs["copied"] == len(OBJECTS) and outs["storage_checked"] is True
    password = json.loads(sm.get_secret_value(SecretId=arn)["SecretString"])["password"]
    with psycopg.connect(target_url) as conn:
        owner = conn.execute(
            "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'storage.objects'::regclass"
        ).fetchone()
        assert owner == ("supabase_storage_admin",)
        roles = conn.execute(
            "SELECT array_agg(rolname ORDER BY rolname) FROM pg_roles WHERE rolname = ANY(%s)",
            (["anon", "authenticated", "service_role", "authenticator", "supabase_storage_admin"],),
        ).fetchone()
        assert roles == (
            ["anon", "authenticated", "authenticator", "service_role", "supabase_storage_admin"],
        )
    for where, text in (("outputs", json.dumps(outs)), ("stderr", world.host.stderr())):
        assert password not in text, f"the storage admin's password appears in {where}"
