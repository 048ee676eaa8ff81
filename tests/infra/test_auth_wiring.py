"""The auth step in the stack: its password secrets (filled by the step), its place in the
pipeline, and what the app-config secret tells GoTrue and storage-api (ARNs, never values)."""

from __future__ import annotations

import json

from tests.infra.helpers import unwrap
from tests.infra.program import SOURCE_URL, ProgramRun, run_program, walk_strings

SECRET = "aws:secretsmanager/secret:Secret"
VERSION = "aws:secretsmanager/secretVersion:SecretVersion"
AUTH_STEP = "pulumi-python:dynamic/qckstrt:AuthStep"
JWT = "gotrue-jwt-S3cret-0123456789abcdef0123456789"
ROLES = ("supabase_auth_admin", "supabase_storage_admin", "authenticator")


def _run(**overrides: object) -> ProgramRun:
    return run_program(
        "staging",
        overrides={"migrationAuth": True, **overrides},
        secrets={"sourceDatabaseUrl": SOURCE_URL, "gotrueJwtSecret": JWT},
    )


def _config(run: ProgramRun) -> dict[str, str]:
    return dict(json.loads(unwrap(run.one(VERSION, "app-config").inputs["secretString"])))


def test_no_auth_step_and_no_role_secrets_unless_enabled(staging: ProgramRun) -> None:
    assert staging.of_type(AUTH_STEP) == []
    assert not [s for s in staging.of_type(SECRET) if "db-role" in s.inputs["name"]]
    assert not any("GOTRUE" in key for key in _config(staging))


def test_role_secrets_under_the_stack_key_without_a_value_in_state() -> None:
    run = _run()
    secrets = {s.inputs["name"]: s for s in run.of_type(SECRET)}
    for role in ROLES:
        name = f"qckstrt/staging/db-role-{role.replace('_', '-')}"
        assert secrets[name].inputs["kmsKeyId"] == run.outputs["kmsKeyArn"]
    # No SecretVersion: the auth step writes each password; the stack never holds one.
    assert not [v for v in run.of_type(VERSION) if "db-role" in v.name]


def test_auth_step_after_the_import_before_storage_and_reindex_with_the_secret_arns() -> None:
    run = _run(storageSourcePath="/mnt/supabase/storage")
    step = run.one(AUTH_STEP)
    imp = run.one("pulumi-python:dynamic/qckstrt:DataImport")
    storage = run.one("pulumi-python:dynamic/qckstrt:StorageCopy")
    reindex = run.one("pulumi-python:dynamic/qckstrt:Reindex")
    check = run.one("pulumi-python:dynamic/qckstrt:MigrationCheck")
    assert imp.urn in step.dependencies  # `after` is the import's run_id (unknown under mocks)
    assert step.urn in storage.dependencies and step.urn in storage.property_dependencies["after"]
    assert storage.urn in reindex.dependencies
    assert step.urn in check.property_dependencies["after"]
    arns = step.inputs["password_secret_arns"]
    assert set(arns) == set(ROLES)
    for role in ROLES:
        assert arns[role].startswith("arn:aws:secretsmanager:") and "db-role-" in arns[role]
    assert step.inputs["schemas"] == ["public"]
    assert step.inputs["source_secret_arn"].startswith("arn:aws:secretsmanager:")


def test_auth_step_without_storage_comes_before_the_reindex() -> None:
    run = _run()
    step = run.one(AUTH_STEP)
    assert step.urn in run.one("pulumi-python:dynamic/qckstrt:Reindex").dependencies


def test_app_config_names_the_roles_secrets_and_the_jwt_secret_by_arn_only() -> None:
    run = _run()
    config = _config(run)
    arns = run.one(AUTH_STEP).inputs["password_secret_arns"]
    assert config["GOTRUE_DB_USERNAME"] == "supabase_auth_admin"
    assert config["GOTRUE_DB_PASSWORD_SECRET_ARN"] == arns["supabase_auth_admin"]
    assert config["STORAGE_DB_USERNAME"] == "supabase_storage_admin"
    assert config["STORAGE_DB_PASSWORD_SECRET_ARN"] == arns["supabase_storage_admin"]
    assert config["AUTHENTICATOR_DB_PASSWORD_SECRET_ARN"] == arns["authenticator"]
    assert config["RELATIONAL_DB_HOST"] == run.outputs["dbEndpoint"]  # their host, port, name
    jwt = run.one(SECRET, "gotrue-jwt-secret")
    assert jwt.inputs["name"] == "qckstrt/staging/gotrue-jwt-secret"
    assert jwt.inputs["kmsKeyId"] == run.outputs["kmsKeyArn"]
    assert config["GOTRUE_JWT_SECRET_ARN"].startswith(
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:qckstrt/staging/gotrue-jwt-secret"
    )
    assert JWT not in json.dumps(config)
    seen = False
    for resource in run.resources:
        for text, inside_secret in walk_strings(resource.raw):
            if JWT in text:
                assert inside_secret, f"{resource.type} {resource.name} exposes the JWT secret"
                seen = True
    assert seen, "the JWT secret should reach its Secrets Manager version"
    for name, value in run.outputs.items():
        assert JWT not in json.dumps(value), name


def test_storage_step_alone_gets_its_admins_secret_and_the_import_schemas() -> None:
    """Without `migrationAuth`, the storage step still carries schema storage: the stack
    declares supabase_storage_admin's secret (no value) and hands its ARN to the step, which
    also gets the import's schemas (so the app's objects using storage come back)."""
    run = run_program(
        "staging",
        overrides={
            "storageSourcePath": "/mnt/supabase/storage",
            "migrationSchemas": ["public", "app"],
        },
        secrets={"sourceDatabaseUrl": SOURCE_URL},
    )
    assert run.of_type(AUTH_STEP) == []
    roles = [s for s in run.of_type(SECRET) if "db-role" in s.inputs["name"]]
    assert [s.inputs["name"] for s in roles] == ["qckstrt/staging/db-role-supabase-storage-admin"]
    assert not [v for v in run.of_type(VERSION) if "db-role" in v.name]
    storage = run.one("pulumi-python:dynamic/qckstrt:StorageCopy")
    arn = storage.inputs["password_secret_arn"]
    assert arn.startswith("arn:aws:secretsmanager:") and "db-role-supabase-storage-admin" in arn
    assert storage.inputs["storage_schema"] == "carry"
    assert storage.inputs["schemas"] == ["public", "app"]
    config = _config(run)
    assert config["STORAGE_DB_PASSWORD_SECRET_ARN"] == arn
    assert "GOTRUE_DB_USERNAME" not in config and "AUTHENTICATOR_DB_USERNAME" not in config


def test_storage_step_copying_files_only_declares_no_role_secret() -> None:
    run = run_program(
        "staging",
        overrides={"storageSourcePath": "/mnt/supabase/storage", "storageSchema": "skip"},
        secrets={"sourceDatabaseUrl": SOURCE_URL},
    )
    assert not [s for s in run.of_type(SECRET) if "db-role" in s.inputs["name"]]
    storage = run.one("pulumi-python:dynamic/qckstrt:StorageCopy")
    assert (storage.inputs["storage_schema"], storage.inputs["password_secret_arn"]) == ("skip", "")
