"""RDS posture per stack: encryption, SSL, protection, snapshots, monitoring."""

from __future__ import annotations

from tests.infra.program import ProgramRun, run_program

DB = "aws:rds/instance:Instance"
PARAMS = "aws:rds/parameterGroup:ParameterGroup"
KEY = "aws:kms/key:Key"


def _params(run: ProgramRun) -> dict[str, str]:
    group = run.one(PARAMS)
    assert group.inputs["family"] == "postgres16"
    return {p["name"]: p["value"] for p in group.inputs["parameters"]}


def test_storage_and_secret_encrypted_with_the_rotating_stack_key(each_stack: ProgramRun) -> None:
    db = each_stack.one(DB).inputs
    key = each_stack.one(KEY).inputs
    assert key["enableKeyRotation"] is True
    key_arn = each_stack.outputs["kmsKeyArn"]
    assert db["storageEncrypted"] is True
    assert db["kmsKeyId"] == key_arn
    assert db["masterUserSecretKmsKeyId"] == key_arn
    assert db["performanceInsightsKmsKeyId"] == key_arn
    assert db["storageType"] == "gp3"
    assert db["maxAllocatedStorage"] > db["allocatedStorage"]


def test_password_is_managed_by_rds_never_passed(each_stack: ProgramRun) -> None:
    db = each_stack.one(DB).inputs
    assert db["manageMasterUserPassword"] is True
    assert "password" not in db and "passwordWo" not in db
    assert each_stack.outputs["dbMasterSecretArn"].startswith("arn:aws:secretsmanager:")


def test_parameter_group_forces_ssl_and_sizes_maintenance_memory(each_stack: ProgramRun) -> None:
    params = _params(each_stack)
    assert params["rds.force_ssl"] == "1"
    assert int(params["maintenance_work_mem"]) >= 1024 * 1024  # KB: at least 1 GiB for HNSW
    assert int(params["log_min_duration_statement"]) > 0
    assert each_stack.one(DB).inputs["engineVersion"].split(".")[0] == "16"


def test_prod_is_multi_az_protected_and_keeps_a_unique_final_snapshot(prod: ProgramRun) -> None:
    db = prod.one(DB)
    assert db.inputs["multiAz"] is True
    assert db.inputs["deletionProtection"] is True
    assert db.inputs["skipFinalSnapshot"] is False
    assert db.protect is True
    assert prod.one(KEY).protect is True
    key_id = prod.one(KEY).inputs.get("keyId") or "1234abcd-12ab-34cd-56ef-1234567890ab"
    assert db.inputs["finalSnapshotIdentifier"].endswith(key_id.replace("-", ""))
    assert db.inputs["publiclyAccessible"] is False
    assert db.inputs["backupRetentionPeriod"] >= 7
    assert db.inputs["deleteAutomatedBackups"] is False
    assert db.inputs["applyImmediately"] is False


def test_staging_is_single_az_and_destroyable(staging: ProgramRun) -> None:
    db = staging.one(DB)
    assert db.inputs["multiAz"] is False
    assert db.inputs["deletionProtection"] is False
    assert db.inputs["skipFinalSnapshot"] is True
    assert "finalSnapshotIdentifier" not in db.inputs
    assert db.protect is False
    assert not any(r.protect for r in staging.resources)


def test_subnet_group_is_private_in_prod_public_only_where_allowed(
    staging: ProgramRun, prod: ProgramRun
) -> None:
    prod_subnets = prod.one("aws:rds/subnetGroup:SubnetGroup").inputs["subnetIds"]
    assert all("private" in s for s in prod_subnets) and len(prod_subnets) == 2
    staging_subnets = staging.one("aws:rds/subnetGroup:SubnetGroup").inputs["subnetIds"]
    assert all("public" in s for s in staging_subnets)
    assert staging.one(DB).inputs["publiclyAccessible"] is True


def test_private_staging_database_uses_private_subnets() -> None:
    run = run_program("staging", overrides={"dbPubliclyAccessible": False, "operatorCidrs": []})
    assert all(
        "private" in s for s in run.one("aws:rds/subnetGroup:SubnetGroup").inputs["subnetIds"]
    )
    assert run.one(DB).inputs["publiclyAccessible"] is False


def test_observability_is_on(each_stack: ProgramRun) -> None:
    db = each_stack.one(DB).inputs
    assert db["performanceInsightsEnabled"] is True
    assert db["monitoringInterval"] in (1, 5, 10, 15, 30, 60)
    role = each_stack.one("aws:iam/role:Role", "monitoring")
    assert "monitoring.rds.amazonaws.com" in role.inputs["assumeRolePolicy"]
    assert set(db["enabledCloudwatchLogsExports"]) >= {"postgresql"}
    assert db["iamDatabaseAuthenticationEnabled"] is True
    assert db["copyTagsToSnapshot"] is True


def test_instance_class_and_memory_follow_config() -> None:
    run = run_program(
        "staging",
        overrides={
            "dbInstanceClass": "db.r6g.xlarge",
            "dbMaintenanceWorkMemMb": 512,
            "dbBackupRetentionDays": 3,
        },
    )
    db = run.one(DB).inputs
    assert db["instanceClass"] == "db.r6g.xlarge"
    assert db["backupRetentionPeriod"] == 3
    assert _params(run)["maintenance_work_mem"] == str(512 * 1024)


def test_stack_outputs_name_the_database(each_stack: ProgramRun) -> None:
    out = each_stack.outputs
    assert out["dbPort"] == 5432
    assert out["dbName"] == "qckstrt"
    assert out["dbEndpoint"].endswith(".rds.amazonaws.com")
    assert len(out["privateSubnetIds"]) == 2


def test_key_deletion_window_follows_config(staging: ProgramRun, prod: ProgramRun) -> None:
    assert staging.one(KEY).inputs["deletionWindowInDays"] == 7
    assert prod.one(KEY).inputs["deletionWindowInDays"] == 30
    run = run_program("staging", overrides={"kmsKeyDeletionWindowDays": 14})
    assert run.one(KEY).inputs["deletionWindowInDays"] == 14
