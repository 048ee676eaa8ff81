"""Progress reporting that the library emits and its skins route.

The library never prints. Long steps call a `Reporter`: the CLI uses `RichReporter` (bars on
stderr when it is a terminal, plain lines otherwise); the Pulumi provider passes
`LogReporter(pulumi.log.info)`; tests pass `LogReporter(list.append)` or `NullReporter()`.
Reporters are called from worker threads, so implementations must be thread-safe.

Why rate and ETA: a re-index of 100,000 chunks on CPU runs for an hour; an operator watching a
bar (or a Pulumi log) needs to know whether to wait or to come back tomorrow. The `Reporter`
protocol carries no unit, so units come from the unit's key (`UNITS`): the keys are the
library's stable step names.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TextIO

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import ProgressColumn, Task, TaskID
    from rich.text import Text

Clock = Callable[[], float]

#: Unit of each progress key; a key ``name:detail`` (``copy:public.users``) uses ``name``'s.
UNITS: Mapping[str, str] = {
    "reindex": "rows",
    "index": "tuples",
    "copy": "bytes",
    "backup": "bytes",
    "verify": "tables",
    "post-data": "statements",
}
DEFAULT_UNIT = "items"


def unit_for(key: str, units: Mapping[str, str] = UNITS) -> str:
    """The unit progress of `key` counts, ``items`` when the key is not known."""
    return units.get(key) or units.get(key.split(":", 1)[0]) or DEFAULT_UNIT


def format_amount(amount: float, unit: str) -> str:
    """``1,200 rows``; bytes in MB, so that a copy's line stays readable."""
    if unit == "bytes":
        return f"{amount / 1e6:,.1f} MB"
    return f"{int(amount):,} {unit}"


def format_fraction(done: float, total: float, unit: str) -> str:
    """``1,200/5,000 rows`` or ``12.6/45.0 MB``."""
    if unit == "bytes":
        return f"{done / 1e6:,.1f}/{total / 1e6:,.1f} MB"
    return f"{int(done):,}/{int(total):,} {unit}"


def format_rate(per_second: float, unit: str) -> str:
    """``31.2 rows/s`` or ``12.5 MB/s``."""
    if unit == "bytes":
        return f"{per_second / 1e6:,.1f} MB/s"
    return f"{per_second:,.1f} {unit}/s"


