"""Benchmark: recall and latency of the app's vector query against the HNSW settings.

Run by hand (results go in docs/benchmarks.md):

    .venv/bin/python bench/retrieval.py [--chunks 20000] [--sample 1000]

What it measures, on one embedded PostgreSQL 16 + pgvector server:

1. for a grid of ``m`` x ``ef_construction`` (one index build each), ``hnsw.ef_search`` and
   ``hnsw.iterative_scan`` set on the database (as the re-index sets them): recall@3/5/10,
   self-hit rate, short results and p50/p95 latency of the app's own query, measured by
   `migration.steps.retrieval.measure_retrieval`, the very function `verify` runs, in a fresh
   session;
2. the HNSW build time against ``maintenance_work_mem`` and
   ``max_parallel_maintenance_workers``.

The corpus is real text already on the machine, never generated sentences: Python's own
documentation (``pydoc_data.topics``), the standard library's docstrings, the descriptions and
READMEs of the installed packages, ``/usr/share/doc`` READMEs and change logs, and rendered man
pages. Each document is split as the app splits (recursive character splitter, 1,000 characters,
200 overlap) and given to one of 100 users drawn with Zipf's law (the largest user owns about a
fifth of the chunks, the smallest a few dozen), as real tenants differ in size.

Embedding 20,000 chunks on a CPU takes minutes: the vectors are cached, per block of 1,000,
under ``.data/bench-retrieval/`` (git-ignored), keyed by the texts and the model, so a second run
(or one interrupted) reuses them. ``--embed-only`` builds the cache and stops.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reindex import (  # bench/reindex.py, a sibling
    Chunk,
    _default_model,
    _load_table,
    _machine,
    _split,
)

from migration.db.connection import Endpoint
from migration.dev.local import LocalPostgres
from migration.steps.retrieval import RetrievalCheck

SEED = 20261130
USERS = 100
#: A document is cut after this many characters, so that no single change log dominates.
DOC_CAP = 30_000
BLOCK = 1000
CACHE = Path(__file__).resolve().parent.parent / ".data" / "bench-retrieval"
TABLE = "qckstrt_embeddings_vectors"

# ---------------------------------------------------------------------------------------------
# Corpus: prose people wrote, found on this machine


def _stdlib_docstrings() -> Iterator[tuple[str, str]]:
    """One document per standard-library module: its docstrings, in source order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        if {"test", "tests", "site-packages", "idlelib"} & set(path.parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        docs = [
            ast.get_docstring(node) or ""
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        ]
        text = "\n\n".join(d for d in docs if len(d) > 40)
        if text:
            yield f"stdlib:{path.relative_to(root)}", text


def _pydoc_topics() -> Iterator[tuple[str, str]]:
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield f"pydoc:{name}", topics[name]


def _site_packages() -> Iterator[tuple[str, str]]:
    """Package descriptions (METADATA bodies) and README/markdown/reST files."""
    root = Path(sysconfig.get_paths()["purelib"])
    for path in sorted(root.rglob("*")):
        name = path.name.lower()
        if not path.is_file() or "license" in name or "copying" in name:
            continue
        if name == "metadata":
            text = path.read_text(encoding="utf-8", errors="replace")
            body = text.split("\n\n", 1)[1] if "\n\n" in text else ""
            if body.strip():
                yield f"pkg:{path.parent.name}", body
        elif name.startswith("readme") or name.endswith((".md", ".rst")):
            yield (
                f"pkg:{path.relative_to(root)}",
                path.read_text(encoding="utf-8", errors="replace"),
            )


def _usr_share_doc() -> Iterator[tuple[str, str]]:
    root = Path("/usr/share/doc")
    if not root.is_dir():
        return
    for path in sorted(root.rglob("*")):
        name = path.name.lower()
        if not path.is_file() or not (name.startswith(("readme", "news", "changelog"))):
            continue
        if "debian" in name:
            continue
        try:
            raw = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
        except (OSError, EOFError):
            continue
        yield f"doc:{path.relative_to(root)}", raw.decode("utf-8", errors="replace")


def _man_pages(limit: int) -> Iterator[tuple[str, str]]:
    """Man pages rendered as a reader sees them (`man -l`, formatting removed)."""
    root = Path("/usr/share/man")
    if not root.is_dir() or shutil.which("man") is None:
        return
    pages = sorted(p for p in root.glob("man[1-8]/*") if p.is_file())
    env = {**os.environ, "MANWIDTH": "100", "MAN_KEEP_FORMATTING": "0"}
    for path in pages[:limit]:
        out = subprocess.run(
            ["man", "-l", str(path)], capture_output=True, env=env, timeout=30, check=False
        ).stdout.decode("utf-8", errors="replace")
        text = re.sub(r".\x08", "", out)  # overstrikes (bold, underline) as plain text
        if text.strip():
            yield f"man:{path.name}", text


def _zipf_users(rnd: random.Random) -> list[float]:
    return [1 / rank for rank in range(1, USERS + 1)]


def corpus(n: int) -> tuple[list[Chunk], dict[str, int]]:
    """`n` chunks of real documents and the number of documents each source gave."""
    rnd = random.Random(SEED)
    documents: list[tuple[str, str]] = []
    seen: set[str] = set()
    sources = [_pydoc_topics(), _stdlib_docstrings(), _site_packages(), _usr_share_doc()]
    per_source: dict[str, int] = {}

    def add(name: str, text: str) -> bool:
        """Keep a document unless it is short or a copy of one kept already."""
        text = text.strip()[:DOC_CAP]
        digest = hashlib.sha1(text.encode()).hexdigest()
        if len(text) < 200 or digest in seen:
            return False
        seen.add(digest)
        documents.append((name, text))
        kind = name.split(":", 1)[0]
        per_source[kind] = per_source.get(kind, 0) + 1
        return True

    for source in sources:
        for name, text in source:
            add(name, text)
    weights = _zipf_users(rnd)
    users = [f"user-{i:03d}" for i in range(1, USERS + 1)]
    man = _man_pages(limit=20_000)
    chunks: list[Chunk] = []
    order = list(range(len(documents)))
    rnd.shuffle(order)
    queue = [documents[i] for i in order]
    while len(chunks) < n:
        if not queue:
            page = next(man, None)
            if page is None:
                break
            if add(*page):
                queue.append(documents[-1])
            continue
        name, text = queue.pop(0)
        document_id = hashlib.md5(f"{name}\x00{text}".encode()).hexdigest()  # names repeat
        user = rnd.choices(users, weights=weights)[0]
        for i, piece in enumerate(_split(text)):
            chunks.append(Chunk(f"{document_id}-{i}", document_id, user, piece))
    return chunks[:n], per_source


# ---------------------------------------------------------------------------------------------
# Embeddings, cached per block


def embed(chunks: list[Chunk], model: str) -> np.ndarray:
    """The model's vectors of every chunk, from the cache where present (blocks of 1,000)."""
    from migration.backends.embedder import Embedder, ModelSpec

    CACHE.mkdir(parents=True, exist_ok=True)
    embedder: Embedder | None = None
    blocks: list[np.ndarray] = []
    started = time.perf_counter()
    for first in range(0, len(chunks), BLOCK):
        texts = [c.content for c in chunks[first : first + BLOCK]]
        key = hashlib.sha1("\x00".join([model, *texts]).encode()).hexdigest()[:20]
        path = CACHE / f"{key}.npy"
        if path.exists():
            blocks.append(np.load(path))
            continue
        if embedder is None:
            embedder = Embedder(ModelSpec.parse(model), "cpu")
        vectors = embedder.encode(texts)
        np.save(path, vectors)
        blocks.append(vectors)
        done = first + len(texts)
        rate = done / (time.perf_counter() - started)
        print(f"embedded {done:,}/{len(chunks):,} ({rate:.1f} chunks/s)", file=sys.stderr)
    return np.concatenate(blocks)


# ---------------------------------------------------------------------------------------------
# Measurements


def _build(url: str, m: int, ef_construction: int, mem: str, workers: int) -> float:
    """(Re)build the HNSW index under the app's index name; seconds taken."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP INDEX IF EXISTS qckstrt_embeddings_vectors_embedding_idx")
        conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(mem)))
        conn.execute(
            sql.SQL("SET max_parallel_maintenance_workers = {}").format(sql.Literal(workers))
        )
        started = time.perf_counter()
        conn.execute(
            sql.SQL(
                "CREATE INDEX qckstrt_embeddings_vectors_embedding_idx ON {} USING hnsw "
                "(embedding vector_cosine_ops) WITH (m = {}, ef_construction = {})"
            ).format(sql.Identifier(TABLE), sql.Literal(m), sql.Literal(ef_construction))
        )
        return time.perf_counter() - started


def _measure(url: str, ef_search: int, mode: str, sample: int) -> RetrievalCheck:
    """Set the database's search settings as the re-index does, then measure as verify does."""
    from migration.steps.retrieval import RetrievalThresholds, measure_retrieval
    from migration.steps.search_settings import SearchSettings, apply_search_settings

    with psycopg.connect(url, autocommit=True) as conn:
        apply_search_settings(conn, SearchSettings(ef_search, mode), "public")
    return measure_retrieval(
        Endpoint(url, "target"), "public", TABLE, RetrievalThresholds(sample_size=sample)
    )


def _grid(url: str, args: argparse.Namespace) -> list[str]:
    lines = [
        "| m | ef_construction | build s | ef_search | iterative scan | recall@3 | recall@5 | "
        "recall@10 | self-hit | short | p50 ms | p95 ms |",
        "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for index in args.index:
        m, efc = (int(x) for x in index.split(","))
        seconds = _build(url, m, efc, "1GB", 2)
        for ef in args.ef_search:
            for mode in args.modes:
                r = _measure(url, ef, mode, args.sample)
                line = (
                    f"| {m} | {efc} | {seconds:.1f} | {ef} | {mode} | {r.recall_at_3:.4f} | "
                    f"{r.recall_at_5:.4f} | {r.recall_at_10:.4f} | {r.self_hit_rate:.4f} | "
                    f"{r.short_results} | {r.latency_p50_ms:.2f} | {r.latency_p95_ms:.2f} |"
                )
                print(line, file=sys.stderr)
                lines.append(line)
    return lines


def _builds(url: str, args: argparse.Namespace) -> list[str]:
    m, efc = (int(x) for x in args.index[0].split(","))
    lines = [
        f"| maintenance_work_mem | parallel workers | build s (m {m}, ef_construction {efc}) |",
        "|---|---:|---:|",
    ]
    for mem in args.memory:
        for workers in args.workers:
            line = f"| {mem} | {workers} | {_build(url, m, efc, mem, workers):.1f} |"
            print(line, file=sys.stderr)
            lines.append(line)
    return lines


def _users(chunks: list[Chunk]) -> str:
    sizes = sorted(Counter(c.user_id for c in chunks).values(), reverse=True)
    return (
        f"{len(sizes)} users; largest {sizes[:5]}, median {statistics.median(sizes):.0f}, "
        f"smallest {sizes[-3:]} chunks"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=20_000, help="chunks in the corpus")
    parser.add_argument("--model", default=_default_model(), help="model name or local path")
    parser.add_argument("--embed-only", action="store_true", help="fill the cache and stop")
    parser.add_argument("--sample", type=int, default=1000, help="chunks queried per setting")
    parser.add_argument(
        "--index", nargs="+", default=["16,64", "16,128", "32,128"], help="m,ef_construction"
    )
    parser.add_argument("--ef-search", nargs="+", type=int, default=[40, 64, 100, 200])
    parser.add_argument("--modes", nargs="+", default=["off", "relaxed_order", "strict_order"])
    parser.add_argument("--memory", nargs="+", default=["8MB", "64MB", "1GB"])
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 2])
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    chunks, per_source = corpus(args.chunks)
    mean = sum(len(c.content) for c in chunks) / len(chunks)
    print(f"corpus: {len(chunks):,} chunks; documents per source {per_source}", file=sys.stderr)
    vectors = embed(chunks, args.model)
    if args.embed_only:
        return
    base = Path(tempfile.mkdtemp(prefix="qckstrt-bench-retrieval-"))
    server = LocalPostgres(base / "pg").start()
    try:
        server.create_database("app")
        url = server.create_master_role("master", "bench-pw", "app")
        _load_table(url, TABLE, chunks, vectors)
        machine = _machine(args.model, "cpu", url)
        print("\n".join(machine), file=sys.stderr)
        grid = _grid(url, args)
        builds = _builds(url, args)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    print("\n".join(machine))
    print(
        f"- corpus: {len(chunks):,} chunks (mean {mean:.0f} characters) of documents per "
        f"source {per_source}; {_users(chunks)}; {args.sample} sampled chunks per row"
    )
    print()
    print("\n".join(grid))
    print()
    print("\n".join(builds))


if __name__ == "__main__":
    main()
