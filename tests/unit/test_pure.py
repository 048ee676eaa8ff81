"""The import's pure parts, without a database: the TOC reader, the SQL cleaner and splitter,
the rule that spots Supabase references, and where a backup's bytes go (a folder, or S3 through
moto with parts that grow with the stream).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from migration.backends import backup
from migration.backends.backup import BackupLocation, FileSink, S3Sink, part_size, stream_to
from migration.db.pgtools import clean_sql, parse_toc, split_items
from migration.db.supabase import supabase_reference
from migration.errors import ConfigError

TOC = """;
; Archive created at 2026-01-01 00:00:00 UTC
;
215; 1259 16390 TABLE public users postgres
216; 1259 16400 TABLE public documents postgres
3301; 2606 16410 FK CONSTRAINT public documents documents_user_id_fkey postgres
;\tdepends on: 215 216
3302; 2606 16411 CONSTRAINT public users users_pkey postgres
3500; 0 0 ACL - SCHEMA public pg_database_owner
3400; 3256 16420 POLICY public documents owner_only postgres
;\tdepends on: 216
"""


def test_toc_entries_keep_their_kind_schema_name_and_dependencies() -> None:
    entries = {e.dump_id: e for e in parse_toc(TOC)}
    assert sorted(entries) == [215, 216, 3301, 3302, 3400, 3500]
    fk = entries[3301]
    assert (fk.desc, fk.schema) == ("FK CONSTRAINT", "public")
    assert fk.tag == "documents documents_user_id_fkey"
    assert fk.depends == [215, 216]
    assert entries[3302].desc == "CONSTRAINT"  # the longer kind wins only where it matches
    assert (entries[215].desc, entries[215].tag, entries[215].oid) == ("TABLE", "users", 16390)
    assert entries[3400].desc == "POLICY" and entries[3400].depends == [216]
    assert entries[3500].desc == "ACL"


def test_clean_sql_drops_psql_commands_and_settings_the_target_lacks() -> None:
    text = (
        "\\restrict abc\nSET statement_timeout = 0;\nSET transaction_timeout = 0;\n"
        "SELECT pg_catalog.set_config('search_path', '', false);\n"
        "CREATE TABLE t (id int);\n\\unrestrict abc\n"
    )
    cleaned = clean_sql(text, {"statement_timeout", "search_path"})
    assert cleaned.splitlines() == [
        "SET statement_timeout = 0;",
        "SELECT pg_catalog.set_config('search_path', '', false);",
        "CREATE TABLE t (id int);",
    ]


def test_split_items_cuts_at_pg_restore_headers() -> None:
    text = (
        "SET client_encoding = 'UTF8';\n--\n"
        "-- Name: users; Type: TABLE; Schema: public; Owner: -\n--\n\nCREATE TABLE users ();\n"
        "--\n-- Name: users users_pkey; Type: CONSTRAINT; Schema: public; Owner: -\n--\n\n"
        "ALTER TABLE users ADD PRIMARY KEY (id);\n"
    )
    preamble, items = split_items(text)
    assert "client_encoding" in preamble
    assert [(i.name, i.kind, i.schema) for i in items] == [
        ("users", "TABLE", "public"),
        ("users users_pkey", "CONSTRAINT", "public"),
    ]
    assert "CREATE TABLE users ();" in items[0].sql and "PRIMARY KEY" in items[1].sql


@pytest.mark.parametrize(
    ("sql", "schema"),
    [
        ("(auth.uid() = user_id)", "auth"),
        ('SELECT "vault".decrypted_secrets', "vault"),
        ("storage.foldername(name)", "storage"),
        ("SELECT my_auth.uid()", None),  # a name that merely ends in a Supabase schema's
        ("user_id = current_user", None),
        (None, None),
    ],
)
def test_supabase_references_are_found_by_schema(sql: str | None, schema: str | None) -> None:
    assert supabase_reference(sql) == schema


# --- backup sinks -----------------------------------------------------------------------------


def test_part_sizes_grow_so_that_any_object_s3_accepts_fits() -> None:
    sizes = [part_size(n) for n in range(1, backup.MAX_PARTS + 1)]
    assert sizes[0] == backup.PART_SIZE >= 5 * 1024**2  # S3's minimum part
    assert max(sizes) <= backup.MAX_PART_SIZE
    assert sizes == sorted(sizes)
    assert sum(sizes) >= 5 * 1024**4  # S3's largest object: 5 TiB (fixed 8 MiB parts: 80 GiB)


def test_a_file_sink_appears_under_its_name_only_when_complete(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "run" / "source.dump")
    sink.write(b"abc")
    assert not (tmp_path / "run" / "source.dump").exists()
    sink.close()
    assert (tmp_path / "run" / "source.dump").read_bytes() == b"abc"
    failed = FileSink(tmp_path / "run" / "other.dump")
    with pytest.raises(RuntimeError):
        stream_to(failed, _chunks_then_fail(), lambda _: None)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["source.dump"]


def _chunks_then_fail() -> Iterator[bytes]:
    yield b"partial"
    raise RuntimeError("pg_dump died")


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket="backups")
        yield client


def test_an_s3_sink_uploads_growing_parts_as_the_stream_arrives(
    s3: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backup, "PARTS_PER_SIZE", 1)  # 8, 16, 32 MiB ... from the first part
    data = bytes(range(256)) * (100 * 1024)  # 25 MiB, written in uneven pieces
    sink = S3Sink("backups", "run/source.dump", s3)
    uploaded: list[int] = []
    original = sink._flush

    def flush() -> None:
        uploaded.append(sink._part.tell())
        original()

    monkeypatch.setattr(sink, "_flush", flush)
    assert stream_to(sink, _pieces(data, 3_000_017), lambda _: None) == len(data)
    assert uploaded == [8 * 1024**2, 16 * 1024**2, len(data) - 24 * 1024**2]
    body = s3.get_object(Bucket="backups", Key="run/source.dump")["Body"].read()  # type: ignore[attr-defined]
    assert body == data


def test_an_s3_sink_that_fails_leaves_no_object_and_no_upload(s3: object) -> None:
    sink = S3Sink("backups", "run/source.dump", s3)
    with pytest.raises(RuntimeError):
        stream_to(sink, _chunks_then_fail(), lambda _: None)
    assert "Contents" not in s3.list_objects_v2(Bucket="backups")  # type: ignore[attr-defined]
    assert "Uploads" not in s3.list_multipart_uploads(Bucket="backups")  # type: ignore[attr-defined]


def _pieces(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_backup_locations_are_s3_or_a_folder_with_a_run_stamp(tmp_path: Path) -> None:
    s3_location = BackupLocation("s3://bucket/migration/prod", stamp="20260101T000000Z")
    assert s3_location.uri == "s3://bucket/migration/prod/20260101T000000Z"
    local = BackupLocation(str(tmp_path), stamp="20260101T000000Z")
    assert local.uri == str(tmp_path / "20260101T000000Z")
    for bad in ("ftp://host/x", "s3:///no-bucket"):
        with pytest.raises(ConfigError):
            BackupLocation(bad)
