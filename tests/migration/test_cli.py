"""The command line: env URLs, JSON on stdout, one-line errors, no passwords."""

from __future__ import annotations

import json

import pytest

from migration.cli import main
from tests.migration.conftest import Servers


def test_three_steps_through_the_cli(
    servers: Servers,
    source_url: str,
    target: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, url = target
    monkeypatch.setenv("SOURCE_DATABASE_URL", source_url)
    monkeypatch.setenv("TARGET_DATABASE_URL", url)
    assert main(["extension", "--json"]) == 0
    ext = json.loads(capsys.readouterr().out)
    assert ext["vector_schema"] == "extensions"
    assert main(["import", "--dry-run", "--json"]) == 0
    out = capsys.readouterr()
    dry = json.loads(out.out)
    assert dry["dry_run"] and dry["tables"]
    assert servers.master_password not in out.out + out.err
    assert main(["import", "--json", "--jobs", "3"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert all(t["status"] == "copied" for t in done["tables"])
    assert main(["verify"]) == 0
    err = capsys.readouterr().err
    assert "qckstrt_embeddings_vectors" in err
    assert main(["import"]) == 0  # complete: nothing left to do


def test_errors_are_one_line_without_password(
    servers: Servers,
    source_url: str,
    target: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name, _ = target
    monkeypatch.delenv("SOURCE_DATABASE_URL", raising=False)
    monkeypatch.delenv("TARGET_DATABASE_URL", raising=False)
    assert main(["extension"]) == 2
    assert "TARGET_DATABASE_URL" in capsys.readouterr().err
    bad = servers.target_url(name, password="Very-Secret-9")
    assert main(["verify", "--source", source_url, "--target", bad]) == 3  # a failed step
    err = capsys.readouterr().err
    assert "Very-Secret-9" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "password" in lines[0]
