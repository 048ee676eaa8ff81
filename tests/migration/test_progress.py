"""What an operator sees while a long step runs: done/total, rate and ETA, as lines or a bar."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from rich.console import Console

from migration.progress import LogReporter, RichReporter, format_duration


class Clock:
    """A clock the test moves by hand, so rates and ETAs are exact."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def test_log_line_shows_done_total_rate_and_eta() -> None:
    clock, lines = Clock(), list[str]()
    rep = LogReporter(lines.append, interval=10.0, clock=clock)
    rep.start("reindex", "re-index", 5000)
    clock.now += 38.4615  # 1,200 rows at 31.2 rows/s
    rep.advance("reindex", 1200)
    assert lines == ["re-index: 1,200/5,000 rows (24%), 31.2 rows/s, ETA 2m02s"]


def test_log_lines_are_throttled_to_the_interval() -> None:
    clock, lines = Clock(), list[str]()
    rep = LogReporter(lines.append, interval=10.0, clock=clock)
    rep.start("reindex", "re-index", 1000)
    for _ in range(50):  # 50 batches, one per second
        clock.now += 1.0
        rep.advance("reindex", 20)
    assert len(lines) == 5
    assert lines[-1] == "re-index: 1,000/1,000 rows (100%), 20.0 rows/s, ETA 0s"
    rep.finish("reindex", "embedded 1,000 rows")
    assert lines[-1] == "embedded 1,000 rows"


def test_unknown_total_shows_rate_without_eta_and_bytes_read_as_mb() -> None:
    clock, lines = Clock(), list[str]()
    rep = LogReporter(lines.append, interval=1.0, clock=clock)
    rep.start("backup", "backup to s3://bucket/dump", None)
    clock.now += 4.0
    rep.advance("backup", 50_000_000)
    rep.start("copy:public.users", "copy public.users", 100_000_000)
    clock.now += 2.0
    rep.advance("copy:public.users", 25_000_000)
    assert lines == [
        "backup to s3://bucket/dump: 50.0 MB, 12.5 MB/s",
        "copy public.users: 25.0/100.0 MB (25%), 12.5 MB/s, ETA 6s",
    ]


def test_unknown_key_counts_items() -> None:
    clock, lines = Clock(), list[str]()
    rep = LogReporter(lines.append, interval=1.0, clock=clock)
    rep.start("something", "work", 10)
    clock.now += 2.0
    rep.advance("something", 4)
    assert lines == ["work: 4/10 items (40%), 2.0 items/s, ETA 3s"]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.4, "0s"), (45, "45s"), (122, "2m02s"), (3600, "1h00m"), (3900, "1h05m")],
)
def test_durations_are_compact(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_bar_on_a_terminal_shows_rate_and_eta() -> None:
    clock, out = Clock(), StringIO()
    console = Console(file=out, force_terminal=True, width=140, color_system=None)
    rep = RichReporter(console=console, clock=clock)
    rep.start("reindex", "re-index public.qckstrt_embeddings_vectors", 5000)
    for _ in range(12):
        clock.now += 10.0
        rep.advance("reindex", 100)
    rep.refresh()
    rep.close()
    last = _strip_ansi(out.getvalue()).splitlines()[-1]
    assert "re-index public.qckstrt_embeddings_vectors" in last
    assert "1200/5000" in last and "24%" in last
    assert "10.0 rows/s" in last
    assert "ETA 0:06:20" in last  # 3,800 rows left at 10 rows/s


def test_not_a_terminal_gets_plain_lines_with_rate_and_eta() -> None:
    clock, out = Clock(), StringIO()
    rep = RichReporter(console=Console(file=out, width=40), clock=clock)  # no wrapping
    rep.info("re-index public.qckstrt_embeddings_vectors: 5,000 rows, 5,000 to embed")
    rep.start("reindex", "re-index", 5000)
    clock.now += 40.0
    rep.advance("reindex", 1000)
    rep.finish("reindex", "embedded 5,000 rows in 200.0s")
    rep.close()
    assert out.getvalue().splitlines() == [
        "re-index public.qckstrt_embeddings_vectors: 5,000 rows, 5,000 to embed",
        "re-index: 1,000/5,000 rows (20%), 25.0 rows/s, ETA 2m40s",
        "embedded 5,000 rows in 200.0s",
    ]
    assert "\x1b[" not in out.getvalue()
