"""The data steps in the program: present only when enabled, in order, dialing the right place."""

from __future__ import annotations

import pytest

from tests.infra.helpers import unwrap
from tests.infra.program import SOURCE_URL, ProgramRun, Registered, run_program, walk_strings

STEPS = ("PgvectorExtension", "DataImport", "Reindex", "MigrationCheck")
TYPES = [f"pulumi-python:dynamic/qckstrt:{step}" for step in STEPS]
SOURCE_PASSWORD = "Sup3rS3cretPw-9f2"


def steps(run: ProgramRun) -> list[Registered]:
    """The four data steps in declaration order (one of each)."""
    return [run.one(t) for t in TYPES]


def test_staging_declares_the_four_steps_in_order(staging: ProgramRun) -> None:
    ext, imp, reindex, check = steps(staging)
    assert imp.urn not in ext.dependencies
    assert ext.urn in imp.dependencies
    assert imp.urn in reindex.dependencies
    assert reindex.urn in check.dependencies
    # Later steps take earlier ones' run_id, so they run again when the data before them changed.
    assert ext.urn in check.property_dependencies["after"]
    assert imp.urn in reindex.property_dependencies["after"]
    component = staging.one("qckstrt:data:DataSteps")
    assert {s.parent for s in (ext, imp, reindex, check)} == {component.urn}


def test_steps_wait_for_the_database_secrets_and_bucket(staging: ProgramRun) -> None:
    db = staging.one("aws:rds/instance:Instance")
    bucket = staging.one("aws:s3/bucket:Bucket")
    source_version = staging.one(
        "aws:secretsmanager/secretVersion:SecretVersion", "source-database-url"
    )
    for step in steps(staging):
        # depends_on a component waits for its children: the engine sees their URNs.
        deps = set(step.dependencies)
        assert {db.urn, bucket.urn, source_version.urn} <= deps, step.type


def test_steps_dial_the_endpoint_with_the_rds_managed_secret(staging: ProgramRun) -> None:
    db = staging.one("aws:rds/instance:Instance")
    source = staging.one("aws:secretsmanager/secret:Secret", "source-database-url")
    for step in steps(staging):
        inputs = step.inputs
        assert inputs["host"].endswith(".rds.amazonaws.com")
        assert inputs["port"] == 5432
        assert inputs["database"] == "qckstrt"
        assert inputs["ssl_mode"] == "require"
        assert inputs["master_secret_arn"].startswith("arn:aws:secretsmanager:")
        assert "rds!db" in inputs["master_secret_arn"]
        assert inputs["provider_version"]
        if "source_secret_arn" in inputs:
            assert inputs["source_secret_arn"] == (
                f"arn:aws:secretsmanager:us-east-1:123456789012:secret:"
                f"{source.inputs['name']}-XyZ123"
            )
    assert db.inputs["dbName"] == "qckstrt"


def test_import_backs_up_to_the_stack_bucket_under_the_expiring_prefix(staging: ProgramRun) -> None:
    imp = staging.one(TYPES[1])
    bucket = staging.one("aws:s3/bucket:Bucket")
    assert imp.inputs["backup"] == f"s3://{bucket.name}-a1b2c3d/migration/staging"
    assert imp.inputs["region"] == "us-east-1"
    assert imp.inputs["on_existing"] == "fail"
    assert imp.inputs["schemas"] == ["public"]


def test_reindex_carries_the_stack_model_and_index_settings(staging: ProgramRun) -> None:
    reindex = staging.one(TYPES[2]).inputs
    assert reindex["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert reindex["dimensions"] == 384
    assert reindex["table"] == "qckstrt_embeddings_vectors"
    assert (reindex["hnsw_m"], reindex["hnsw_ef_construction"]) == (16, 64)


def test_no_plaintext_secret_in_any_step_input(staging: ProgramRun) -> None:
    for step in steps(staging):
        for text, inside_secret in walk_strings(step.raw):
            assert SOURCE_PASSWORD not in text or inside_secret, step.type
            assert SOURCE_URL not in text or inside_secret, step.type


def test_override_host_and_port_for_a_tunnel() -> None:
    run = run_program(
        "staging", overrides={"migrationConnectHost": "127.0.0.1", "migrationConnectPort": 15432}
    )
    for step in steps(run):
        assert (step.inputs["host"], step.inputs["port"]) == ("127.0.0.1", 15432)


def test_prod_leaves_the_steps_out_until_enabled(prod: ProgramRun) -> None:
    assert not [r for r in prod.resources if r.type in TYPES]
    assert "migrationVerified" not in prod.outputs
    enabled = run_program("prod", overrides={"migrationEnabled": True})
    declared = steps(enabled)
    # Never protected: they hold no data, and a model change must still roll out in prod.
    assert not any(s.protect for s in declared)
    assert enabled.one("aws:rds/instance:Instance").protect


def test_disabling_removes_the_steps_and_keeps_everything_else(staging: ProgramRun) -> None:
    off = run_program("staging", overrides={"migrationEnabled": False})
    assert not [r for r in off.resources if r.type in TYPES]
    others = {(r.type, r.name) for r in staging.resources if r.type not in TYPES}
    others.discard(("qckstrt:data:DataSteps", "qckstrt-staging-data"))
    assert others == {(r.type, r.name) for r in off.resources}


@pytest.mark.parametrize(
    ("key", "value", "step", "field", "expected"),
    [
        ("embeddingModel", "BAAI/bge-small-en-v1.5", 2, "model", "BAAI/bge-small-en-v1.5"),
        ("hnswM", 24, 2, "hnsw_m", 24),
        ("migrationRevision", 1, 1, "revision", 1),
        ("migrationOnExisting", "replace", 1, "on_existing", "replace"),
        ("migrationSchemas", ["public", "app"], 3, "schemas", ["public", "app"]),
    ],
)
def test_config_reaches_the_step_inputs(
    key: str, value: object, step: int, field: str, expected: object
) -> None:
    run = run_program("staging", overrides={key: value})
    assert unwrap(run.one(TYPES[step]).inputs[field]) == expected


def test_outputs_name_the_data_steps_results(staging: ProgramRun) -> None:
    assert {
        "migrationBackupUri",
        "migrationRowsImported",
        "migrationIndexName",
        "migrationVerified",
    } <= set(staging.outputs)
