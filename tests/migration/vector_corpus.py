"""A vector table on which pgvector's default search settings fail the app's query.

Vectors are synthetic (the measure is about the index and the settings, not the model): 40 tight
clusters of unit vectors plus 3% outliers, owned by users of very different sizes (2,000, 800,
400, 150 and 60 chunks, and 40 users with 3 to 7), each user's chunks spread over the clusters.
With ``ef_search`` 40 and no iterative scan, the HNSW scan of a user who owns a sixth of the
table yields about 7 of that user's rows among its 40 candidates, sometimes fewer than 10 or 5.

The rows' embedding state is recorded as if the default model had made them, so the re-index
finds nothing to embed (no model is loaded) and goes straight to the index and the settings.
"""

from __future__ import annotations

import numpy as np
import psycopg

from migration.backends.embedder import ModelSpec
from migration.backends.models import DEFAULT_MODEL

TABLE = "qckstrt_embeddings_vectors"
USERS = {"u-big": 2000, "u-mid": 800, "u-10": 400, "u-5": 150, "u-3": 60} | {
    f"u-small-{i}": 3 + i % 5 for i in range(40)
}
HNSW_INDEX = (
    "CREATE INDEX qckstrt_embeddings_vectors_embedding_idx ON qckstrt_embeddings_vectors "
    "USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
)


def rows(seed: int = 7, clusters: int = 40, noise: float = 0.01) -> list[tuple[str, ...]]:
    """(id, document_id, user_id, content, vector literal) of every chunk; deterministic."""
    rnd = np.random.default_rng(seed)
    centers = rnd.normal(size=(clusters, 384))
    out: list[tuple[str, ...]] = []
    for user, size in USERS.items():
        for _ in range(size):
            n = len(out)
            if rnd.random() < 0.03:
                v = rnd.normal(size=384)
            else:
                v = centers[rnd.integers(clusters)] + rnd.normal(scale=noise, size=384)
            v = v / np.linalg.norm(v)
            literal = "[" + ",".join(f"{x:.7g}" for x in v.astype(np.float32)) + "]"
            out.append((f"doc{n}-0", f"doc{n}", user, f"chunk {n} of {user}", literal))
    return out


def create(url: str, *, index: bool, state: bool) -> None:
    """The app's vector table with the corpus; optionally the old re-index's HNSW index and the
    embedding state of the default model."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(
            "CREATE TABLE qckstrt_embeddings_vectors (id varchar(255) PRIMARY KEY, "
            "document_id varchar(255) NOT NULL, user_id varchar(255) NOT NULL, "
            "content text NOT NULL, embedding vector(384) NOT NULL, "
            "created_at timestamptz DEFAULT '2026-01-01')"
        )
        conn.execute("CREATE INDEX ON qckstrt_embeddings_vectors (user_id)")
        conn.execute("CREATE INDEX ON qckstrt_embeddings_vectors (document_id)")
        columns = "id, document_id, user_id, content, embedding"
        copy_sql = f"COPY qckstrt_embeddings_vectors ({columns}) FROM STDIN"
        with conn.cursor() as cur, cur.copy(copy_sql) as copy:
            for row in rows():
                copy.write_row(row)
        if index:
            conn.execute(HNSW_INDEX)
        if state:
            conn.execute("CREATE SCHEMA qckstrt_migrate")
            conn.execute(
                "CREATE TABLE qckstrt_migrate.embedding_state (table_key text NOT NULL, "
                "row_id text NOT NULL, model text NOT NULL, content_hash text NOT NULL, "
                "embedded_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (table_key, row_id))"
            )
            conn.execute(
                "INSERT INTO qckstrt_migrate.embedding_state (table_key, row_id, model, "
                "content_hash) SELECT %s, id, %s, md5(content) FROM qckstrt_embeddings_vectors",
                (
                    "public.qckstrt_embeddings_vectors.embedding",
                    ModelSpec.parse(DEFAULT_MODEL).fingerprint,
                ),
            )
        conn.execute("ANALYZE")


def set_database(url: str, *settings: str) -> None:
    """``ALTER DATABASE <current> SET`` each ``name = value`` (pgvector loaded first)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT '[1]'::vector")
        db = conn.execute("SELECT current_database()").fetchone()
        assert db is not None
        for setting in settings:
            conn.execute(f'ALTER DATABASE "{db[0]}" SET {setting}')
