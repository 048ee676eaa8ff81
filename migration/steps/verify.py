"""Step 4 of the pipeline (3 of this engine): compare source and target table by table, then
measure retrieval as the app runs it.

Per table: row counts and an order-independent content checksum computed in SQL on both sides
(the sum, as numeric, of the first 64 bits of md5 of each row's text). A sum, unlike xor, also
notices duplicated rows. The vector table's checksum leaves out `embedding`, which the re-index
rewrites. Both sessions use the same output settings (UTC, ISO dates), so text forms agree.

Counts and checksums cannot see whether the app's vector search works on the target, so the
vector table is then measured with `migration.steps.retrieval` (recall@3/5/10 of the app's own query
against exact search, short results, self-hits, latency) and judged against thresholds.

The import's state is read first: a target whose import is not complete never passes.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from psycopg import errors, sql

from migration.db import state
from migration.db.connection import Conn, Endpoint, refuse_same_database
from migration.errors import UnknownSchema, VerificationFailed
from migration.progress import NullReporter, Reporter
from migration.steps.retrieval import RetrievalCheck, RetrievalThresholds, measure_retrieval

VECTOR_TABLE = "qckstrt_embeddings_vectors"
DEFAULT_LEFT_OUT = {VECTOR_TABLE: ("embedding",)}

_SESSION = (
    "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; "
    "SET extra_float_digits = 1; SET bytea_output = 'hex'"
)


@dataclass
class TableCheck:
    """One table's comparison."""

    table: str
    source_rows: int
    target_rows: int | None
    source_checksum: str
    target_checksum: str | None
    columns_left_out: list[str]
    ok: bool


@dataclass
class VerifyReport:
    """The verification outcome; `as_dict` is JSON-able."""

    ok: bool
    import_state: str
    tables: list[TableCheck] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    #: The app's vector query measured against exact search (None: no vector table, or the
    #: tables already differ).
    retrieval: RetrievalCheck | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _tables(conn: Conn, schemas: list[str]) -> list[tuple[str, str, list[str]]]:
    rows = conn.execute(
        "SELECT n.nspname, c.relname, ARRAY(SELECT a.attname FROM pg_attribute a "
        "WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY a.attnum)::text[] "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
        "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass "
        "AND d.objid = c.oid AND d.deptype = 'e') ORDER BY 1, 2",
        (schemas,),
    ).fetchall()
    return [(str(s), str(n), list(c)) for s, n, c in rows]


def checksum(conn: Conn, schema: str, table: str, columns: list[str]) -> tuple[int, str]:
    """Return (rows, checksum) of `columns` of a table; order-independent.

    :raises psycopg.errors.UndefinedTable / UndefinedColumn: the table or a column is missing.
    """
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    query = sql.SQL(
        "SELECT count(*), "
        "coalesce(sum(('x' || left(md5(t::text), 16))::bit(64)::bigint::numeric), 0) "
        "FROM (SELECT {} FROM ONLY {}.{}) t"
    ).format(cols, sql.Identifier(schema), sql.Identifier(table))
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def verify(
    source: Endpoint,
    target: Endpoint,
    schemas: list[str] | None = None,
    *,
    left_out_columns: dict[str, tuple[str, ...]] | None = None,
    reporter: Reporter | None = None,
    vector_table: str = VECTOR_TABLE,
    retrieval: RetrievalThresholds | None = None,
) -> VerifyReport:
    """Compare every application table of `source` with `target`, then measure retrieval.

    :param schemas: application schemas (default ``public``).
    :param left_out_columns: table -> columns kept out of the checksum (default: the vector
        table's `embedding`).
    :param reporter: receives one line per table and the retrieval figures.
    :param vector_table: the app's vector table (``<PROJECT>_embeddings_vectors``).
    :param retrieval: sample size and thresholds of the retrieval measure (defaults: 500
        chunks, recall@5 at least 0.99, no short results).
    :returns: the report (``ok`` True).
    :raises VerificationFailed: any mismatch, a missing table, an incomplete import, or the
        app's query below a threshold; the exception carries the report.
    """
    rep = reporter or NullReporter()
    schemas = schemas or ["public"]
    skip: dict[str, tuple[str, ...]] = (
        {vector_table: ("embedding",)} if left_out_columns is None else left_out_columns
    )
    with source.connect(autocommit=True) as sconn, target.connect(autocommit=True) as tconn:
        refuse_same_database(sconn, tconn)
        report = _import_state(tconn)
        _check_schemas(sconn, schemas)
        sconn.execute(_SESSION)
        tconn.execute(_SESSION)
        tables = _tables(sconn, schemas)
        _compare_tables(sconn, tconn, tables, skip, report, rep)
    vector_schema = next((s for s, t, _ in tables if t == vector_table), None)
    if vector_schema is not None and not report.mismatches:
        rep.info(f"measuring the app's vector query on {vector_schema}.{vector_table}")
        report.retrieval = measure_retrieval(target, vector_schema, vector_table, retrieval)
        rep.info(report.retrieval.summary())
    report.ok = not report.mismatches and (report.retrieval is None or report.retrieval.ok)
    if not report.ok:
        raise VerificationFailed(_failure_message(report), report)
    return report