def format_duration(seconds: float) -> str:
    """Compact and unambiguous: ``45s``, ``2m02s``, ``1h05m``."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


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


@dataclass
class _Unit:
    description: str
    total: int | None
    unit: str
    started: float
    done: int = 0
    last_emit: float = 0.0


class LogReporter:
    """Turns progress into log lines for a callback (``pulumi.log.info``, ``print``, ...).

    Progress of one unit is logged at most every `interval` seconds, so a log is not flooded;
    a line reads ``re-index: 1,200/5,000 rows (24%), 31.2 rows/s, ETA 2m02s``. The rate is the
    average since the unit started: steadier than a recent-window rate, which on a shared machine
    swings with every neighbour's burst, and the ETA built on it does not jump around.

    :param clock: seconds from any origin (``time.monotonic``); tests inject their own.
    :param units: unit per key, `UNITS` by default.
    """

    def __init__(
        self,
        emit: Callable[[str], None],
        interval: float = 10.0,
        *,
        clock: Clock = time.monotonic,
        units: Mapping[str, str] = UNITS,
    ) -> None:
        self._emit = emit
        self._interval = interval
        self._clock = clock
        self._unit_names = units
        self._lock = threading.Lock()
        self._units: dict[str, _Unit] = {}

    def info(self, message: str) -> None:
        with self._lock:
            self._emit(message)

    def start(self, key: str, description: str, total: int | None = None) -> None:
        with self._lock:
            now = self._clock()
            self._units[key] = _Unit(
                description, total, unit_for(key, self._unit_names), now, last_emit=now
            )

    def advance(self, key: str, amount: int) -> None:
        with self._lock:
            unit = self._units.get(key)
            if unit is None:
                return
            unit.done += amount
            now = self._clock()
            if now - unit.last_emit >= self._interval:
                self._emit(self._line(unit, now))
                unit.last_emit = now

    def _line(self, unit: _Unit, now: float) -> str:
        elapsed = now - unit.started
        rate = unit.done / elapsed if elapsed > 0 else 0.0
        if unit.total:
            line = (
                f"{unit.description}: {format_fraction(unit.done, unit.total, unit.unit)} "
                f"({100 * unit.done // unit.total}%)"
            )
        else:
            line = f"{unit.description}: {format_amount(unit.done, unit.unit)}"
        if rate > 0:
            line += f", {format_rate(rate, unit.unit)}"
            if unit.total:
                remaining = max(0, unit.total - unit.done) / rate
                line += f", ETA {format_duration(remaining)}"
        return line

    def finish(self, key: str, message: str | None = None) -> None:
        with self._lock:
            unit = self._units.pop(key, None)
            if message is not None:
                self._emit(message)
            elif unit is not None:
                self._emit(f"{unit.description}: done")


def _rate_column() -> type[ProgressColumn]:
    """Build the rate column class lazily: rich is imported only where a bar is drawn."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """``31.2 rows/s`` from rich's windowed speed, in the task's unit."""

        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            if speed is None:
                return Text("?/s", style="progress.data.speed")
            unit = str(task.fields.get("unit", DEFAULT_UNIT))
            return Text(format_rate(speed, unit), style="progress.data.speed")

    return RateColumn


class RichReporter:
    """Progress bars on stderr when it is a terminal; plain `LogReporter` lines otherwise.

    A bar shows done/total, percent, rate in the unit's own terms, elapsed time and ETA.

    :param stream: where to draw (stderr by default); ignored when `console` is given.
    :param console: a rich console to draw on (tests pass one with ``force_terminal=True``).
    :param clock: time source for rates and ETAs (tests inject one).
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        console: Console | None = None,
        clock: Clock | None = None,
        units: Mapping[str, str] = UNITS,
    ) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._console = console or Console(file=stream or sys.stderr)
        self._lock = threading.Lock()
        self._live = self._console.is_terminal
        self._units = units
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            _rate_column()(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self._console,
            transient=False,
            get_time=clock,
        )
        self._tasks: dict[str, TaskID] = {}
        self._fallback = LogReporter(
            lambda line: self._console.print(line, highlight=False, markup=False, soft_wrap=True),
            clock=clock or time.monotonic,
            units=units,
        )
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
            self._progress.console.print(message, highlight=False, markup=False)

    def start(self, key: str, description: str, total: int | None = None) -> None:
        if not self._live:
            self._fallback.start(key, description, total)
            return
        with self._lock:
            self._ensure()
            self._tasks[key] = self._progress.add_task(
                description, total=total, unit=unit_for(key, self._units)
            )

    def advance(self, key: str, amount: int) -> None:
        if not self._live:
            self._fallback.advance(key, amount)
            return
        with self._lock:
            task = self._tasks.get(key)
            if task is not None:
                self._progress.advance(task, amount)

    def refresh(self) -> None:
        """Redraw now (the live display otherwise redraws ten times a second)."""
        with self._lock:
            if self._started:
                self._progress.refresh()

    def finish(self, key: str, message: str | None = None) -> None:
        if not self._live:
            self._fallback.finish(key, message)
            return
        with self._lock:
            task = self._tasks.pop(key, None)
            if task is not None:
                self._progress.remove_task(task)
            if message:
                self._progress.console.print(message, highlight=False, markup=False)

    def close(self) -> None:
        """Stop the live display (call once at the end)."""
        with self._lock:
            if self._started:
                self._progress.stop()
                self._started = False
