"""Secrets Manager entries, and the rule that no plaintext secret leaves a secret-marked value."""

from __future__ import annotations

import json

from tests.infra.conftest import SOURCE_URL
from tests.infra.helpers import unwrap
from tests.infra.program import ProgramRun, run_program, walk_strings

SECRET = "aws:secretsmanager/secret:Secret"
VERSION = "aws:secretsmanager/secretVersion:SecretVersion"
PASSWORD = "Sup3rS3cretPw-9f2"


def test_secrets_are_named_per_stack_and_encrypted_with_stack_key(each_stack: ProgramRun) -> None:
    secrets = {s.inputs["name"]: s for s in each_stack.of_type(SECRET)}
    assert set(secrets) == {
        f"qckstrt/{each_stack.stack}/app-config",
        f"qckstrt/{each_stack.stack}/source-database-url",
    }
    for secret in secrets.values():
        assert secret.inputs["kmsKeyId"] == each_stack.outputs["kmsKeyArn"]


def test_staging_secrets_delete_at_once_prod_secrets_are_protected(
    staging: ProgramRun, prod: ProgramRun
) -> None:
    for s in staging.of_type(SECRET):
        assert s.inputs["recoveryWindowInDays"] == 0
        assert s.protect is False
    for s in prod.of_type(SECRET):
        assert s.inputs["recoveryWindowInDays"] >= 7
        assert s.protect is True


def test_source_url_secret_holds_the_configured_url_as_a_secret(each_stack: ProgramRun) -> None:
    version = each_stack.one(VERSION, "source-database-url")
    assert unwrap(version.inputs["secretString"]) == SOURCE_URL
    assert version.raw["secretString"]["4dabf18193072939515e22adb298388d"]


def test_source_url_secret_exists_only_when_configured() -> None:
    run = run_program("staging", overrides={"migrationEnabled": False}, secrets={})
    names = {s.inputs["name"] for s in run.of_type(SECRET)}
    assert names == {"qckstrt/staging/app-config"}


def test_app_config_has_every_setting_taken_from_the_other_resources(
    each_stack: ProgramRun,
) -> None:
    version = each_stack.one(VERSION, "app-config")
    config = json.loads(unwrap(version.inputs["secretString"]))
    out = each_stack.outputs
    db = each_stack.one("aws:rds/instance:Instance").inputs
    assert config["RELATIONAL_DB_HOST"] == out["dbEndpoint"]
    assert config["RELATIONAL_DB_PORT"] == str(out["dbPort"])
    assert config["RELATIONAL_DB_DATABASE"] == out["dbName"]
    assert config["RELATIONAL_DB_USERNAME"] == db["username"]
    assert config["RELATIONAL_DB_SSL"] == "true"
    assert config["RELATIONAL_DB_PASSWORD_SECRET_ARN"] == out["dbMasterSecretArn"]
    assert config["VECTOR_DB_DIMENSIONS"] == "384"
    assert config["EMBEDDINGS_PROVIDER"] == "xenova"
    assert config["EMBEDDINGS_XENOVA_MODEL"] == "Xenova/all-MiniLM-L6-v2"
    assert config["LLM_URL"] == out["llmUrl"]
    assert config["LLM_MODEL"] == "falcon"
    assert config["FILE_STORAGE_BUCKET"] == out["bucketName"]
    assert config["AWS_REGION"] == "us-east-1"
    assert not any("PASSWORD" in k and "ARN" not in k for k in config)
    assert out["appConfigSecretArn"].endswith(f"qckstrt/{each_stack.stack}/app-config-XyZ123")


def test_no_plaintext_secret_outside_secret_marked_values(each_stack: ProgramRun) -> None:
    seen_in_secret = False
    for resource in each_stack.resources:
        for text, inside_secret in walk_strings(resource.raw):
            if PASSWORD in text:
                assert inside_secret, f"{resource.type} {resource.name} exposes the password"
                seen_in_secret = True
    assert seen_in_secret, "the secret value should reach its Secrets Manager version"
    for name, value in each_stack.outputs.items():
        assert PASSWORD not in json.dumps(value), name


def test_model_change_flows_into_app_config() -> None:
    run = run_program(
        "staging",
        overrides={
            "embeddingModel": "sentence-transformers/all-mpnet-base-v2",
            "vectorDimensions": 768,
        },
    )
    config = json.loads(unwrap(run.one(VERSION, "app-config").inputs["secretString"]))
    assert config["EMBEDDINGS_XENOVA_MODEL"] == "Xenova/all-mpnet-base-v2"
    assert config["VECTOR_DB_DIMENSIONS"] == "768"
