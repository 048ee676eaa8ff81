"""Step 4 of the pipeline (3 of this engine): compare source and target table by table.

Per table: row counts and an order-independent content checksum computed in SQL on both sides
(the sum, as numeric, of the first 64 bits of md5 of each row's text). A sum, unlike xor, also
notices duplicated rows. The vector table's checksum leaves out `embedding`, which the re-index
rewrites. Both sessions use the same output settings (UTC, ISO dates), so text forms agree.

The import's state is read first: a target whose import is not complete never passes.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from psycopg import errors, sql

from migration import state
from migration.connection import Conn, Endpoint, refuse_same_database
from migration.errors import UnknownSchema, VerificationFailed
from migration.progress import NullReporter, Reporter

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
    #: The sample similarity query: each sampled chunk's own vector, searched for with `<=>`
    #: as the app searches, must find that chunk first (or an identical vector).
    similarity: list[dict[str, Any]] = field(default_factory=list)

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
    vector_table: str = VECTOR_TABLE,
    reporter: Reporter | None = None,
) -> VerifyReport:
    """Compare every application table of `source` with `target`.

    :param schemas: application schemas (default ``public``).
    :param left_out_columns: table -> columns kept out of the checksum (default: the vector
        table's `embedding`).
    :param vector_table: the table the re-index rewrites (the stack's ``vectorTable``).
    :param reporter: receives one line per table.
    :returns: the report (``ok`` True).
    :raises VerificationFailed: any mismatch, a missing table, or an incomplete import; the
        exception carries the report.
    """
    rep = reporter or NullReporter()
    schemas = schemas or ["public"]
    skip = {vector_table: ("embedding",)} if left_out_columns is None else left_out_columns
    with source.connect(autocommit=True) as sconn, target.connect(autocommit=True) as tconn:
        refuse_same_database(sconn, tconn)
        run = state.read(tconn)
        import_state = "none" if run is None else run.status
        report = VerifyReport(ok=False, import_state=import_state)
        if run is not None and not run.complete:
            pending = sorted(f"{s}.{t}" for (s, t), st in run.tables.items() if st != "copied")
            report.mismatches = pending
            detail = f" ({len(pending)} tables not copied: {', '.join(pending)})" if pending else ""
            raise VerificationFailed(
                f"the import into the target is incomplete{detail}: run the import again "
                "(it resumes), then verify",
                report,
            )
        known = {
            str(r[0])
            for r in sconn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", (schemas,)
            ).fetchall()
        }
        if missing := [s for s in schemas if s not in known]:
            raise UnknownSchema(f"schema {', '.join(missing)} does not exist on the source")
        sconn.execute(_SESSION)
        tconn.execute(_SESSION)
        tables = _tables(sconn, schemas)
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
                report.tables.append(
                    TableCheck(
                        label,
                        s_rows,
                        target_rows,
                        s_sum,
                        target_sum,
                        [c for c in columns if c not in used],
                        ok,
                    )
                )
                if not ok:
                    report.mismatches.append(label)
                rep.advance("verify", 1)
        rep.finish("verify", f"verified {len(tables)} tables")
        if any(t == vector_table for _, t, _ in tables) and report.mismatches == []:
            vector_schema = next(s for s, t, _ in tables if t == vector_table)
            report.similarity = similarity_sample(tconn, vector_schema, table=vector_table)
            failed = [c for c in report.similarity if not c["ok"]]
            for check in failed:
                report.mismatches.append(
                    f"nearest-neighbour search for chunk {check['id']} returned "
                    f"{check['nearest']} at distance {check['distance']}, not the chunk itself"
                )
            if report.similarity:
                rep.info(
                    f"similarity: {len(report.similarity) - len(failed)} of "
                    f"{len(report.similarity)} sampled chunks find themselves first"
                )
    report.ok = not report.mismatches
    if not report.ok:
        raise VerificationFailed(
            f"source and target differ in {', '.join(report.mismatches)}", report
        )
    return report


def similarity_sample(
    conn: Conn, schema: str, size: int = 5, table: str = VECTOR_TABLE
) -> list[dict[str, Any]]:
    """Search for a few chunks by their own vector, the way the app searches (cosine, `<=>`).

    Counts and checksums leave the embedding out (the re-index rewrites it), so this is the
    check that the vectors and their index answer queries: every sampled chunk must come back
    first, at distance 0 (an identical vector of a duplicate text counts too). ``ef_search`` is
    raised for the check so that the approximate index does not miss by chance.
    """
    qualified = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))
    checks: list[dict[str, Any]] = []
    with conn.transaction():
        with contextlib.suppress(errors.UndefinedObject), conn.transaction():
            conn.execute("SET LOCAL hnsw.ef_search = 200")
        sample = conn.execute(
            sql.SQL(
                "SELECT id FROM {} WHERE embedding IS NOT NULL ORDER BY md5(id::text) LIMIT %s"
            ).format(qualified),
            (size,),
        ).fetchall()
        for (chunk_id,) in sample:
            row = conn.execute(
                sql.SQL(
                    "WITH q AS (SELECT embedding AS v FROM {t} WHERE id = %s) "
                    "SELECT id, embedding <=> (SELECT v FROM q) FROM {t} "
                    "ORDER BY embedding <=> (SELECT v FROM q) LIMIT 1"
                ).format(t=qualified),
                (chunk_id,),
            ).fetchone()
            nearest, distance = (str(row[0]), float(row[1])) if row else ("nothing", 1.0)
            checks.append(
                {
                    "id": str(chunk_id),
                    "nearest": nearest,
                    "distance": round(distance, 6),
                    "ok": nearest == str(chunk_id) or distance < 1e-6,
                }
            )
    return checks
