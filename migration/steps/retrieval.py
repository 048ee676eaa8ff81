"""Retrieval as the app runs it: recall@k of its own vector query against exact search.

The app (its pgvector provider) asks, with default session settings::

    SELECT ... FROM qckstrt_embeddings_vectors WHERE user_id = $2
    ORDER BY embedding <=> $1::vector LIMIT k        -- k = 3 for answers, 5 and 10 in search

An HNSW index answers that approximately: the scan yields ``hnsw.ef_search`` candidates and the
user filter then discards the other users' rows, so a user who owns a small share of the table
can get fewer than k rows, and an outlier can be missed altogether. Row counts and checksums see
none of it. So this module samples chunks (every user's first chunk, the largest users first,
then chunks at random; deterministic), queries with each chunk's own stored vector and its user,
exactly as the app does, in a *new* session that sets nothing (so it gets what the app's sessions
inherit: database and role settings), and compares with exact search (the same query with index
scans turned off) in the same repeatable-read snapshot.

Ties: a result counts as a hit when its distance is no greater than the k-th exact distance, so
exact duplicate vectors (the same text uploaded twice) never count as misses.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from migration.db.connection import Conn, Endpoint
from migration.options import option, validate

KS = (3, 5, 10)
#: Distances closer than this are equal (float4 vectors, float8 distances).
TIE = 1e-6
#: pgvector's own defaults: what a session gets when nothing is set.
SEARCH_SETTINGS = ("hnsw.ef_search", "hnsw.iterative_scan", "hnsw.max_scan_tuples")


@dataclass(frozen=True)
class RetrievalThresholds:
    """What `verify` requires of the app's query; defaults and bounds from ``migration.options``.

    :param sample_size: chunks queried (all of them when the table holds fewer).
    :param min_recall_at_5: the least recall@5 against exact search.
    :param max_short_results: queries allowed to return fewer than k rows while the user owns
        at least k chunks.
    """

    sample_size: int = option("retrieval_sample")
    min_recall_at_5: float = option("min_recall_at_5")
    max_short_results: int = option("max_short_results")

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class RetrievalCheck:
    """The app's query measured against exact search; JSON-able with `dataclasses.asdict`."""

    table: str
    chunks: int = 0
    users: int = 0
    sampled: int = 0
    users_sampled: int = 0
    recall_at_3: float = 1.0
    recall_at_5: float = 1.0
    recall_at_10: float = 1.0
    #: Share of sampled chunks whose own vector finds them (or an identical vector) first.
    self_hit_rate: float = 1.0
    #: App queries that returned fewer than k rows while the user owns at least k chunks.
    short_results: int = 0
    #: Chunks whose vector is all zeros: cosine search can never find them.
    zero_vectors: int = 0
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    #: The hnsw settings the fresh session had (what the app's sessions inherit).
    session_settings: dict[str, str] = field(default_factory=dict)
    #: A few of the worst queries, for the operator.
    examples: list[str] = field(default_factory=list)
    #: The thresholds not met, each naming its measure; empty when all are met.
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        return (
            f"retrieval ({self.sampled} of {self.chunks:,} chunks, {self.users_sampled} of "
            f"{self.users} users): recall@3 {self.recall_at_3:.4f}, recall@5 "
            f"{self.recall_at_5:.4f}, recall@10 {self.recall_at_10:.4f}, self-hit "
            f"{self.self_hit_rate:.4f}, {self.short_results} short results, latency p50 "
            f"{self.latency_p50_ms:.2f} ms p95 {self.latency_p95_ms:.2f} ms"
        )


@dataclass(frozen=True)
class _Sample:
    id: str
    user_id: str
    user_chunks: int
    vector: str


@dataclass
class _Tally:
    hits: dict[int, int] = field(default_factory=lambda: dict.fromkeys(KS, 0))
    wanted: dict[int, int] = field(default_factory=lambda: dict.fromkeys(KS, 0))
    self_hits: int = 0
    short: int = 0
    worst: list[tuple[float, str]] = field(default_factory=list)


def _table(schema: str, table: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


def _vector_schema(conn: Conn) -> str:
    """The extension's schema: the session's search_path need not reach it, so names are
    qualified (the plan is the same as for the app's unqualified ``$1::vector``)."""
    row = conn.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'vector'"
    ).fetchone()
    return str(row[0]) if row else "public"


