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

Those of the import (``su``: a target superuser URL, ``tb``/``sp``/``rn``: the import's state
tables ``qckstrt_migrate.tables``/``steps``/``run``, which need not exist yet: a gate on a table
that does not exist arms itself when the table is created, inside the creating transaction):

11. backup's pg_dump running, nothing written: ``SequenceGate(source_su, "public.some_seq")``
12. backup file holds data: ``file_has_data(backup_dir, "source.dump")``
13. pre-data applied, not committed: ``DdlGate(su, "CREATE TABLE", when=created("..steps"))``
14. a table's COPY started (after its TRUNCATE): ``Gate(su, t, timing="BEFORE", event="INSERT")``
15. a table's rows copied, its state row not yet written: ``Gate(su, t, event="INSERT")``
16. K tables committed, the next one's state written: ``Gate(su, tb, when="count >= K + 1")``
17. sequences set, not recorded: ``Gate(su, sp, timing="BEFORE", event="INSERT")``
18. N post-data statements committed: ``Gate(su, sp, event="INSERT", when="count >= N + 1")``
19. everything done, the run not yet marked complete: ``Gate(su, rn, timing="BEFORE")``
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
from typing import Protocol, Self

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


def tool_sessions_gone(superuser_url: str) -> Predicate:
    """True once no session of qckstrt-migrate is connected to the URL's database.

    Why: after a SIGKILL the killed run's server sessions end on their own schedule (a parked
    one only once its gate opens); once they are gone, the database holds everything the killed
    run will ever have committed, so what a check reads then is the state a re-run starts from.
    """
    return _Query(
        superuser_url,
        "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'qckstrt-migrate' AND pid <> pg_backend_pid())",
        label="no qckstrt-migrate session left",
    )


class _FileHasData:
    def __init__(self, directory: Path, name: str) -> None:
        self._directory, self._name = directory, name

    def __call__(self) -> bool:
        return any(p.stat().st_size > 0 for p in self._directory.rglob(self._name))

    def __repr__(self) -> str:
        return f"a non-empty {self._name} under {self._directory}"


def file_has_data(directory: Path, name: str) -> Predicate:
    """True once a file called `name` somewhere under `directory` is not empty."""
    return _FileHasData(directory, name)


def index_build_running(url: str) -> Predicate:
    """True while some session is building an index (pg_stat_progress_create_index)."""
    return _Query(
        url, "SELECT EXISTS (SELECT 1 FROM pg_stat_progress_create_index)", label="index build"
    )


# ---------------------------------------------------------------------------------------------
# Gates


class Stop(Protocol):
    """A kill point: armed on entry, disarmed on exit; `reached` is polled by `kill_when`."""

    parked_pids: list[int]

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def reached(self) -> bool: ...


