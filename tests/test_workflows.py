"""The GitHub workflows: what a reviewer of the delivery pipeline would check by hand.

The schema check (`check-jsonschema --builtin-schema vendor.github-workflows`, run by
`make lint`) proves they are valid workflows; these tests prove they are the right ones.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

WORKFLOWS = Path(__file__).resolve().parents[1] / ".github" / "workflows"
PINNED = re.compile(r"^[\w.-]+/[\w.-]+@(v\d+\.\d+\.\d+|[0-9a-f]{40})$")
# A commit pin names its release in a comment, so that a reviewer can tell what runs.
SHA_LINE = re.compile(r"uses: [\w.-]+/[\w.-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+$")


def load(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as True.
    if True in doc:
        doc["on"] = doc.pop(True)
    return dict(doc)


def steps(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for job in doc["jobs"].values() for s in job["steps"]]


ALL = sorted(p.name for p in WORKFLOWS.glob("*.yml"))


def test_the_four_workflows_exist() -> None:
    assert ALL == ["deploy.yml", "destroy-staging.yml", "preview.yml", "test.yml"]


@pytest.mark.parametrize("name", ALL)
def test_every_action_is_pinned_to_an_exact_version(name: str) -> None:
    for step in steps(load(name)):
        if "uses" in step:
            assert PINNED.match(step["uses"]), f"{name}: {step['uses']} is not pinned"
    for line in (WORKFLOWS / name).read_text().splitlines():
        if re.search(r"@[0-9a-f]{40}", line):
            assert SHA_LINE.search(line.strip()), f"{name}: {line.strip()} names no release"


@pytest.mark.parametrize("name", ALL)
def test_the_venv_cache_cannot_serve_a_stale_or_broken_environment(name: str) -> None:
    """The cached .venv links to one exact Python and holds what pyproject.toml and the Makefile
    decide; on a hit its install stamps are refreshed so that make does not reinstall."""
    for job in load(name)["jobs"].values():
        job_steps: list[dict[str, Any]] = job["steps"]
        [python] = [s for s in job_steps if s.get("uses", "").startswith("actions/setup-python@")]
        [cache] = [s for s in job_steps if s.get("uses", "").startswith("actions/cache@")]
        assert cache["with"]["path"] == ".venv"
        key = cache["with"]["key"]
        assert f"steps.{python['id']}.outputs.python-version" in key
        assert "hashFiles('pyproject.toml', 'Makefile')" in key
        index = job_steps.index(cache)
        touch = job_steps[index + 1]
        assert touch["if"] == f"steps.{cache['id']}.outputs.cache-hit == 'true'"
        assert touch["run"].startswith("touch -c .venv/.torch .venv/.installed-test")
        assert job_steps[index + 2]["run"].split()[:2] in (["make", "test"], ["make", "install"])


@pytest.mark.parametrize("name", ALL)
def test_permissions_are_explicit_and_least_privilege(name: str) -> None:
    doc = load(name)
    permissions = doc["permissions"]
    assert permissions["contents"] == "read"
    allowed = {"contents", "id-token", "pull-requests"}
    assert set(permissions) <= allowed
    assert "write-all" not in str(permissions)
    if name == "test.yml":
        assert permissions == {"contents": "read"}
    if "pull-requests" in permissions:
        assert name == "preview.yml"


@pytest.mark.parametrize("name", ["preview.yml", "deploy.yml", "destroy-staging.yml"])
def test_aws_through_oidc_never_access_keys(name: str) -> None:
    text = (WORKFLOWS / name).read_text()
    assert "AWS_ACCESS_KEY_ID" not in text and "aws-secret-access-key" not in text
    creds = [s for s in steps(load(name)) if "configure-aws-credentials" in s.get("uses", "")]
    assert creds
    # Pull requests get the read-only preview role; only deploy jobs the deploy role.
    role = "AWS_PREVIEW_ROLE_ARN" if name == "preview.yml" else "AWS_DEPLOY_ROLE_ARN"
    for step in creds:
        assert step["with"]["role-to-assume"] == "${{ vars." + role + " }}"
    assert load(name)["permissions"]["id-token"] == "write"


def test_preview_covers_both_stacks_one_at_a_time_and_comments() -> None:
    doc = load("preview.yml")
    assert set(doc["on"]) == {"pull_request"}
    job = doc["jobs"]["preview"]
    # Forks' pull requests have no OIDC token or secrets: skipped, not failed.
    assert job["if"] == "github.event.pull_request.head.repo.full_name == github.repository"
    assert job["strategy"]["matrix"]["stack"] == ["staging", "prod"]
    assert "matrix.stack" in job["concurrency"]["group"]
    [pulumi] = [s for s in job["steps"] if s.get("uses", "").startswith("pulumi/actions@")]
    assert pulumi["with"]["command"] == "preview"
    assert pulumi["with"]["comment-on-pr"] is True
    assert pulumi["with"]["stack-name"] == "${{ matrix.stack }}"


def test_deploy_runs_staging_then_protected_prod_never_cancelling_an_update() -> None:
    doc = load("deploy.yml")
    assert doc["on"] == {"push": {"branches": ["main"]}}
    staging, prod = doc["jobs"]["staging"], doc["jobs"]["prod"]
    assert prod["needs"] == "staging"
    assert prod["environment"] == "prod"
    for stack, job in (("staging", staging), ("prod", prod)):
        assert job["concurrency"] == {"group": f"pulumi-up-{stack}", "cancel-in-progress": False}
        assert job["runs-on"] == "${{ vars.DEPLOY_RUNNER || 'ubuntu-latest' }}"
        [pulumi] = [s for s in job["steps"] if s.get("uses", "").startswith("pulumi/actions@")]
        assert (pulumi["with"]["command"], pulumi["with"]["stack-name"]) == ("up", stack)


def test_destroy_is_manual_staging_only_and_confirmed_first() -> None:
    doc = load("destroy-staging.yml")
    assert set(doc["on"]) == {"workflow_dispatch"}
    assert doc["on"]["workflow_dispatch"]["inputs"]["confirm"]["required"] is True
    job_steps = doc["jobs"]["destroy"]["steps"]
    first = job_steps[0]
    assert "destroy staging" in first["run"] and "exit 1" in first["run"]
    assert first["env"]["CONFIRM"] == "${{ inputs.confirm }}"  # never interpolated into a script
    [pulumi] = [s for s in job_steps if s.get("uses", "").startswith("pulumi/actions@")]
    assert (pulumi["with"]["command"], pulumi["with"]["stack-name"]) == ("destroy", "staging")
    # It shares the deploy's lock on staging: a destroy never races an update.
    assert doc["concurrency"]["group"] == "pulumi-up-staging"
    assert "prod" not in (WORKFLOWS / "destroy-staging.yml").read_text().split("jobs:")[1]


def test_ci_runs_exactly_the_readme_command() -> None:
    doc = load("test.yml")
    runs = [s["run"] for s in steps(doc) if "run" in s]
    # Besides the cache's stamp refresh, the only command is the README's.
    assert [r for r in runs if not r.startswith("touch -c .venv/")] == ["make test"]
    ci = (WORKFLOWS.parents[1] / ".ci" / "run").read_text()
    assert ci.strip().splitlines()[-1] == "make test"
