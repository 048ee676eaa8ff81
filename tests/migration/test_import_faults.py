"""The import under faults: connections terminated mid-copy, and two runs on one target at once."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from migration.db.connection import Endpoint
from migration.db.lock import TargetBusy
from migration.errors import ImportFailed
from migration.progress import LogReporter, NullReporter
from migration.steps.extension import setup_extension
from migration.steps.transfer import ImportOptions, import_database
from migration.steps.verify import verify
from tests.databases import Servers

VECTORS = "copy:public.qckstrt_embeddings_vectors"


def _prepare(servers: Servers) -> tuple[Endpoint, Endpoint, str]:
    _, source_url = servers.source_db()
    name, target_url = servers.target_db()
    src, tgt = Endpoint(source_url, "source"), Endpoint(target_url, "target")
    setup_extension(tgt, src)
    return src, tgt, name


class _Terminator(LogReporter):
    """Terminates the target backend that is copying, from a second session, mid-COPY.

    Runs in the copying thread, at its first progress tick of the vector table, so the kill lands
    while the COPY is in flight, deterministically.
    """

    def __init__(self, servers: Servers, database: str, times: int) -> None:
        self.lines: list[str] = []
        super().__init__(self.lines.append, interval=0)
        self._servers, self._database, self._left = servers, database, times
        self.killed = 0

    def advance(self, key: str, amount: int) -> None:
        super().advance(key, amount)
        if key == VECTORS and self._left > 0:
            self._left -= 1
            with self._servers.target.superuser() as conn:
                pids = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND state = 'active' AND query ILIKE 'COPY%%FROM STDIN%%'",
                    (self._database,),
                ).fetchall()
            self.killed += len(pids)


def test_a_terminated_copy_is_retried_and_the_import_completes(servers: Servers) -> None:
    src, tgt, name = _prepare(servers)
    rep = _Terminator(servers, name, times=1)
    report = import_database(src, tgt, ImportOptions(jobs=1, retries=3), rep)
    assert rep.killed == 1
    retried = [line for line in rep.lines if "lost the connection while copying" in line]
    assert retried and "retrying in" in retried[0] and "attempt 2 of 4" in retried[0]
    assert {t.status for t in report.tables} == {"copied"}
    assert verify(src, tgt).ok


def test_a_connection_lost_every_time_stops_clearly_then_a_rerun_completes(
    servers: Servers,
) -> None:
    src, tgt, name = _prepare(servers)
    rep = _Terminator(servers, name, times=99)
    with pytest.raises(ImportFailed) as info:
        import_database(src, tgt, ImportOptions(jobs=1, retries=2), rep)
    message = str(info.value)
    assert "lost the connection while copying public.qckstrt_embeddings_vectors" in message
    assert "3 times" in message and "run the import again" in message
    assert rep.killed == 3
    resumed = import_database(src, tgt, ImportOptions(jobs=1))
    assert resumed.resumed
    statuses = {t.table: t.status for t in resumed.tables}
    assert statuses["qckstrt_embeddings_vectors"] == "copied"
    assert "copied earlier" in statuses.values()
    assert verify(src, tgt).ok


class _Pause(NullReporter):
    """Holds the import (and so its lock) at its first table until released."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()

    def start(self, key: str, description: str, total: int | None = None) -> None:
        if key.startswith("copy:") and not self.reached.is_set():
            self.reached.set()
            assert self.release.wait(60)


def test_a_second_run_fails_fast_naming_the_first_or_waits_for_it(servers: Servers) -> None:
    src, tgt, _ = _prepare(servers)
    pause = _Pause()
    results: dict[str, Any] = {}

    def first() -> None:
        results["first"] = import_database(src, tgt, ImportOptions(jobs=1), pause)

    runner = threading.Thread(target=first)
    runner.start()
    try:
        assert pause.reached.wait(60)
        with pytest.raises(TargetBusy) as info:
            import_database(src, tgt, ImportOptions())
        assert "another qckstrt-migrate run is working" in str(info.value)
        assert "qckstrt-migrate" in str(info.value) and "pid" in str(info.value)

        def second() -> None:
            results["second"] = import_database(src, tgt, ImportOptions(lock_wait_seconds=60))

        waiter = threading.Thread(target=second)
        waiter.start()
        pause.release.set()
        runner.join(120)
        waiter.join(120)
    finally:
        pause.release.set()
        runner.join(120)
    # The second waited for the first, then found the import complete: it wrote nothing.
    assert results["second"].already_complete
    assert all(t.status == "copied earlier" for t in results["second"].tables)
    assert verify(src, tgt).ok
    count = "SELECT count(*) FROM public.qckstrt_embeddings_vectors"
    with psycopg.connect(tgt.url) as t, psycopg.connect(src.url) as s:
        assert t.execute(count).fetchone() == s.execute(count).fetchone()
