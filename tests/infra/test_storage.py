"""The bucket's six protections, per stack."""

from __future__ import annotations

import json

from tests.infra.program import ProgramRun, run_program


def _bucket_name(run: ProgramRun) -> str:
    return str(run.outputs["bucketName"])


def test_public_access_fully_blocked(each_stack: ProgramRun) -> None:
    block = each_stack.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    assert block["bucket"] == _bucket_name(each_stack)
    for flag in (
        "blockPublicAcls",
        "blockPublicPolicy",
        "ignorePublicAcls",
        "restrictPublicBuckets",
    ):
        assert block[flag] is True, flag


def test_acls_disabled(each_stack: ProgramRun) -> None:
    ownership = each_stack.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls").inputs
    assert ownership["rule"]["objectOwnership"] == "BucketOwnerEnforced"


def test_sse_kms_with_stack_key_and_bucket_key(each_stack: ProgramRun) -> None:
    sse = each_stack.one(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    ).inputs
    rule = sse["rules"][0]
    assert rule["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "aws:kms"
    assert (
        rule["applyServerSideEncryptionByDefault"]["kmsMasterKeyId"]
        == each_stack.outputs["kmsKeyArn"]
    )
    assert rule["bucketKeyEnabled"] is True


def test_versioning_enabled(each_stack: ProgramRun) -> None:
    versioning = each_stack.one("aws:s3/bucketVersioning:BucketVersioning").inputs
    assert versioning["versioningConfiguration"]["status"] == "Enabled"


def test_policy_denies_plain_http(each_stack: ProgramRun) -> None:
    policy = json.loads(each_stack.one("aws:s3/bucketPolicy:BucketPolicy").inputs["policy"])
    [statement] = policy["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Principal"] == "*"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    arn = f"arn:aws:s3:::{_bucket_name(each_stack)}"
    assert set(statement["Resource"]) == {arn, f"{arn}/*"}


def _expiry(run: ProgramRun) -> int:
    lifecycle = run.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs
    [rule] = [r for r in lifecycle["rules"] if r["filter"].get("prefix") == "migration/"]
    assert rule["status"] == "Enabled"
    return int(rule["expiration"]["days"])


def test_migration_dumps_expire_after_configured_days(
    staging: ProgramRun, prod: ProgramRun
) -> None:
    assert _expiry(staging) == 14
    assert _expiry(prod) == 90
    assert _expiry(run_program("staging", overrides={"migrationObjectExpirationDays": 3})) == 3


def test_staging_force_destroys_prod_protects(staging: ProgramRun, prod: ProgramRun) -> None:
    staging_bucket = staging.one("aws:s3/bucket:Bucket")
    prod_bucket = prod.one("aws:s3/bucket:Bucket")
    assert staging_bucket.inputs["forceDestroy"] is True and not staging_bucket.protect
    assert prod_bucket.inputs["forceDestroy"] is False and prod_bucket.protect