def _import_state(tconn: Conn) -> VerifyReport:
    """A fresh report; refuses a target whose import has not completed."""
    run = state.read(tconn)
    report = VerifyReport(ok=False, import_state="none" if run is None else run.status)
    if run is not None and not run.complete:
        pending = sorted(f"{s}.{t}" for (s, t), st in run.tables.items() if st != "copied")
        report.mismatches = pending
        detail = f" ({len(pending)} tables not copied: {', '.join(pending)})" if pending else ""
        raise VerificationFailed(
            f"the import into the target is incomplete{detail}: run the import again "
            "(it resumes), then verify",
            report,
        )
    return report


def _check_schemas(sconn: Conn, schemas: list[str]) -> None:
    rows = sconn.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", (schemas,)
    ).fetchall()
    known = {str(r[0]) for r in rows}
    if missing := [s for s in schemas if s not in known]:
        raise UnknownSchema(f"schema {', '.join(missing)} does not exist on the source")


def _compare_tables(
    sconn: Conn,
    tconn: Conn,
    tables: list[tuple[str, str, list[str]]],
    skip: dict[str, tuple[str, ...]],
    report: VerifyReport,
    rep: Reporter,
) -> None:
    """Counts and checksums of each table, the source's computed while the target's is."""
    rep.start("verify", "verify tables", len(tables))
    with ThreadPoolExecutor(max_workers=1) as pool:
        for schema, table, columns in tables:
            used = [c for c in columns if c not in skip.get(table, ())]
            future = pool.submit(checksum, sconn, schema, table, used)
            try:
                t_rows, t_sum = checksum(tconn, schema, table, used)
                target_rows: int | None = t_rows
                target_sum: str | None = t_sum
            except (errors.UndefinedTable, errors.UndefinedColumn, errors.InvalidSchemaName):
                target_rows, target_sum = None, None
            s_rows, s_sum = future.result()
            ok = target_rows == s_rows and target_sum == s_sum
            label = f"{schema}.{table}"
            left_out = [c for c in columns if c not in used]
            report.tables.append(
                TableCheck(label, s_rows, target_rows, s_sum, target_sum, left_out, ok)
            )
            if not ok:
                report.mismatches.append(label)
            rep.advance("verify", 1)
    rep.finish("verify", f"verified {len(tables)} tables")


def _failure_message(report: VerifyReport) -> str:
    parts = []
    if report.mismatches:
        parts.append(f"source and target differ in {', '.join(report.mismatches)}")
    if report.retrieval is not None and report.retrieval.failures:
        parts.append("the app's vector search falls short: " + "; ".join(report.retrieval.failures))
    return "; ".join(parts)
