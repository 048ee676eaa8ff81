"""Progress reporting that the library emits and its skins route.

The library never prints. Long steps call a `Reporter`: the CLI uses `RichReporter` (bars on
stderr when it is a terminal, plain lines otherwise); the Pulumi provider will pass
`LogReporter(pulumi.log.info)`; tests pass `LogReporter(list.append)` or `NullReporter()`.
Reporters are called from worker threads, so implementations must be thread-safe.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Protocol, TextIO


class Reporter(Protocol):
    """What the library calls while it works."""

    def info(self, message: str) -> None:
        """A one-line event (step started, object left out, ...)."""

    def start(self, key: str, description: str, total: int | None = None) -> None:
        """A unit of work with an optional total (rows, bytes, statements) begins."""

    def advance(self, key: str, amount: int) -> None:
        """`amount` more of `key` is done."""

    def finish(self, key: str, message: str | None = None) -> None:
        """`key` is done; `message` summarises it."""


class NullReporter:
    """Discards everything."""

    def info(self, message: str) -> None:
        return None

    def start(self, key: str, description: str, total: int | None = None) -> None:
        return None

    def advance(self, key: str, amount: int) -> None:
        return None

    def finish(self, key: str, message: str | None = None) -> None:
        return None


class LogReporter:
    """Turns progress into log lines for a callback (``pulumi.log.info``, ``print``, ...).

    Progress of one unit is logged at most every `interval` seconds, so a log is not flooded.
    """

    def __init__(self, emit: Callable[[str], None], interval: float = 10.0) -> None:
        self._emit = emit
        self._interval = interval
        self._lock = threading.Lock()
        self._units: dict[str, tuple[str, int | None, int, float]] = {}

    def info(self, message: str) -> None:
        with self._lock:
            self._emit(message)

    def start(self, key: str, description: str, total: int | None = None) -> None:
        with self._lock:
            self._units[key] = (description, total, 0, time.monotonic())

    def advance(self, key: str, amount: int) -> None:
        with self._lock:
            if key not in self._units:
                return
            description, total, done, last = self._units[key]
            done += amount
            now = time.monotonic()
            if now - last >= self._interval:
                share = f" ({100 * done // total}%)" if total else ""
                self._emit(f"{description}: {done:,}{share}")
                last = now
            self._units[key] = (description, total, done, last)

    def finish(self, key: str, message: str | None = None) -> None:
        with self._lock:
            unit = self._units.pop(key, None)
            if message is not None:
                self._emit(message)
            elif unit is not None:
                self._emit(f"{unit[0]}: done")


class RichReporter:
    """Progress bars on stderr when it is a terminal; plain lines otherwise."""

    def __init__(self, stream: TextIO | None = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._console = Console(file=stream or sys.stderr)
        self._lock = threading.Lock()
        self._live = self._console.is_terminal
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self._console,
            transient=False,
        )
        self._tasks: dict[str, object] = {}
        self._fallback = LogReporter(lambda line: self._console.print(line, highlight=False))
        self._started = False

    def _ensure(self) -> None:
        if self._live and not self._started:
            self._progress.start()
            self._started = True

    def info(self, message: str) -> None:
        if not self._live:
            self._fallback.info(message)
            return
        with self._lock:
            self._ensure()
            self._progress.console.print(message, highlight=False)

    def start(self, key: str, description: str, total: int | None = None) -> None:
        if not self._live:
            self._fallback.start(key, description, total)
            return
        with self._lock:
            self._ensure()
            self._tasks[key] = self._progress.add_task(description, total=total)

    def advance(self, key: str, amount: int) -> None:
        if not self._live:
            self._fallback.advance(key, amount)
            return
        with self._lock:
            task = self._tasks.get(key)
            if task is not None:
                self._progress.advance(task, amount)  # type: ignore[arg-type]

    def finish(self, key: str, message: str | None = None) -> None:
        if not self._live:
            self._fallback.finish(key, message)
            return
        with self._lock:
            task = self._tasks.pop(key, None)
            if task is not None:
                self._progress.remove_task(task)  # type: ignore[arg-type]
            if message:
                self._progress.console.print(message, highlight=False)

    def close(self) -> None:
        """Stop the live display (call once at the end)."""
        with self._lock:
            if self._started:
                self._progress.stop()
                self._started = False
