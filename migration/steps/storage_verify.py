"""Checks that the files moved: storage-api's rows against the bucket (and the target's rows).

Why a check apart from the copy: the copy confirms each object as it writes it, but the
cut-over happens later, and what matters then is that every row of ``storage.objects`` still
finds its bytes at storage-api's key. Compared, for every row: the key exists, its size is the
row's, and its ``qckstrt-source`` fingerprint (object id, version, size, eTag, written by the
copy after checking md5 and size) is this row's, so the bytes are the ones the row describes.
Totals (objects, bytes) and an order-independent checksum of the rows are compared with the
target database's ``storage.objects`` when the target has it (the import carried ``storage``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from psycopg import errors

from migration.backends.storage_sources import Source, SourceObject, list_objects, storage_key
from migration.db.connection import Conn, Endpoint
from migration.errors import VerificationFailed
from migration.progress import NullReporter, Reporter
from migration.steps.storage_copy import (
    META_SOURCE,
    StorageCopyReport,
    StorageCopySettings,
    copy_objects,
)

_LISTED = 20
#: Count, total size and an order-independent checksum of the rows storage-api serves from.
_ROWS = """
SELECT count(*), coalesce(sum((metadata->>'size')::bigint), 0),
       coalesce(md5(string_agg(h, '' ORDER BY h)), '')
FROM (SELECT md5(concat_ws('|', id, bucket_id, name, version, metadata->>'eTag',
                           metadata->>'size')) AS h, metadata
      FROM storage.objects) rows
"""


@dataclass
class RowsSummary:
    objects: int
    bytes: int
    checksum: str


@dataclass
class StorageCheckReport:
    """Source rows against the bucket (and the target's rows); `ok` when nothing differs."""

    bucket: str
    tenant: str
    source: RowsSummary
    target: RowsSummary | None = None
    in_bucket: int = 0
    bytes_in_bucket: int = 0
    missing: list[str] = field(default_factory=list)
    accepted_missing: list[str] = field(default_factory=list)
    wrong_size: list[str] = field(default_factory=list)
    other_bytes: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    #: Nothing differs (a field, not a property, so that ``asdict`` of a run keeps it).
    ok: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def rows_summary(conn: Conn) -> RowsSummary | None:
    """The rows' count, bytes and checksum; None when the database has no storage.objects."""
    try:
        with conn.transaction():
            row = conn.execute(_ROWS).fetchone()
    except errors.UndefinedTable:
        return None
    assert row is not None
    return RowsSummary(int(row[0]), int(row[1]), str(row[2]))


def _head(client: Any, bucket: str, key: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        return dict(client.head_object(Bucket=bucket, Key=key))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def _compare(
    report: StorageCheckReport, obj: SourceObject, head: dict[str, Any] | None, allow: bool
) -> None:
    if head is None:
        (report.accepted_missing if allow else report.missing).append(obj.label)
        return
    report.in_bucket += 1
    size = int(head["ContentLength"])
    report.bytes_in_bucket += size
    if obj.size is not None and size != obj.size:
        report.wrong_size.append(obj.label)
    elif (head.get("Metadata") or {}).get(META_SOURCE) != obj.fingerprint():
        report.other_bytes.append(obj.label)


def _listed(names: list[str]) -> str:
    more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    return ", ".join(repr(n) for n in names[:_LISTED]) + more


def _mismatches(report: StorageCheckReport) -> list[str]:
    found = []
    if report.missing:
        found.append(f"{len(report.missing)} not in the bucket: {_listed(report.missing)}")
    if report.wrong_size:
        found.append(f"{len(report.wrong_size)} of another size: {_listed(report.wrong_size)}")
    if report.other_bytes:
        found.append(
            f"{len(report.other_bytes)} not copied from these rows (re-run the storage step): "
            f"{_listed(report.other_bytes)}"
        )
    target, source = report.target, report.source
    if target is not None and (target.objects, target.bytes, target.checksum) != (
        source.objects,
        source.bytes,
        source.checksum,
    ):
        found.append(
            f"target storage.objects differs: {target.objects} rows, {target.bytes} bytes "
            f"against the source's {source.objects} rows, {source.bytes} bytes"
        )
    return found


def check_objects(
    source_db: Endpoint,
    settings: StorageCopySettings,
    client: Any,
    target_db: Endpoint | None = None,
    reporter: Reporter | None = None,
) -> StorageCheckReport:
    """Every source row's bytes at its key in ``settings.bucket``, and the target's rows.

    :param target_db: compare its ``storage.objects`` too (skipped when it has none).
    :raises VerificationFailed: anything differs; carries the report.
    """
    settings.validate()
    rep = reporter or NullReporter()
    with source_db.connect() as conn:
        objects = list_objects(conn)
        source = rows_summary(conn)
    assert source is not None  # list_objects refused a source without the table
    report = StorageCheckReport(settings.bucket, settings.tenant, source)
    if target_db is not None:
        with target_db.connect() as conn:
            report.target = rows_summary(conn)
    rep.start("storage-check", "storage objects checked", total=len(objects))

    def head(obj: SourceObject) -> dict[str, Any] | None:
        key = storage_key(settings.tenant, obj.bucket_id, obj.name, obj.version, settings.separator)
        found = _head(client, settings.bucket, key)
        rep.advance("storage-check", 1)
        return found

    with ThreadPoolExecutor(settings.workers, thread_name_prefix="storage-check") as pool:
        heads = list(pool.map(head, objects))
    for obj, found in zip(objects, heads, strict=True):
        _compare(report, obj, found, settings.allow_missing)
    report.mismatches = _mismatches(report)
    report.ok = not report.mismatches
    rep.finish(
        "storage-check",
        f"storage check: {report.in_bucket:,} of {source.objects:,} objects in "
        f"s3://{settings.bucket}/{settings.tenant}/, {report.bytes_in_bucket / 1e6:,.1f} MB"
        + ("" if report.ok else f"; {len(report.mismatches)} difference(s)"),
    )
    if not report.ok:
        raise VerificationFailed("storage objects differ: " + "; ".join(report.mismatches), report)
    return report


def copy_and_check(
    source_db: Endpoint,
    source: Source,
    settings: StorageCopySettings,
    client: Any,
    target_db: Endpoint | None = None,
    reporter: Reporter | None = None,
) -> StorageCopyReport:
    """The storage step: `copy_objects`, then `check_objects` (its report in ``check``).

    :raises MissingObjects: bytes missing and not `allow_missing` (nothing written).
    :raises StorageCopyFailed: objects failed to copy; re-run to resume.
    :raises VerificationFailed: the copy does not check out; carries the check's report.
    """
    report = copy_objects(source_db, source, settings, client, reporter)
    report.check = check_objects(source_db, settings, client, target_db, reporter)
    return report
