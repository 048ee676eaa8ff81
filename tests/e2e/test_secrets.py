"""Where the source URL and the database passwords may appear after a whole run: almost nowhere.

The plaintext may appear only inside values Pulumi marks secret (the Secrets Manager secret
versions the program writes). Everything else the run leaves is scanned: stack outputs, every
resource's inputs as the engine received them, the data steps' inputs and outputs (their state),
every log line, and the CLI's output with and without ``--json``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from migration.cli import main
from tests.e2e.conftest import SOURCE_PASSWORD, Deployment
from tests.infra.program import walk_strings


def _secrets(deployment: Deployment) -> list[str]:
    return [SOURCE_PASSWORD, deployment.source_url, deployment.aws.master_password]


def _assert_clean(deployment: Deployment, value: Any, where: str) -> None:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    for secret in _secrets(deployment):
        assert secret not in text, f"a secret appears in {where}"


def test_stack_outputs_hold_no_secret(deployment: Deployment) -> None:
    _assert_clean(deployment, deployment.first.outputs, "stack outputs")


def test_plaintext_appears_only_inside_values_marked_secret(deployment: Deployment) -> None:
    seen_inside_secret = set()
    for resource in deployment.first.resources:
        for text, inside_secret in walk_strings(resource.raw):
            for secret in _secrets(deployment):
                if secret in text:
                    assert inside_secret, f"{resource.type} {resource.name} holds a secret"
                    seen_inside_secret.add((resource.type, secret == SOURCE_PASSWORD))
    # The one place it belongs: the source URL secret's version, marked secret.
    assert ("aws:secretsmanager/secretVersion:SecretVersion", True) in seen_inside_secret


def test_data_step_state_and_logs_hold_no_secret(deployment: Deployment) -> None:
    for call in deployment.first_calls:
        _assert_clean(deployment, call.inputs, f"{call.kind} inputs")
        _assert_clean(deployment, call.outputs, f"{call.kind} outputs")
    assert any("data import:" in line for line in deployment.first.logs)
    _assert_clean(deployment, deployment.first.logs, "log lines")


@pytest.mark.parametrize("as_json", [False, True])
def test_cli_output_holds_no_secret(
    deployment: Deployment,
    as_json: bool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SOURCE_DATABASE_URL", deployment.source_url)
    monkeypatch.setenv("TARGET_DATABASE_URL", deployment.target_url)
    assert main(["verify", *(["--json"] if as_json else [])]) == 0
    out = capsys.readouterr()
    assert "qckstrt_embeddings_vectors" in out.out + out.err
    _assert_clean(deployment, out.out + out.err, "CLI output")
    # A failure's message is scanned too: the right user with a wrong password.
    wrong = deployment.target_url.replace(deployment.aws.master_password, "x" + SOURCE_PASSWORD)
    monkeypatch.setenv("TARGET_DATABASE_URL", wrong)
    assert main(["verify", *(["--json"] if as_json else [])]) == 3
    out = capsys.readouterr()
    assert "password" in out.err
    for secret in (*_secrets(deployment), "x" + SOURCE_PASSWORD):
        assert secret not in out.out + out.err
