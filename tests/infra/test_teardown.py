"""`pulumi destroy`: staging tears down completely and comes back; prod refuses where data lives."""

from __future__ import annotations

import time

import pytest

from migration.providers import PROVIDERS
from tests.infra.program import ProgramRun, Registered, run_program

DB = "aws:rds/instance:Instance"
BUCKET = "aws:s3/bucket:Bucket"
KEY = "aws:kms/key:Key"
SECRET = "aws:secretsmanager/secret:Secret"
STEP_PREFIX = "pulumi-python:dynamic/qckstrt:"

#: Physical names the next `pulumi up` reuses after a destroy: each must be free again by then.
NAMED = {
    SECRET: "name",
    "aws:kms/alias:Alias": "name",
    "aws:rds/parameterGroup:ParameterGroup": "name",
    "aws:rds/subnetGroup:SubnetGroup": "name",
    "aws:iam/role:Role": "name",
    "aws:iam/instanceProfile:InstanceProfile": "name",
    "aws:sns/topic:Topic": "name",
}


def _physical_names(run: ProgramRun) -> set[tuple[str, str]]:
    return {
        (r.type, str(r.inputs[field]))
        for r in run.resources
        for typ, field in NAMED.items()
        if r.type == typ and field in r.inputs
    }


def test_staging_destroys_completely(staging: ProgramRun) -> None:
    assert not [r.name for r in staging.resources if r.protect]
    db = staging.one(DB).inputs
    assert db["deletionProtection"] is False and db["skipFinalSnapshot"] is True
    assert staging.one(BUCKET).inputs["forceDestroy"] is True
    assert {s.inputs["recoveryWindowInDays"] for s in staging.of_type(SECRET)} == {0}
    assert staging.one(KEY).inputs["deletionWindowInDays"] == 7


def test_staging_comes_back_under_the_same_names(staging: ProgramRun) -> None:
    # Secrets are deleted without a recovery window and nothing keeps a name reserved, so a
    # second `up` after `destroy` declares the very same physical names, and they are free.
    again = run_program("staging")
    names = _physical_names(staging)
    assert names and names == _physical_names(again)
    assert ("aws:secretsmanager/secret:Secret", "qckstrt/staging/app-config") in names


def _protected(run: ProgramRun) -> set[str]:
    return {r.type for r in run.resources if r.protect}


def test_prod_refuses_destroy_exactly_where_data_lives() -> None:
    run = run_program("prod", overrides={"migrationEnabled": True})
    assert _protected(run) == {DB, BUCKET, KEY, SECRET}
    db = run.one(DB).inputs
    assert db["deletionProtection"] is True and db["skipFinalSnapshot"] is False
    assert db["finalSnapshotIdentifier"]
    steps: list[Registered] = [r for r in run.resources if r.type.startswith(STEP_PREFIX)]
    assert len(steps) == 4 and not any(s.protect for s in steps)


@pytest.mark.parametrize("kind", sorted(PROVIDERS))
def test_data_step_delete_keeps_data_and_needs_no_database(kind: str) -> None:
    # As a staging destroy calls it: the instance may already be deleted, its secret gone.
    props = {
        "host": "qckstrt-staging.gone.us-east-1.rds.amazonaws.com",
        "port": 5432,
        "database": "qckstrt",
        "master_secret_arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:gone-AbCdEf",
        "run_id": "abc",
    }
    began = time.monotonic()
    PROVIDERS[kind]().delete(f"{kind}-id", props)
    assert time.monotonic() - began < 5
