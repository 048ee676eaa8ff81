"""The CI roles' policies in infra/iam/: valid, pinned to this repository, and least privilege."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

IAM = Path(__file__).resolve().parents[2] / "infra" / "iam"
SUB = "token.actions.githubusercontent.com:sub"


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((IAM / name).read_text()))


def statements(name: str) -> list[dict[str, Any]]:
    return list(load(name)["Statement"])


def actions(statement: dict[str, Any]) -> list[str]:
    value = statement["Action"]
    return [value] if isinstance(value, str) else list(value)


@pytest.mark.parametrize("name", sorted(p.name for p in IAM.glob("*.json")))
def test_policies_are_valid_documents_without_wildcard_actions(name: str) -> None:
    doc = load(name)
    assert doc["Version"] == "2012-10-17"
    for st in doc["Statement"]:
        assert st["Effect"] == "Allow"
        for action in actions(st):
            assert action != "*" and not action.endswith(":*"), f"{name}: {action}"


@pytest.mark.parametrize(
    ("name", "subjects"),
    [
        (
            "deploy-trust-policy.json",
            {
                "repo:GITHUB_OWNER/qckstrt-infra:environment:staging",
                "repo:GITHUB_OWNER/qckstrt-infra:environment:prod",
            },
        ),
        ("preview-trust-policy.json", {"repo:GITHUB_OWNER/qckstrt-infra:pull_request"}),
    ],
)
def test_trust_pins_the_repository_and_the_jobs(name: str, subjects: set[str]) -> None:
    [st] = statements(name)
    assert st["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert st["Principal"]["Federated"].endswith(
        "oidc-provider/token.actions.githubusercontent.com"
    )
    cond = st["Condition"]["StringEquals"]  # exact match: no StringLike wildcards
    assert cond["token.actions.githubusercontent.com:aud"] == "sts.amazonaws.com"
    sub = cond[SUB]
    assert set([sub] if isinstance(sub, str) else sub) == subjects


def test_preview_role_cannot_change_anything() -> None:
    writes = ("Create", "Delete", "Put", "Update", "Modify", "Run", "Terminate", "Attach", "Pass")
    for st in statements("preview-policy.json"):
        if st["Sid"] in ("PulumiStateBackend", "PulumiSecretsProvider"):
            continue  # the state itself: a preview reads it and writes its own checkpoint
        for action in actions(st):
            verb = action.split(":", 1)[1]
            assert not verb.startswith(writes), action


def test_deploy_role_passes_only_the_stack_roles_to_their_services() -> None:
    [passrole] = [s for s in statements("deploy-policy.json") if "iam:PassRole" in actions(s)]
    assert passrole["Resource"] == "arn:aws:iam::*:role/qckstrt-*"
    services = set(passrole["Condition"]["StringEquals"]["iam:PassedToService"])
    assert services == {"ec2.amazonaws.com", "monitoring.rds.amazonaws.com"}
    iam = [
        s for s in statements("deploy-policy.json") if any(a.startswith("iam:") for a in actions(s))
    ]
    for st in iam:
        if st["Sid"] == "RdsServiceLinkedRoleOnce":
            assert st["Condition"]["StringEquals"]["iam:AWSServiceName"] == ["rds.amazonaws.com"]
            continue
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        assert all("qckstrt-" in r for r in resources), st["Sid"]


def test_deploy_role_may_read_only_the_stack_secrets() -> None:
    reads = [
        s for s in statements("deploy-policy.json") if "secretsmanager:GetSecretValue" in actions(s)
    ]
    resources = {
        r
        for s in reads
        for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
    }
    assert resources == {
        "arn:aws:secretsmanager:*:*:secret:qckstrt/*",
        "arn:aws:secretsmanager:*:*:secret:rds!*",
    }


# pulumi_aws module -> the IAM service prefix its resources are managed through.
SERVICE_OF_MODULE = {
    "cloudwatch": "cloudwatch",
    "ec2": "ec2",
    "vpc": "ec2",
    "iam": "iam",
    "kms": "kms",
    "rds": "rds",
    "s3": "s3",
    "secretsmanager": "secretsmanager",
    "sns": "sns",
}


def test_deploy_role_covers_every_service_the_program_declares() -> None:
    """A component using a new AWS service fails here until the deploy policy grants it."""
    program = "\n".join(p.read_text() for p in (IAM.parent).glob("*.py"))
    modules = set(re.findall(r"\baws\.([a-z0-9]+)\.[A-Z]", program))
    assert modules, "no pulumi_aws resources found in infra/*.py"
    unknown = modules - set(SERVICE_OF_MODULE)
    assert not unknown, f"infra uses {sorted(unknown)}: add them to the deploy policy and here"
    granted = {a.split(":", 1)[0] for st in statements("deploy-policy.json") for a in actions(st)}
    for module in modules:
        assert SERVICE_OF_MODULE[module] in granted, module


def test_preview_role_reads_what_the_program_looks_up() -> None:
    """Preview runs the program's lookups (zones, AMI, account) but changes nothing."""
    granted = {a for st in statements("preview-policy.json") for a in actions(st)}
    assert {"ec2:Describe*", "sts:GetCallerIdentity"} <= granted
