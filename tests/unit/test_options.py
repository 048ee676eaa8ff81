"""The step settings' one declaration, and every skin derived from it (no database, seconds).

Each skin is driven as its user drives it: the CLI through its parser and environment, the
providers through ``check``/``diff``, the stack through ``infra.settings``' registry. A setting
added to ``migration.options`` must show up in each of them; nothing may appear undeclared.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import pytest
from pulumi.output import Unknown

from infra.settings import KEYS, KEYS_BY_NAME, MigrationSettings
from migration import cli, options
from migration.backends.storage_sources import SourceSettings
from migration.db.roles import LOGIN_ROLES
from migration.errors import ConfigError
from migration.providers import PROVIDER_VERSION, PROVIDERS, ReindexOptions, StorageOptions
from migration.steps.reindex import ReindexSettings
from migration.steps.run import RunOptions
from migration.steps.storage_copy import StorageCopySettings
from migration.steps.transfer import ImportOptions

MASTER_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!db-1-AbCdEf"
SOURCE_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:qckstrt/src-XyZ123"
STEP_OF = {
    "PgvectorExtension": "extension",
    "DataImport": "import",
    "Reindex": "reindex",
    "MigrationCheck": "verify",
    "AuthStep": "auth",
    "StorageCopy": "storage",
}
#: Provider inputs that are wiring from the rest of the stack, not settings.
WIRING = {
    "__provider",  # the serialized provider itself
    "provider_version",
    "host",
    "port",
    "database",
    "master_secret_arn",
    "source_secret_arn",
    "region",
    "after",
    "password_secret_arns",
    "password_secret_arn",
    "source_credentials_secret_arn",
}
#: Inputs a kind needs besides the connection for `check` to pass (the storage step's backend,
#: the auth step's password secrets).
REQUIRED: dict[str, dict[str, Any]] = {
    "StorageCopy": {
        "bucket": "stack-bucket",
        "source_path": "/srv/storage",
        "password_secret_arn": SOURCE_ARN,
    },
    "AuthStep": {"password_secret_arns": dict.fromkeys(LOGIN_ROLES, SOURCE_ARN)},
}
#: Stack keys of the data steps (the rest of Pulumi.yaml is infrastructure).
#: What must change together with a setting for the change to be valid.
COMPANIONS: dict[str, dict[str, Any]] = {
    "import_revision": {"on_existing": "replace"},
    "schemas": {"on_existing": "replace"},
    "dimensions": {"model": "BAAI/bge-base-en-v1.5"},
    "storage_source_bucket": {"source_path": ""},
    "storage_source_endpoint": {"source_path": "", "source_bucket": "old-bucket"},
}
STEP_KEY_PREFIXES = (
    "migration",
    "reindex",
    "hnsw",
    "vector",
    "embedding",
    "storage",
    "retrieval",
)
NOT_STEP_KEYS = {"migrationObjectExpirationDays", "storageSourceCredentials"}


def _sample(s: options.Setting) -> Any:
    """A valid value of `s` that is not its default."""
    if s.choices:
        return next(c for c in s.choices if c != s.default)
    if s.name == "dimensions":
        return 768
    if s.type == "integer":
        return int(s.default) + 1
    if s.type == "number":
        return 0.5 if s.high is not None and s.high < 1.5 else 1.5
    if s.type == "boolean":
        return True
    if s.type == "array":
        return ["app", "extra"]
    return {
        "device": "cuda:1",
        "model": "BAAI/bge-small-en-v1.5",
        "backup": "s3://bucket/prefix",
        "bucket": "some-bucket",
        "url": "http://minio:9000",
    }.get(s.rule, "some_name")


def _bad(s: options.Setting) -> Any:
    """An invalid value of `s`, or None when any value of its type is valid."""
    if s.choices:
        return "no-such-choice"
    if s.type in ("integer", "number"):
        return (s.high or 0) + 1 if s.high is not None else None
    if s.type == "array":
        return []
    return {
        "identifier": "x" * 64,
        "device": "tpu",
        "model": " ",
        "backup": "ftp://h/x",
        "bucket": "Not_A_Bucket",
        "tenant": "migration",
        "url": "ftp://h",
    }.get(s.rule)


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return ",".join(value) if isinstance(value, list) else str(value)


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found: argparse.ArgumentParser = sub.choices[command]
    return found


# --- the declarations themselves -------------------------------------------------------------


def test_each_setting_is_declared_once_with_distinct_skins() -> None:
    names = [s.name for s in options.SETTINGS]
    assert len(names) == len(set(names))
    for attribute in ("env", "key"):
        values = [getattr(s, attribute) for s in options.SETTINGS if getattr(s, attribute)]
        assert len(values) == len(set(values)), attribute
    for step in options.STEPS:
        inputs = [s.input for s in options.for_step(step)]
        assert len(inputs) == len(set(inputs)), step
    for s in options.SETTINGS:
        assert set(s.triggers) <= set(s.steps), s.name
        assert options.check(s.name, s.default) is None, f"{s.name}'s default is invalid"
        assert s.help.endswith("."), s.name
        if s.key:
            assert s.key[0].islower() and "_" not in s.key and ":" not in s.key, s.key


def test_the_declarations_import_nothing_heavy() -> None:
    import subprocess
    import sys

    code = (
        "import sys, migration.options; "
        "bad = [m for m in ('pulumi', 'torch', 'sentence_transformers', 'psycopg') "
        "if m in sys.modules]; print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# --- the command line ------------------------------------------------------------------------


@pytest.mark.parametrize("command", options.COMMANDS)
def test_cli_flags_are_exactly_the_declared_ones(command: str) -> None:
    flags = {f for a in _subparser(command)._actions for f in a.option_strings}
    declared = {f for s in options.for_command(command) for f in (s.flag, *s.aliases) if f}
    plumbing = {"-h", "--help", *cli.PLUMBING_FLAGS}
    if command in ("reindex", "restore"):
        plumbing.discard("--source")
    assert flags == declared | plumbing


@pytest.mark.parametrize(
    ("command", "setting"),
    [(c, s) for c in options.COMMANDS for s in options.for_command(c)],
    ids=[f"{c}-{s.name}" for c in options.COMMANDS for s in options.for_command(c)],
)
def test_cli_resolves_flag_then_environment_then_default(
    command: str, setting: options.Setting, monkeypatch: pytest.MonkeyPatch
) -> None:
    for s in options.SETTINGS:
        if s.env:
            monkeypatch.delenv(s.env, raising=False)
    parser = cli.build_parser()
    args = parser.parse_args([command])
    cli._resolve(args, command)
    assert getattr(args, setting.name) == setting.default
    assert setting.help.split()[0] in (_help_of(command, setting) or "")
    sample = _sample(setting)
    if setting.env:
        monkeypatch.setenv(setting.env, _as_text(sample))
        args = parser.parse_args([command])
        cli._resolve(args, command)
        assert getattr(args, setting.name) == sample
    assert setting.flag is not None
    flag_args = [setting.flag] if setting.type == "boolean" else [setting.flag, _as_text(sample)]
    args = parser.parse_args([command, *flag_args])
    cli._resolve(args, command)
    assert getattr(args, setting.name) == sample


def _help_of(command: str, setting: options.Setting) -> str | None:
    for action in _subparser(command)._actions:
        if setting.flag in action.option_strings:
            return action.help
    return None


@pytest.mark.parametrize(
    "setting",
    [s for s in options.SETTINGS if s.commands and _bad(s) is not None],
    ids=lambda s: s.name,
)
def test_cli_refuses_a_bad_value_from_flag_and_environment_naming_it(
    setting: options.Setting, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    command = setting.commands[0]
    bad = _as_text(_bad(setting)) if setting.type != "array" else ","
    assert cli.main([command, str(setting.flag), bad]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert str(setting.flag) in err and "Traceback" not in err
    if setting.env:
        monkeypatch.setenv(setting.env, bad)
        assert cli.main([command, "--json"]) == cli.EXIT_USAGE
        out = capsys.readouterr()
        assert setting.env in out.err
        assert '"setting": "' + setting.name + '"' in out.out


# --- the providers ---------------------------------------------------------------------------


def _news(kind: str, **inputs: Any) -> dict[str, Any]:
    return {
        "provider_version": PROVIDER_VERSION,
        "host": "db.example.internal",
        "port": 5432,
        "database": "qckstrt",
        "master_secret_arn": MASTER_ARN,
        "source_secret_arn": SOURCE_ARN,
        **REQUIRED.get(kind, {}),
        **inputs,
    }


@pytest.mark.parametrize("kind", sorted(PROVIDERS))
def test_provider_inputs_defaults_and_triggers_come_from_the_declarations(kind: str) -> None:
    step = STEP_OF[kind]
    provider = PROVIDERS[kind]()
    declared = {s.input for s in options.for_step(step)}
    assert set(provider.DEFAULTS) - {"after"} == declared
    assert set(provider.TRIGGERS) - {"provider_version", "after"} == set(options.triggers(step))
    result = provider.check({}, _news(kind))
    assert result.failures == []
    assert set(result.inputs) - WIRING == declared


@pytest.mark.parametrize(
    ("kind", "setting"),
    [(k, s) for k, step in STEP_OF.items() for s in options.for_step(step)],
    ids=[f"{k}-{s.name}" for k, step in STEP_OF.items() for s in options.for_step(step)],
)
def test_provider_check_and_diff_follow_each_declaration(
    kind: str, setting: options.Setting
) -> None:
    provider = PROVIDERS[kind]()
    step = STEP_OF[kind]
    olds = provider.check({}, _news(kind)).inputs
    # Unknown during a preview: tolerated by check; a trigger then says "may change".
    later = Unknown()  # type: ignore[no-untyped-call]
    unknown = provider.check({}, _news(kind, **{setting.input: later}))
    assert unknown.failures == []
    sample = _sample(setting)
    changed = {setting.input: sample, **COMPANIONS.get(setting.name, {})}
    news = provider.check(olds, _news(kind, **{**olds, **changed})).inputs
    assert provider.check(olds, news).failures == []
    assert (setting.input in provider.changed_inputs(olds, news)) is (step in setting.triggers)
    bad = _bad(setting)
    if bad is not None:
        failures = provider.check({}, _news(kind, **{setting.input: bad})).failures
        assert [f.property for f in failures] == [setting.input]


@pytest.mark.parametrize(
    ("cls", "step"), [(ReindexOptions, "reindex"), (StorageOptions, "storage")]
)
def test_resource_options_are_the_declared_inputs(cls: Any, step: str) -> None:
    fields = {f.name for f in dataclasses.fields(cls)}
    assert fields <= {s.input for s in options.for_step(step)}
    assert cls().inputs() == {
        s.input: s.default for s in options.for_step(step) if s.input in fields
    }


# --- the library's option dataclasses --------------------------------------------------------


@pytest.mark.parametrize(
    "cls", [ImportOptions, ReindexSettings, RunOptions, StorageCopySettings, SourceSettings]
)
def test_library_options_take_declared_defaults_and_validation(cls: Any) -> None:
    declared = options.declared_fields(cls)
    assert declared, cls
    instance = cls()
    for field, name in declared.items():
        assert getattr(instance, field) == options.get(name).default, field
        bad = _bad(options.get(name))
        if bad is None or (options.get(name).rule == "backup"):
            continue
        with pytest.raises(ConfigError) as info:
            cls(**{field: bad})
        assert info.value.setting == name


# --- the stack -------------------------------------------------------------------------------


def test_stack_keys_are_the_declared_ones() -> None:
    for s in options.keyed():
        key = KEYS_BY_NAME[str(s.key)]
        assert (key.type, key.default) == (s.type, s.default), s.key
        assert key.description == options.render(s.help, lambda x: f"`{options.pulumi_name(x)}`")
    step_keys = {
        k.name for k in KEYS if k.name.startswith(STEP_KEY_PREFIXES) and k.name not in NOT_STEP_KEYS
    }
    assert step_keys == {s.key for s in options.keyed()}
    fields = {f.name for f in dataclasses.fields(MigrationSettings)}
    assert fields == {s.name for s in options.keyed()} - {"model", "dimensions"}


# --- each skin's words -----------------------------------------------------------------------


def test_each_skin_names_a_setting_in_its_own_words() -> None:
    message = "`on_existing` replace needs `backup`; `vector` stays"
    assert cli.words(message) == "--on-existing replace needs --backup; `vector` stays"
    assert options.render(message, options.pulumi_name) == (
        "migrationOnExisting replace needs backup; `vector` stays"
    )
    assert options.render("`index_name`", options.pulumi_name) == (
        "index name (not a stack setting; `qckstrt-migrate --index-name`)"
    )


#: A non-default value of every data-step key that reaches a provider input (valid together).
STACK_VALUES: dict[str, Any] = {
    "migrationSslMode": "verify-full",
    "migrationSchemas": ["public", "app"],
    "migrationJobs": 5,
    "migrationOnExisting": "replace",
    "migrationRevision": 2,
    "embeddingModel": "BAAI/bge-base-en-v1.5",
    "vectorDimensions": 768,
    "vectorTable": "docs_vectors",
    "reindexBatchSize": 64,
    "reindexDevice": "cuda:1",
    "reindexRevision": 3,
    "hnswM": 24,
    "hnswEfConstruction": 96,
    "hnswEfSearch": 200,
    "hnswIterativeScan": "relaxed_order",
    "hnswMaxScanTuples": 40000,
    "retrievalSample": 800,
    "retrievalMaxShortResults": 2,
    # The storage step (from an S3-compatible source; a path would be the other backend).
    "storageSourcePath": "",
    "storageSourceBucket": "old-storage",
    "storageSourceEndpoint": "http://minio:9000",
    "storageTenantId": "prod-tenant",
    "storageAllowMissing": True,
    "storageSchema": "skip",
}


def test_each_stack_key_reaches_its_steps_and_nothing_else_does() -> None:
    from tests.infra.program import run_program

    keyed_inputs = [s for s in options.keyed() if s.steps]
    assert {str(s.key) for s in keyed_inputs} == set(STACK_VALUES)
    run = run_program("staging", overrides=STACK_VALUES)
    for kind, step in STEP_OF.items():
        if kind == "AuthStep":
            continue  # opt-in; the stack does not declare it (yet)
        inputs = run.one(f"pulumi-python:dynamic/qckstrt:{kind}").inputs
        for s in keyed_inputs:
            if step in s.steps:
                assert inputs[s.input] == STACK_VALUES[str(s.key)], (kind, s.key)
        given = {k for k, v in inputs.items() if v is not None}
        declared = {s.input for s in options.for_step(step)}
        assert given - WIRING <= declared, kind
