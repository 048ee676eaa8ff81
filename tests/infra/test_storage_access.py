"""storage-api's policy: its own prefix of the bucket, the stack key through S3, nothing else."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.settings import SettingsError
from tests.infra.helpers import unwrap
from tests.infra.program import ProgramRun, run_program, walk_strings

POLICY = "aws:iam/policy:Policy"
VERSION = "aws:secretsmanager/secretVersion:SecretVersion"


def _document(run: ProgramRun) -> dict[str, Any]:
    return dict(json.loads(run.one(POLICY, "storage-api").inputs["policy"]))


def _statement(doc: dict[str, Any], sid: str) -> dict[str, Any]:
    return next(s for s in doc["Statement"] if s["Sid"] == sid)


def test_storage_api_reads_and_writes_only_its_tenant_prefix(each_stack: ProgramRun) -> None:
    doc = _document(each_stack)
    bucket_arn = f"arn:aws:s3:::{each_stack.outputs['bucketName']}"
    objects = _statement(doc, "TenantObjects")
    assert objects["Resource"] == f"{bucket_arn}/stub/*"
    assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"} <= set(objects["Action"])
    listing = _statement(doc, "ListTenantPrefix")
    assert listing["Resource"] == bucket_arn
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["stub/*"]}}
    for st in doc["Statement"]:
        assert st["Effect"] == "Allow"
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        assert not any(a == "*" or a.endswith(":*") for a in actions), st["Sid"]
        assert "migration/" not in json.dumps(st["Resource"]), "the dumps are not storage-api's"


def test_the_stack_key_only_through_s3(each_stack: ProgramRun) -> None:
    kms = _statement(_document(each_stack), "StackKeyThroughS3")
    assert kms["Resource"] == each_stack.outputs["kmsKeyArn"]
    assert set(kms["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey"}
    assert kms["Condition"] == {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}


def test_policy_is_exported_by_arn_and_named_for_the_deploy_role(each_stack: ProgramRun) -> None:
    policy = each_stack.one(POLICY, "storage-api")
    assert policy.inputs["name"] == f"qckstrt-{each_stack.stack}-storage-api"
    assert each_stack.outputs["storageApiPolicyArn"] == (
        f"arn:aws:iam::123456789012:policy/qckstrt-{each_stack.stack}-storage-api"
    )


def test_app_config_tells_storage_api_where_its_files_are(each_stack: ProgramRun) -> None:
    config = json.loads(unwrap(each_stack.one(VERSION, "app-config").inputs["secretString"]))
    assert config["STORAGE_BACKEND"] == "s3"
    assert config["GLOBAL_S3_BUCKET"] == each_stack.outputs["bucketName"]
    assert config["TENANT_ID"] == "stub"
    assert config["REGION"] == "us-east-1"


def test_tenant_id_flows_into_policy_and_app_config() -> None:
    run = run_program("staging", overrides={"storageTenantId": "qckstrt-prod"})
    assert _statement(_document(run), "TenantObjects")["Resource"].endswith("/qckstrt-prod/*")
    config = json.loads(unwrap(run.one(VERSION, "app-config").inputs["secretString"]))
    assert config["TENANT_ID"] == "qckstrt-prod"


def test_a_tenant_id_that_is_not_one_key_segment_is_refused() -> None:
    for bad in ("migration", "a/b", ""):
        with pytest.raises(SettingsError) as info:
            run_program("staging", overrides={"storageTenantId": bad})
        assert "storageTenantId" in str(info.value), bad


STORAGE_STEP = "pulumi-python:dynamic/qckstrt:StorageCopy"
KEYS_JSON = '{"accessKeyId": "AKIASRC", "secretAccessKey": "srcS3cr3tKey-77"}'


def test_no_storage_step_unless_a_source_backend_is_named(staging: ProgramRun) -> None:
    assert staging.of_type(STORAGE_STEP) == []


def test_storage_step_runs_between_import_and_reindex_from_the_file_backend() -> None:
    run = run_program("staging", overrides={"storageSourcePath": "/mnt/supabase/storage"})
    step = run.one(STORAGE_STEP)
    imp = run.one("pulumi-python:dynamic/qckstrt:DataImport")
    reindex = run.one("pulumi-python:dynamic/qckstrt:Reindex")
    check = run.one("pulumi-python:dynamic/qckstrt:MigrationCheck")
    assert imp.urn in step.dependencies and imp.urn in step.property_dependencies["after"]
    assert step.urn in reindex.dependencies
    assert step.urn in check.property_dependencies["after"]
    inputs = step.inputs
    assert inputs["bucket"] == run.outputs["bucketName"]
    assert (inputs["tenant"], inputs["region"]) == ("stub", "us-east-1")
    assert (inputs["source_path"], inputs["source_bucket"]) == ("/mnt/supabase/storage", "")
    assert inputs["allow_missing"] is False
    assert inputs["source_secret_arn"].startswith("arn:aws:secretsmanager:")
    assert inputs["master_secret_arn"] == check.inputs["master_secret_arn"]  # it checks the target
    # The check after the re-index looks at the files again, in the same bucket and tenant.
    assert (check.inputs["bucket"], check.inputs["tenant"]) == (run.outputs["bucketName"], "stub")


def test_s3_source_keys_go_to_their_own_secret_and_the_step_gets_its_arn() -> None:
    run = run_program(
        "staging",
        overrides={"storageSourceBucket": "old-storage", "storageSourceEndpoint": "https://minio"},
        secrets={
            "sourceDatabaseUrl": "postgresql://u:p@h/db",
            "storageSourceCredentials": KEYS_JSON,
        },
    )
    secret = run.one("aws:secretsmanager/secret:Secret", "source-storage-credentials")
    assert secret.inputs["name"] == "qckstrt/staging/source-storage-credentials"
    assert secret.inputs["kmsKeyId"] == run.outputs["kmsKeyArn"]
    step = run.one(STORAGE_STEP).inputs
    assert step["source_credentials_secret_arn"].startswith(
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:qckstrt/staging/source-storage"
    )
    assert (step["source_bucket"], step["source_endpoint"]) == ("old-storage", "https://minio")
    for resource in run.resources:
        for text, inside_secret in walk_strings(resource.raw):
            if "srcS3cr3tKey-77" in text:
                assert inside_secret, f"{resource.type} {resource.name} exposes the source key"


@pytest.mark.parametrize(
    ("overrides", "secrets", "key"),
    [
        ({"storageSourcePath": "/a", "storageSourceBucket": "b-old"}, {}, "storageSourcePath"),
        ({"storageSourceEndpoint": "https://minio"}, {}, "storageSourceEndpoint"),
        ({}, {"storageSourceCredentials": KEYS_JSON}, "storageSourceCredentials"),
    ],
)
def test_storage_source_settings_that_contradict_are_refused(
    overrides: dict[str, str], secrets: dict[str, str], key: str
) -> None:
    with pytest.raises(SettingsError) as info:
        run_program(
            "staging",
            overrides=overrides,
            secrets={"sourceDatabaseUrl": "postgresql://u:p@h/db", **secrets},
        )
    assert key in str(info.value)
