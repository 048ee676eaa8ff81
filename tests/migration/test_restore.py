"""Rollback: `qckstrt-migrate restore` brings the import's backup back, over SSL, all or nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import psycopg
import pytest
from moto import mock_aws

from migration.cli import main
from migration.connection import Endpoint
from migration.extension import setup_extension
from migration.transfer import ImportOptions, import_database
from migration.verify import verify
from tests.databases import Servers

BUCKET = "stack-bucket"


@pytest.fixture
def imported(servers: Servers, tmp_path: Path) -> tuple[Endpoint, Path]:
    """A source imported once with its backup in a folder: (source, backup root)."""
    _, source_url = servers.source_db()
    _, target_url = servers.target_db()
    src, tgt = Endpoint(source_url, "source"), Endpoint(target_url, "target")
    setup_extension(tgt, src)
    import_database(src, tgt, ImportOptions(backup=str(tmp_path / "backups")))
    return src, tmp_path / "backups"


def _empty_target(servers: Servers, src: Endpoint) -> Endpoint:
    """A new empty target with step 1 done, as the runbook's rollback prepares it."""
    _, url = servers.target_db()
    tgt = Endpoint(url, "target")
    setup_extension(tgt, src)
    return tgt


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield


def test_restore_from_a_folder_equals_the_source(
    servers: Servers, imported: tuple[Endpoint, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    src, backups = imported
    tgt = _empty_target(servers, src)
    assert main(["restore", "--from", str(backups), "--target", tgt.url, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["manifest"] is True and report["left_out"] > 0
    assert report["tables"]["public.qckstrt_embeddings_vectors"] > 0
    result = verify(src, tgt)
    assert result.ok
    with psycopg.connect(tgt.url) as conn:
        # What the import leaves out, the restore leaves out: no Supabase policy, no vault helper.
        policies = conn.execute("SELECT count(*) FROM pg_policies").fetchone()
        helpers = conn.execute(
            "SELECT count(*) FROM pg_proc WHERE proname = 'vault_read_secret'"
        ).fetchone()
        # The sequences continue after the restored rows.
        nextval = conn.execute("SELECT nextval('public.audit_logs_id_seq')").fetchone()
        top = conn.execute("SELECT max(id) FROM public.audit_logs").fetchone()
    assert policies == (0,) and helpers == (0,)
    assert nextval is not None and top is not None and nextval[0] > top[0]


def test_restore_from_s3_picks_the_newest_backup(servers: Servers, aws: None) -> None:
    _, source_url = servers.source_db()
    _, first_url = servers.target_db()
    src, first = Endpoint(source_url, "source"), Endpoint(first_url, "target")
    setup_extension(first, src)
    report = import_database(src, first, ImportOptions(backup=f"s3://{BUCKET}/migration/staging"))
    assert report.backup is not None
    tgt = _empty_target(servers, src)
    assert main(["restore", "--from", f"s3://{BUCKET}/migration/staging", "--target", tgt.url]) == 0
    assert verify(src, tgt).ok
    # The exact key works too, into another empty target.
    again = _empty_target(servers, src)
    assert main(["restore", "--from", report.backup, "--target", again.url]) == 0
    assert verify(src, again).ok


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {
            str(r[0])
            for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }


def test_a_target_holding_the_tables_is_refused_and_left_alone(
    servers: Servers, imported: tuple[Endpoint, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    src, backups = imported
    tgt = _empty_target(servers, src)
    with psycopg.connect(tgt.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.users (id int); INSERT INTO public.users VALUES (1)")
    assert main(["restore", "--from", str(backups), "--target", tgt.url]) == 2
    err = capsys.readouterr().err
    assert "already holds public.users" in err and "nothing was changed" in err
    assert _tables(tgt.url) == {"users"}
    assert (
        main(["restore", "--from", str(backups), "--target", tgt.url, "--on-existing", "replace"])
        == 2
    )
    assert "needs --backup" in capsys.readouterr().err


def test_replace_keeps_the_old_tables_first(
    servers: Servers, imported: tuple[Endpoint, Path], tmp_path: Path
) -> None:
    src, backups = imported
    tgt = _empty_target(servers, src)
    with psycopg.connect(tgt.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.users (id int); INSERT INTO public.users VALUES (1)")
    keep = tmp_path / "kept"
    args = ["restore", "--from", str(backups), "--target", tgt.url]
    assert main([*args, "--on-existing", "replace", "--backup", str(keep)]) == 0
    assert verify(src, tgt).ok
    assert any(keep.rglob("*")), "the replaced table was not kept"


@pytest.mark.parametrize(
    ("location", "cause"),
    [
        ("/nonexistent/backups", "no such file or directory"),
        ("ftp://host/x", "use s3://bucket/key or a directory"),
        (f"s3://{BUCKET}/nothing/here", "no source.dump under that prefix"),
        (f"s3://{BUCKET}/missing/source.dump", "cannot read it"),
    ],
)
def test_a_bad_location_is_one_clear_line(
    servers: Servers,
    aws: None,
    location: str,
    cause: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, url = servers.target_db()
    assert main(["restore", "--from", location, "--target", url]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(lines) == 1 and cause in lines[0]
