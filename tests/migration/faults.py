"""Fault injection for data steps: run a step in a child process and SIGKILL it at a known point.

Why a child process and SIGKILL: that is what an OOM kill, a lost laptop lid or a cancelled CI
job does; nothing in the process (no ``finally``, no atexit) gets to tidy up, so whatever the
database holds afterwards is what a re-run must cope with.

Why gates: polling a database from the test only says that a point *was* passed. A gate makes
the step *stop* at a point: a trigger waits on an advisory lock the test holds. `Gate` is a
statement trigger on a table the step writes (optionally once a SQL condition holds), `DdlGate`
an event trigger at the end of a DDL command. The step's transaction is then parked between two
statements (vectors updated but their state rows not yet written; an index built but not yet
committed) and `kill_when(child, gate.reached)` kills it exactly there, every time.

Kill points are one line each. Those of the re-index, for reuse (``su``: a superuser URL,
``t``: the vector table, ``st``: ``qckstrt_migrate.embedding_state``, created by an earlier run):

1. some batches committed: ``state_rows_at_least(url, n)``
2. a batch's vectors updated, its state not yet written: ``Gate(su, t, when=...)``
3. a batch's state written, not yet committed: ``Gate(su, st, event="INSERT")``
4. before the first vector is written: ``Gate(su, t, timing="BEFORE")``
5. vector index dropped for the bulk update: ``DdlGate(su, "DROP INDEX")``
6. HNSW index built, not yet committed: ``DdlGate(su, "CREATE INDEX")``
7. index swap, replacement built beside the old one: 6, on a table that has an index
8. index swap, old index dropped, new one not yet renamed: ``DdlGate(su, "ALTER INDEX")``
9. column rewritten to another dimension: ``DdlGate(su, "ALTER TABLE")``
10. orphan state rows deleted, not yet committed: ``Gate(su, st, event="DELETE")``
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg
from psycopg import sql

Predicate = Callable[[], bool]

#: Advisory lock key a gate holds (the tool's own lock uses another key).
GATE_KEY = 7_341_001
_ROOT = Path(__file__).resolve().parents[2]


class KillPointMissed(AssertionError):
    """The child ended (or the wait ran out) before the kill point was reached."""


@dataclass
class Child:
    """A step running in a child process, its output kept in files."""

    proc: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    def output(self) -> tuple[str, str]:
        """(stdout, stderr) so far."""
        return (
            self.stdout_path.read_text(errors="replace"),
            self.stderr_path.read_text(errors="replace"),
        )


def spawn_cli(
    args: Sequence[str], log_dir: Path, env: dict[str, str] | None = None, name: str = "run"
) -> Child:
    """Start ``python -m migration.cli ARGS`` from the repository root.

    Output goes to files in `log_dir`, not pipes: a child that fills a pipe nobody reads would
    stall and never reach its kill point.
    """
    out, err = log_dir / f"{name}.stdout", log_dir / f"{name}.stderr"
    with out.open("wb") as out_file, err.open("wb") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "migration.cli", *args],
            cwd=_ROOT,
            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
            stdout=out_file,
            stderr=err_file,
        )
    return Child(proc, out, err)


def wait_until(predicate: Predicate, timeout: float = 60.0, poll: float = 0.02) -> None:
    """Poll `predicate` until it holds.

    :raises TimeoutError: after `timeout` seconds (a bound for a hung test, not a measurement).
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not reached in {timeout:.0f}s: {predicate!r}")
        time.sleep(poll)


def kill_when(
    child: Child,
    predicate: Predicate,
    timeout: float = 90.0,
    poll: float = 0.01,
) -> None:
    """SIGKILL `child` as soon as `predicate` holds, and reap it.

    :raises KillPointMissed: when the child ends first (with its output, so the failure says
        why) or `timeout` passes; the child is killed in either case.
    """
    proc = child.proc
    deadline = time.monotonic() + timeout
    try:
        while not predicate():
            if proc.poll() is not None:
                out, err = child.output()
                raise KillPointMissed(
                    f"the child exited ({proc.returncode}) before the kill point {predicate!r}\n"
                    f"stdout: {out[-2000:]}\nstderr: {err[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise KillPointMissed(f"kill point {predicate!r} not reached in {timeout:.0f}s")
            time.sleep(poll)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)


# ---------------------------------------------------------------------------------------------
# Predicates on the database (each opens a short connection: the step's own must stay untouched)