class Poll:
    """A kill point that only observes (`predicate`): the step is not held there.

    Why both kinds: a gate says exactly where the step stands, but only where the database sees
    the step; a poll reaches points outside the database (a backup file being written).
    """

    def __init__(self, predicate: Predicate) -> None:
        self._predicate = predicate
        self.parked_pids: list[int] = []

    def __repr__(self) -> str:
        return repr(self._predicate)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def reached(self) -> bool:
        return self._predicate()


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

    def _exists(self, conn: psycopg.Connection[tuple[object, ...]]) -> bool:
        row = conn.execute("SELECT to_regclass(%s)", (self._table.as_string(conn),)).fetchone()
        return row is not None and row[0] is not None

    def _install(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        body = f"BEGIN IF ({self._when}) THEN {self._wait_sql()} END IF; RETURN NULL; END"
        conn.execute(
            sql.SQL(
                "CREATE OR REPLACE FUNCTION public.qckstrt_test_gate() RETURNS trigger "
                "LANGUAGE plpgsql AS {}"
            ).format(sql.Literal(body))
        )
        create = sql.SQL(
            "CREATE TRIGGER qckstrt_test_gate " + self._timing + " " + self._event + " ON {} "
            "FOR EACH STATEMENT EXECUTE FUNCTION public.qckstrt_test_gate()"
        ).format(self._table)
        if self._exists(conn):
            conn.execute(create)
            return
        # The step creates the table itself (the import's state tables, the tables of its
        # pre-data): arm the gate from the end of that CREATE TABLE, in the step's own
        # transaction, so it is in place before the first row can be written.
        name = sql.Literal(self._table.as_string(conn))
        arm = sql.SQL(
            "BEGIN IF to_regclass({name}) IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_trigger "
            "WHERE tgname = 'qckstrt_test_gate' AND tgrelid = to_regclass({name})) "
            "THEN EXECUTE {create}; END IF; END"
        ).format(name=name, create=sql.Literal(create.as_string(conn)))
        conn.execute(
            sql.SQL(
                "CREATE OR REPLACE FUNCTION public.qckstrt_test_gate_arm() "
                "RETURNS event_trigger LANGUAGE plpgsql AS {}"
            ).format(sql.Literal(arm.as_string(conn)))
        )
        conn.execute(
            "CREATE EVENT TRIGGER qckstrt_test_gate_arm ON ddl_command_end "
            "WHEN TAG IN ('CREATE TABLE') EXECUTE FUNCTION public.qckstrt_test_gate_arm()"
        )

    def _remove(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        conn.execute("DROP EVENT TRIGGER IF EXISTS qckstrt_test_gate_arm")
        conn.execute("DROP FUNCTION IF EXISTS public.qckstrt_test_gate_arm()")
        if self._exists(conn):
            conn.execute(
                sql.SQL("DROP TRIGGER IF EXISTS qckstrt_test_gate ON {}").format(self._table)
            )
        conn.execute("DROP FUNCTION IF EXISTS public.qckstrt_test_gate()")


class DdlGate(_Parking):
    """Park a session at the end of a DDL command (``CREATE INDEX``, ``ALTER TABLE``, ...).

    An event trigger on ``ddl_command_end``: the command's work is done but its transaction is
    still open, so a kill there shows whether a half-finished index build, index swap or column
    rewrite is rolled back and redone. Needs a superuser URL.

    :param tag: the command tag to stop at.
    :param when: a boolean SQL expression, evaluated at the end of each such command (for
        example `ddl_created`).
    """

    def __init__(self, superuser_url: str, tag: str = "CREATE INDEX", when: str = "true") -> None:
        super().__init__(superuser_url)
        self._tag, self._when = tag, when

    def __repr__(self) -> str:
        return f"gate at the end of {self._tag} when {self._when}"

    def _install(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        body = (
            f"BEGIN IF tg_tag = {sql.quote(self._tag)} AND ({self._when}) "
            f"THEN {self._wait_sql()} END IF; END"
        )
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


def ddl_created(identity: str) -> str:
    """A `DdlGate` condition: the command just created the object `identity` (``schema.name``)."""
    return (
        sql.SQL("EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands() WHERE object_identity = {})")
        .format(sql.Literal(identity))
        .as_string()
    )


class SequenceGate:
    """Park a session that reads `sequence`, by holding an ACCESS EXCLUSIVE lock on it.

    Why a sequence: pg_dump locks every table when it starts (the import's schema-only dump as
    much as its backup), but reads a sequence's value only when it dumps data, and does so before
    it writes any of a custom-format archive. A lock on a sequence therefore parks the backup's
    pg_dump, and nothing before it. The lock comes from renaming the sequence in a transaction
    that is rolled back on exit (LOCK TABLE refuses sequences); other sessions never see the new
    name. Needs a superuser URL (or the sequence's owner).

    :param sequence: schema-qualified, as ``regclass`` input (``public.audit_logs_id_seq``).
    """

    def __init__(self, superuser_url: str, sequence: str) -> None:
        self._url, self._sequence = superuser_url, sequence
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._oid = 0
        self.parked_pids: list[int] = []

    def __repr__(self) -> str:
        return f"a session waiting to read {self._sequence}"

    def __enter__(self) -> Self:
        self._conn = psycopg.connect(self._url, connect_timeout=10)
        row = self._conn.execute("SELECT %s::regclass::oid", (self._sequence,)).fetchone()
        assert row is not None
        self._oid = int(str(row[0]))
        self._conn.execute(
            sql.SQL("ALTER SEQUENCE {} RENAME TO qckstrt_test_parked_seq").format(
                sql.SQL(self._sequence)
            )
        )
        return self

    def reached(self) -> bool:
        """True once a session waits for the sequence; records its pid in `parked_pids`."""
        assert self._conn is not None, "use the gate as a context manager"
        rows = self._conn.execute(
            "SELECT pid FROM pg_locks WHERE relation = %s AND NOT granted", (self._oid,)
        ).fetchall()
        self.parked_pids = [int(str(r[0])) for r in rows]
        return bool(rows)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._conn is not None:
            self._conn.rollback()
            self._conn.close()
            self._conn = None
