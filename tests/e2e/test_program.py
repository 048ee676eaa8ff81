"""The real program, end to end: `pulumi up` of staging with the data steps, then two previews.

Everything the engine would call is called: the program runs under ``set_mocks`` (the engine
cannot run here), its AWS resources resolve to the embedded SSL-only target, moto's Secrets
Manager and S3, and its dynamic resources are deserialized and executed as the provider host
would. The first run must leave a migrated database; a second run with nothing changed must find
nothing to do; a third with another model must re-run the re-index and the check, nothing else.
"""

from __future__ import annotations

import boto3
import numpy as np
import psycopg
from psycopg import sql

from tests.e2e.conftest import CHUNKS, MODEL, Deployment

INDEX = "qckstrt_embeddings_vectors_embedding_idx"
STEPS = ["PgvectorExtension", "DataImport", "Reindex", "MigrationCheck"]


def test_up_runs_the_four_steps_in_order(deployment: Deployment) -> None:
    assert [(c.kind, c.action) for c in deployment.first_calls] == [(s, "create") for s in STEPS]


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
    imported = {c.name: c.outputs for c in deployment.first_calls}["qckstrt-staging-data-import"]
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
