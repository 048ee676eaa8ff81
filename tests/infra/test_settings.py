"""Settings: one registry, Pulumi.yaml and README agree with it, bad values name their key."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.settings import KEYS, SettingsError
from tests.infra.program import ROOT, run_program, stack_config


def test_pulumi_yaml_declares_every_key_with_type_and_default() -> None:
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == "qckstrt"
    assert project["main"] == "infra/"
    assert project["runtime"]["name"] == "python"
    assert project["runtime"]["options"]["virtualenv"] == ".venv"
    declared = project["config"]
    assert set(declared) == {k.name for k in KEYS}
    for key in KEYS:
        entry = declared[key.name]
        assert entry["type"] == key.type, key.name
        assert entry["default"] == key.default, key.name
        assert entry["description"] == key.description, key.name


def test_stack_files_use_only_declared_keys_and_no_plaintext_secret() -> None:
    names = {k.name for k in KEYS}
    for stack in ("staging", "prod"):
        raw = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
        for full_key, value in raw.items():
            namespace, key = full_key.split(":", 1)
            assert namespace in ("qckstrt", "aws"), full_key
            if namespace == "aws":
                assert key == "region"
                continue
            assert key in names, full_key
            if any(k.secret for k in KEYS if k.name == key):
                assert isinstance(value, dict) and "secure" in value, full_key
        assert "aws:region" in raw


def test_readme_documents_every_key() -> None:
    readme = (ROOT / "README.md").read_text()
    for key in KEYS:
        assert re.search(rf"^\| `{key.name}` \|", readme, re.M), f"README lacks {key.name}"


def _fails(stack: str, overrides: dict[str, Any], secrets: dict[str, str] | None = None) -> str:
    with pytest.raises(SettingsError) as info:
        run_program(stack, overrides=overrides, secrets=secrets)
    return str(info.value)


BAD = [
    ("staging", {"vectorDimensions": 768}, "vectorDimensions", "does not match model"),
    ("staging", {"embeddingModel": "BAAI/bge-base-en-v1.5"}, "vectorDimensions", "(768)"),
    ("prod", {"dbDeletionProtection": False}, "dbDeletionProtection", "deletion protection"),
    ("prod", {"dbMultiAz": False}, "dbMultiAz", "Multi-AZ"),
    ("prod", {"dbSkipFinalSnapshot": True}, "dbSkipFinalSnapshot", "final snapshot"),
    ("prod", {"protectStatefulResources": False}, "protectStatefulResources", "protected"),
    (
        "prod",
        {"dbPubliclyAccessible": True, "operatorCidrs": ["198.51.100.7/32"]},
        "dbPubliclyAccessible",
        "publicly accessible",
    ),
    ("prod", {"bucketForceDestroy": True}, "bucketForceDestroy", "deleted"),
    ("prod", {"secretRecoveryWindowDays": 0}, "secretRecoveryWindowDays", "recovery window"),
    ("staging", {"operatorCidrs": ["10.0.0.300/32"]}, "operatorCidrs", "not a valid CIDR"),
    ("staging", {"operatorCidrs": ["0.0.0.0/0"]}, "operatorCidrs", "whole internet"),
    ("staging", {"operatorCidrs": ["10.0.0.0/8"]}, "operatorCidrs", "wider than /16"),
    ("staging", {"operatorCidrs": []}, "operatorCidrs", "no operator CIDR"),
    ("staging", {"vpcCidr": "8.8.0.0/16"}, "vpcCidr", "not a private range"),
    ("staging", {"vpcCidr": "10.0.0.0/8"}, "vpcCidr", "outside /16../24"),
    ("staging", {"dbEngineVersion": "15.4"}, "dbEngineVersion", "PostgreSQL 16"),
    ("staging", {"dbInstanceClass": "t4g.medium"}, "dbInstanceClass", "instance class"),
    ("staging", {"dbMaxAllocatedStorageGb": 20}, "dbMaxAllocatedStorageGb", "autoscaling"),
    ("staging", {"dbName": "Qckstrt-DB"}, "dbName", "identifier"),
    ("staging", {"dbMasterUsername": "rdsadmin"}, "dbMasterUsername", "reserved"),
    ("staging", {"dbBackupRetentionDays": 40}, "dbBackupRetentionDays", "1..35"),
    (
        "staging",
        {"dbPerformanceInsightsRetentionDays": 30},
        "dbPerformanceInsightsRetentionDays",
        "multiple of 31",
    ),
    ("staging", {"dbMonitoringIntervalSeconds": 7}, "dbMonitoringIntervalSeconds", "interval"),
    ("staging", {"dbAllocatedStorageGb": "twenty"}, "dbAllocatedStorageGb", "not an integer"),
    ("staging", {"dbMultiAz": "yes"}, "dbMultiAz", "not a boolean"),
    ("staging", {"kmsKeyDeletionWindowDays": 3}, "kmsKeyDeletionWindowDays", "7..30"),
    ("staging", {"llmInstanceType": "m5.xlarge"}, "llmInstanceType", "GPU"),
    ("staging", {"llmAmiId": "ubuntu-22"}, "llmAmiId", "not an AMI id"),
    ("staging", {"llmRootVolumeGb": 30}, "llmRootVolumeGb", "too small"),
    ("staging", {"llmModel": "falcon; rm -rf /"}, "llmModel", "Ollama model name"),
    ("staging", {"ollamaVersion": "latest"}, "ollamaVersion", "release number"),
    ("staging", {"migrationConnectPort": 70000}, "migrationConnectPort", "not a TCP port"),
    ("staging", {"migrationConnectPort": 15432}, "migrationConnectPort", "migrationConnectHost"),
    ("staging", {"migrationSslMode": "disable"}, "migrationSslMode", "RDS forces SSL"),
    ("staging", {"migrationOnExisting": "overwrite"}, "migrationOnExisting", "fail or replace"),
    ("staging", {"migrationSchemas": []}, "migrationSchemas", "no schema"),
    ("staging", {"migrationRevision": -1}, "migrationRevision", "negative"),
    ("staging", {"migrationJobs": 0}, "migrationJobs", "1..16"),
    ("staging", {"reindexDevice": "tpu"}, "reindexDevice", "cpu, cuda or auto"),
    ("staging", {"reindexBatchSize": 0}, "reindexBatchSize", "1..10000"),
    ("staging", {"hnswM": 1}, "hnswM", "2..100"),
    ("staging", {"hnswEfConstruction": 20}, "hnswEfConstruction", "2 x hnswM"),
    ("staging", {"vectorTable": "x" * 64}, "vectorTable", "valid PostgreSQL name"),
    ("staging", {"secretRecoveryWindowDays": 3}, "secretRecoveryWindowDays", "0 or 7..30"),
    ("staging", {"alertEmail": "ops"}, "alertEmail", "email"),
    (
        "staging",
        {"existingVpcId": "vpc-0abc", "existingPrivateSubnetIds": ["subnet-1"]},
        "existingPrivateSubnetIds",
        "two private subnets",
    ),
    (
        "staging",
        {"existingPrivateSubnetIds": ["subnet-1", "subnet-2"]},
        "existingVpcId",
        "without existingVpcId",
    ),
    ("staging", {"operatorCidrs": "203.0.113.10/32"}, "operatorCidrs", "list of strings"),
]


@pytest.mark.parametrize(
    ("stack", "overrides", "key", "problem"), BAD, ids=[f"{b[2]}-{i}" for i, b in enumerate(BAD)]
)
def test_invalid_config_fails_naming_the_key(
    stack: str, overrides: dict[str, Any], key: str, problem: str
) -> None:
    message = _fails(stack, overrides)
    assert message.startswith(f"config qckstrt:{key}:"), message
    assert problem in message
    assert "Fix:" in message


def test_plaintext_source_url_is_refused() -> None:
    message = _fails("staging", {"sourceDatabaseUrl": "postgresql://u:pw@h/db"}, secrets={})
    assert "sourceDatabaseUrl" in message and "--secret" in message
    assert "pw@h" not in message


def test_data_steps_without_a_source_url_are_explained() -> None:
    message = _fails("staging", {"migrationEnabled": True}, secrets={})
    assert "migrationEnabled" in message
    assert "pulumi config set --secret sourceDatabaseUrl" in message


def test_missing_region_is_explained() -> None:
    config = stack_config("staging")
    assert config["aws:region"]
    with pytest.raises(Exception, match="aws:region"):
        run_program("staging", overrides={"aws:region": ""})


def test_placeholder_operator_cidr_warns(staging: Any) -> None:
    assert any("203.0.113.10/32" in w and "placeholder" in w for w in staging.warnings)


def test_stack_files_parse_as_valid_settings() -> None:
    # The real stack files themselves must pass validation (they are run by the fixtures too).
    for stack in ("staging", "prod"):
        assert Path(ROOT / f"Pulumi.{stack}.yaml").exists()
        run_program(stack)