def _sample(conn: Conn, table: sql.Composed, size: int) -> list[_Sample]:
    """Every user's first chunk (largest users first), then chunks at random, up to `size`."""
    query = sql.SQL(
        "WITH c AS (SELECT id::text AS id, user_id::text AS user_id, md5(id::text) AS h, "
        "row_number() OVER (PARTITION BY user_id ORDER BY md5(id::text)) AS rn, "
        "count(*) OVER (PARTITION BY user_id) AS n FROM {t}), "
        "picked AS (SELECT id FROM ((SELECT id, 0 AS part, rn, -n AS m, h FROM c "
        "ORDER BY rn, n DESC, h LIMIT %(half)s) UNION ALL (SELECT id, 1, 0, 0, h FROM c "
        "ORDER BY h LIMIT %(size)s)) p GROUP BY id ORDER BY min(part), min(rn), min(m), min(h) "
        "LIMIT %(size)s) "
        "SELECT c.id, c.user_id, c.n, x.embedding::text FROM picked JOIN c USING (id) "
        "JOIN {t} x ON x.id::text = c.id ORDER BY c.h"
    ).format(t=table)
    rows = conn.execute(query, {"half": (size + 1) // 2, "size": size}).fetchall()
    return [_Sample(str(a), str(b), int(n), str(v)) for a, b, n, v in rows]


def _exact(conn: Conn, table: sql.Composed, ids: list[str]) -> dict[str, list[float]]:
    """The 10 exact nearest distances per sampled chunk: index scans off, same snapshot."""
    conn.execute("SET LOCAL enable_indexscan = off")
    conn.execute("SET LOCAL enable_indexonlyscan = off")
    rows = conn.execute(
        sql.SQL(
            "SELECT s.id::text, n.d FROM {t} s CROSS JOIN LATERAL (SELECT x.embedding <=> "
            "s.embedding AS d FROM {t} x WHERE x.user_id = s.user_id "
            "ORDER BY x.embedding <=> s.embedding LIMIT {k}) n "
            "WHERE s.id::text = ANY(%s) ORDER BY 1, 2"
        ).format(t=table, k=sql.Literal(max(KS))),
        (ids,),
    ).fetchall()
    exact: dict[str, list[float]] = {i: [] for i in ids}
    for chunk_id, distance in rows:
        exact[str(chunk_id)].append(float(distance))
    return exact


def _app_query(table: sql.Composed, vtype: sql.Composed) -> sql.Composed:
    """The app's query: its columns, its filter, its order, parameters as it sends them."""
    return sql.SQL(
        "SELECT id, document_id, content, embedding <=> %(v)s::{vt} AS distance FROM {t} "
        "WHERE user_id = %(u)s ORDER BY embedding <=> %(v)s::{vt} LIMIT %(k)s"
    ).format(t=table, vt=vtype)


Results = dict[tuple[str, int], list[tuple[str, float]]]


def _run_app_queries(
    conn: Conn, query: sql.Composed, samples: list[_Sample]
) -> tuple[Results, list[float]]:
    """Each sample at each k, one statement at a time (as the app sends them), timed."""
    results: Results = {}
    latencies: list[float] = []
    for s in samples:
        for k in KS:
            started = time.perf_counter()
            rows = conn.execute(query, {"v": s.vector, "u": s.user_id, "k": k}).fetchall()
            latencies.append((time.perf_counter() - started) * 1000)
            results[s.id, k] = [
                (str(r[0]), float(r[3]) if r[3] is not None else math.nan) for r in rows
            ]
    return results, latencies


def _score(
    tally: _Tally, s: _Sample, k: int, got: list[tuple[str, float]], exact: list[float]
) -> None:
    """Count one query's hits: results no farther than the k-th exact distance (ties count)."""
    wanted = min(k, s.user_chunks)
    if wanted == 0:
        return
    bound = exact[wanted - 1] if len(exact) >= wanted else math.inf
    hits = min(wanted, sum(1 for _, d in got if d <= bound + TIE))
    tally.hits[k] += hits
    tally.wanted[k] += wanted
    if len(got) < wanted:
        tally.short += 1
    if hits < wanted:
        tally.worst.append(
            (
                hits / wanted,
                f"chunk {s.id} of user {s.user_id} ({s.user_chunks} chunks): k={k} returned "
                f"{len(got)} rows, {hits} of the {wanted} nearest",
            )
        )
    if k == KS[0]:
        first = got[0] if got else None
        if first is not None and (first[0] == s.id or first[1] <= TIE):
            tally.self_hits += 1


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 3)


def _session_settings(conn: Conn) -> dict[str, str]:
    rows = conn.execute(
        "SELECT name, setting FROM pg_settings WHERE name = ANY(%s) ORDER BY name",
        (list(SEARCH_SETTINGS),),
    ).fetchall()
    return {str(n): str(v) for n, v in rows}


def _counts(conn: Conn, table: sql.Composed, vschema: str) -> tuple[int, int, int]:
    """(chunks, users, chunks whose vector is all zeros)."""
    row = conn.execute(
        sql.SQL(
            "SELECT count(*), count(DISTINCT user_id), "
            "count(*) FILTER (WHERE {}.vector_norm(embedding) = 0) FROM {}"
        ).format(sql.Identifier(vschema), table)
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def _fill(
    check: RetrievalCheck, samples: list[_Sample], tally: _Tally, latencies: list[float]
) -> None:
    check.sampled = len(samples)
    check.users_sampled = len({s.user_id for s in samples})
    for k in KS:
        wanted = tally.wanted[k]
        setattr(check, f"recall_at_{k}", round(tally.hits[k] / wanted, 4) if wanted else 1.0)
    check.self_hit_rate = round(tally.self_hits / len(samples), 4) if samples else 1.0
    check.short_results = tally.short
    check.latency_p50_ms = _percentile(latencies, 0.50)
    check.latency_p95_ms = _percentile(latencies, 0.95)
    check.examples = [line for _, line in sorted(tally.worst)[:5]]


def _judge(check: RetrievalCheck, limits: RetrievalThresholds) -> None:
    """Fill `check.failures`: one line per threshold not met, naming the measure and the fix."""
    fix = (
        "raise the re-index's `ef_search` or set its `iterative_scan` (the database settings the "
        "app's sessions inherit), run the re-index again, then verify"
    )
    if check.recall_at_5 < limits.min_recall_at_5:
        check.failures.append(
            f"recall@5 of the app's query is {check.recall_at_5:.4f}, below the minimum "
            f"{limits.min_recall_at_5} (`min_recall_at_5`; {check.sampled} sampled chunks): {fix}"
        )
    if check.short_results > limits.max_short_results:
        check.failures.append(
            f"short results: {check.short_results} app queries returned fewer than k rows while "
            f"the user owns at least k chunks (`max_short_results` {limits.max_short_results}): "
            f"{fix}"
        )
    if check.zero_vectors:
        check.failures.append(
            f"zero vectors: {check.zero_vectors} chunks have an all-zero embedding that cosine "
            "search never finds: re-run the re-index"
        )


def measure_retrieval(
    target: Endpoint,
    schema: str = "public",
    table: str = "qckstrt_embeddings_vectors",
    limits: RetrievalThresholds | None = None,
) -> RetrievalCheck:
    """Measure the app's vector query on `target` in a fresh session and judge it.

    The connection is new and sets nothing, so the query runs with what the app's sessions
    inherit (``ALTER DATABASE``/``ALTER ROLE`` settings). Statements are not prepared (the app's
    driver sends each with its values). Index scans are turned off only for the exact side,
    afterwards, in the same repeatable-read transaction.

    :param limits: the thresholds and the sample size (defaults: 500, recall@5 0.99, no short
        results).
    :returns: the figures; ``failures`` lists each threshold not met (empty when all are).
    """
    limits = limits or RetrievalThresholds()
    check = RetrievalCheck(table=f"{schema}.{table}")
    t = _table(schema, table)
    with target.connect() as conn:
        conn.prepare_threshold = None
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            vschema = _vector_schema(conn)
            vtype = sql.SQL("{}.vector").format(sql.Identifier(vschema))
            check.chunks, check.users, check.zero_vectors = _counts(conn, t, vschema)
            samples = _sample(conn, t, limits.sample_size)
            query = _app_query(t, vtype)
            if samples:  # loads pgvector, whose settings pg_settings then shows with values
                conn.execute(query, {"v": samples[0].vector, "u": samples[0].user_id, "k": 1})
            check.session_settings = _session_settings(conn)
            results, latencies = _run_app_queries(conn, query, samples)
            exact = _exact(conn, t, [s.id for s in samples])
    tally = _Tally()
    for s in samples:
        for k in KS:
            _score(tally, s, k, results[s.id, k], exact.get(s.id, []))
    _fill(check, samples, tally, latencies)
    _judge(check, limits)
    return check