class _Query:
    """A predicate that is true when `query` returns a true first column."""

    def __init__(
        self, url: str, query: str, params: Sequence[object] = (), label: str = ""
    ) -> None:
        self._url, self._query, self._params = url, query, tuple(params)
        self._label = label or query

    def __call__(self) -> bool:
        with psycopg.connect(self._url, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute(self._query, self._params).fetchone()
        return bool(row and row[0])

    def __repr__(self) -> str:
        return self._label


class _StateRows:
    """True once the re-index has committed state for at least `n` rows."""

    def __init__(self, url: str, n: int) -> None:
        self._url, self._n = url, n

    def __call__(self) -> bool:
        with psycopg.connect(self._url, autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute("SELECT to_regclass('qckstrt_migrate.embedding_state')")
            if (exists.fetchone() or (None,))[0] is None:
                return False
            row = conn.execute("SELECT count(*) FROM qckstrt_migrate.embedding_state").fetchone()
        return row is not None and int(str(row[0])) >= self._n

    def __repr__(self) -> str:
        return f"embedding_state holds >= {self._n} rows"


def state_rows_at_least(url: str, n: int) -> Predicate:
    """True once the re-index has committed state for at least `n` rows."""
    return _StateRows(url, n)


def sessions_gone(url: str, pids: Sequence[int]) -> Predicate:
    """True once none of the server sessions `pids` exists any more."""
    return _Query(
        url,
        "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s))",
        (list(pids),),
        label=f"sessions {list(pids)} ended",
    )


def index_build_running(url: str) -> Predicate:
    """True while some session is building an index (pg_stat_progress_create_index)."""
    return _Query(
        url, "SELECT EXISTS (SELECT 1 FROM pg_stat_progress_create_index)", label="index build"
    )


# ---------------------------------------------------------------------------------------------
# Gates


class _Parking:
    """The lock half of a gate: held by the test, awaited by the step once the gate triggers."""

    def __init__(self, superuser_url: str) -> None:
        self._url = superuser_url
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self.parked_pids: list[int] = []

    def _install(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        raise NotImplementedError

    def _remove(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        raise NotImplementedError

    def _wait_sql(self) -> str:
        return f"PERFORM pg_advisory_xact_lock_shared({GATE_KEY});"

    def __enter__(self) -> Self:
        self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=10)
        self._conn.execute("SELECT pg_advisory_lock(%s)", (GATE_KEY,))
        self._install(self._conn)
        return self

    def reached(self) -> bool:
        """True once a session waits at the gate; records its pid in `parked_pids`."""
        assert self._conn is not None, "use the gate as a context manager"
        rows = self._conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND classid = 0 AND objid = %s",
            (GATE_KEY,),
        ).fetchall()
        self.parked_pids = [int(str(r[0])) for r in rows]
        return bool(rows)

    def open(self) -> None:
        """Remove the gate and let parked sessions go on."""
        if self._conn is None:
            return
        try:
            # Unlock first: dropping a table trigger waits for the parked transaction to end,
            # and that transaction waits for this lock.
            self._conn.execute("SELECT pg_advisory_unlock(%s)", (GATE_KEY,))
            self._remove(self._conn)
        finally:
            self._conn.close()
            self._conn = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.open()


class Gate(_Parking):
    """Park a session writing `table` inside its transaction, once `when` (SQL) is true.

    A statement-level trigger; needs a superuser URL. Use as a context manager: closed on entry,
    opened (trigger dropped, lock released) on exit, so a parked session that was not killed
    carries on.

    :param timing: ``BEFORE`` or ``AFTER`` the statement.
    :param event: ``INSERT``, ``UPDATE`` or ``DELETE``.
    :param when: a boolean SQL expression, evaluated in the step's transaction at each statement.
    """

    def __init__(
        self,
        superuser_url: str,
        table: str,
        *,
        timing: str = "AFTER",
        event: str = "UPDATE",
        when: str = "true",
        schema: str = "public",
    ) -> None:
        if timing not in ("BEFORE", "AFTER") or event not in ("INSERT", "UPDATE", "DELETE"):
            raise ValueError(
                f"gate {timing} {event}: timing BEFORE/AFTER, event INSERT/UPDATE/DELETE"
            )
        super().__init__(superuser_url)
        self._table = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        self._timing, self._event, self._when = timing, event, when

    def __repr__(self) -> str:
        return f"gate {self._timing} {self._event} when {self._when}"

    def _install(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        body = f"BEGIN IF ({self._when}) THEN {self._wait_sql()} END IF; RETURN NULL; END"
        conn.execute(
            sql.SQL(
                "CREATE OR REPLACE FUNCTION public.qckstrt_test_gate() RETURNS trigger "
                "LANGUAGE plpgsql AS {}"
            ).format(sql.Literal(body))
        )
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER qckstrt_test_gate " + self._timing + " " + self._event + " ON {} "
                "FOR EACH STATEMENT EXECUTE FUNCTION public.qckstrt_test_gate()"
            ).format(self._table)
        )

    def _remove(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        conn.execute(sql.SQL("DROP TRIGGER IF EXISTS qckstrt_test_gate ON {}").format(self._table))
        conn.execute("DROP FUNCTION IF EXISTS public.qckstrt_test_gate()")


class DdlGate(_Parking):
    """Park a session at the end of a DDL command (``CREATE INDEX``, ``ALTER TABLE``, ...).

    An event trigger on ``ddl_command_end``: the command's work is done but its transaction is
    still open, so a kill there shows whether a half-finished index build, index swap or column
    rewrite is rolled back and redone. Needs a superuser URL.

    :param tag: the command tag to stop at.
    """

    def __init__(self, superuser_url: str, tag: str = "CREATE INDEX") -> None:
        super().__init__(superuser_url)
        self._tag = tag

    def __repr__(self) -> str:
        return f"gate at the end of {self._tag}"

    def _install(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        body = f"BEGIN IF tg_tag = {sql.quote(self._tag)} THEN {self._wait_sql()} END IF; END"
        conn.execute(
            sql.SQL(
                "CREATE OR REPLACE FUNCTION public.qckstrt_test_ddl_gate() "
                "RETURNS event_trigger LANGUAGE plpgsql AS {}"
            ).format(sql.Literal(body))
        )
        conn.execute(
            "CREATE EVENT TRIGGER qckstrt_test_ddl_gate ON ddl_command_end "
            "EXECUTE FUNCTION public.qckstrt_test_ddl_gate()"
        )

    def _remove(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        conn.execute("DROP EVENT TRIGGER IF EXISTS qckstrt_test_ddl_gate")
        conn.execute("DROP FUNCTION IF EXISTS public.qckstrt_test_ddl_gate()")
