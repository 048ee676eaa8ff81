"""Fixtures: the program run once per stack with each stack file's real config."""

from __future__ import annotations

import pytest

from tests.infra.program import SOURCE_URL, ProgramRun, run_program

__all__ = ["SOURCE_URL"]
STACKS = ("staging", "prod")


@pytest.fixture(scope="session")
def staging() -> ProgramRun:
    return run_program("staging", secrets={"sourceDatabaseUrl": SOURCE_URL})


@pytest.fixture(scope="session")
def prod() -> ProgramRun:
    return run_program("prod", secrets={"sourceDatabaseUrl": SOURCE_URL})


@pytest.fixture(scope="session", params=STACKS)
def each_stack(request: pytest.FixtureRequest, staging: ProgramRun, prod: ProgramRun) -> ProgramRun:
    return staging if request.param == "staging" else prod
