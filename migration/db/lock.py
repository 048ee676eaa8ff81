"""One data step at a time per target: a PostgreSQL session advisory lock.

Why an advisory lock and not a lock file: two operators (or CI and a laptop) can run against one
RDS instance from different machines; only the database sees both. A session lock is released by
the server when the holder's connection ends, so a killed run never leaves a stale lock behind.

The lock is re-entrant per thread: `qckstrt-migrate run` holds it across its four steps, and each
step's own `target_lock` inside it passes through instead of waiting for itself. Another thread
or process still waits (or fails fast), so two providers or two runs never write at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from migration.db.connection import Conn, Endpoint
from migration.errors import MigrationError

#: One key for every data step of this tool ("qckstr" in ASCII).
LOCK_KEY = 0x71636B737472
#: A re-run right after a killed one may find the killed run's lock still held for a moment: its
#: server session ends only once the server notices the dropped connection (through a proxy or
#: tunnel, after the relay notices too). So the lock is always awaited at least this long; a
#: genuinely running step holds it for minutes and still gets a clear TargetBusy.
LOCK_GRACE_SECONDS = 5.0


class TargetBusy(MigrationError):
    """Another qckstrt-migrate run holds the target's lock."""


def holder(conn: Conn) -> str:
    """Describe the session holding the lock (application, client, since when), for messages."""
    row = conn.execute(
        "SELECT a.pid, a.application_name, a.client_addr::text, a.usename, "
        "date_trunc('second', a.backend_start)::text "
        "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted "
        "AND ((l.classid::bigint << 32) | l.objid::bigint) = %s LIMIT 1",
        (LOCK_KEY,),
    ).fetchone()
    if row is None:
        return "an unknown session"
    pid, app, addr, user, since = row
    return (
        f"pid {pid} ({app or 'unnamed'}, user {user}, from {addr or 'local socket'}, since {since})"
    )


_held = threading.local()


def _depth() -> dict[str, int]:
    if not hasattr(_held, "depth"):
        _held.depth = {}
    depth: dict[str, int] = _held.depth
    return depth


@contextmanager
def target_lock(endpoint: Endpoint, wait_seconds: float = 0.0) -> Iterator[None]:
    """Hold the target's lock for the duration of a step (re-entrant within one thread).

    :param wait_seconds: how long to wait for a running step to finish; never less than
        `LOCK_GRACE_SECONDS`, so a re-run straight after a killed run is not refused.
    :raises TargetBusy: naming the session that holds the lock.
    """
    key = endpoint.identity()
    depth = _depth()
    if depth.get(key):
        depth[key] += 1
        try:
            yield
        finally:
            depth[key] -= 1
        return
    conn = endpoint.connect(autocommit=True)
    try:
        deadline = time.monotonic() + max(LOCK_GRACE_SECONDS, wait_seconds)
        while True:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
            if row is not None and row[0]:
                break
            if time.monotonic() >= deadline:
                raise TargetBusy(
                    f"another qckstrt-migrate run is working on {endpoint.masked}: "
                    f"{holder(conn)}. Wait for it to finish (or raise `lock_wait_seconds`); "
                    "if it is gone, its lock is released when its connection closes"
                )
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        depth[key] = 1
        try:
            yield
        finally:
            depth.pop(key, None)
    finally:
        conn.close()
