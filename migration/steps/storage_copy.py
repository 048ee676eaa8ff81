"""The storage step: every storage-api object's bytes into the stack's bucket, at its S3 key.

After the cut-over storage-api runs with ``STORAGE_BACKEND=s3`` on the stack's bucket and looks
each object up at ``<tenant>/<bucket_id>/<name>/<version>`` (see
`migration.backends.storage_sources`); this step puts the bytes exactly there, with the
``Content-Type`` and ``Cache-Control`` the source backend served them with (its xattrs or S3
headers, else the row's ``metadata``, else storage-api's own defaults).

Checks: every object's bytes are probed before anything is written, and a missing one stops the
step by name unless ``allow_missing`` (then it is listed in the report); while streaming, the
size must match the row's ``metadata.size`` and the md5 its ``eTag`` (where the eTag is one);
S3 checks each request's ``Content-MD5``, a single-part object's SHA-256 as well, and a
``HeadObject`` afterwards must show the size.

Resumable and idempotent: each copy records the source's fingerprint (object id, version, size,
eTag) in the S3 object's metadata; a re-run heads each key and skips those whose fingerprint and
size match, so a killed run resumes without copying again what arrived, and without stacking
duplicate versions in the (versioned) bucket. Writes use the bucket's default encryption
(SSE-KMS with the stack key): no ``ServerSideEncryption`` is forced.
"""

from __future__ import annotations

import base64
import hashlib
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from migration.backends.storage_sources import (
    Opened,
    Source,
    SourceObject,
    list_objects,
    storage_key,
)
from migration.db.connection import Endpoint
from migration.errors import ConfigError, MigrationError, PreflightError
from migration.options import option, validate
from migration.progress import NullReporter, Reporter

if TYPE_CHECKING:
    from migration.steps.storage_verify import StorageCheckReport

#: storage-api's file backend serves these when an object has none recorded.
DEFAULT_CONTENT_TYPE = "application/octet-stream"
DEFAULT_CACHE_CONTROL = "no-cache"
PART_SIZE = 8 * 1024 * 1024
META_SOURCE = "qckstrt-source"
META_SHA256 = "qckstrt-sha256"
PROGRESS_KEY = "copy:storage"
_LISTED = 20

Outcome = Literal["copied", "present", "missing"]


class MissingObjects(PreflightError):
    """Objects whose bytes are not in the source backend (names in `names`)."""

    def __init__(self, message: str, names: list[str]) -> None:
        super().__init__(message, setting="allow_missing_objects")
        self.names = names


class StorageCopyFailed(MigrationError):
    """An object could not be copied or did not check out (size, checksum)."""


@dataclass(frozen=True)
class StorageCopySettings:
    """What the storage step (and its check) needs besides the source; defaults and validation
    from ``migration.options``.

    :param bucket: the stack's bucket (storage-api's ``GLOBAL_S3_BUCKET`` after the move).
    :param tenant: storage-api's ``TENANT_ID`` after the move (keep the source's: ``stub``).
    :param workers: objects copied (or checked) at once.
    :param allow_missing: copy the rest when some objects' bytes are missing at the source,
        listing them in the report, instead of stopping.
    :param file_version_separator: storage-api runs with
        ``TUS_USE_FILE_VERSION_SEPARATOR=true`` (keys end ``-$v-<version>``, not ``/<version>``).
    """

    bucket: str = option("storage_bucket")
    tenant: str = option("storage_tenant")
    workers: int = option("storage_workers")
    allow_missing: bool = option("allow_missing_objects")
    file_version_separator: bool = option("file_version_separator")

    def __post_init__(self) -> None:
        validate(self)  # one judgement per setting, the same as the CLI's and the providers'

    @property
    def separator(self) -> str:
        """What storage-api puts between an object's name and version in its keys."""
        return "-$v-" if self.file_version_separator else "/"

    def validate(self) -> None:
        """What only a run needs: a bucket to write to.

        :raises ConfigError: naming the setting and the fix, before anything is read.
        """
        if not self.bucket:
            raise ConfigError(
                "no bucket for storage-api's files: set `storage_bucket` to the stack's bucket "
                "(the stack output bucketName)",
                setting="storage_bucket",
            )


@dataclass
class StorageCopyReport:
    """What the step did; no credential in it."""

    bucket: str
    tenant: str
    source: str
    objects: int = 0
    copied: int = 0
    already_there: int = 0
    bytes_copied: int = 0
    bytes_total: int = 0
    missing: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: The check after the copy (`migration.steps.storage_verify.copy_and_check`), when it ran.
    check: StorageCheckReport | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        text = (
            f"storage: {self.objects:,} objects into s3://{self.bucket}/{self.tenant}/: "
            f"{self.copied:,} copied ({self.bytes_copied / 1e6:,.1f} MB), "
            f"{self.already_there:,} already there"
        )
        if self.missing:
            text += f", {len(self.missing):,} missing at the source (accepted)"
        return text


@dataclass(frozen=True)
class _Expect:
    """An object and what its copy must look like."""

    obj: SourceObject
    key: str
    size: int


class _Hashes:
    """Size, md5 and sha256 of the bytes as they stream past."""

    def __init__(self) -> None:
        self.size = 0
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha256 = hashlib.sha256()

    def update(self, data: bytes) -> None:
        self.size += len(data)
        self.md5.update(data)
        self.sha256.update(data)


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _headers(obj: SourceObject, opened: Opened) -> tuple[str, str]:
    """Content type and cache control as storage-api served them before the move."""
    content_type = opened.content_type or obj.mimetype or DEFAULT_CONTENT_TYPE
    cache_control = opened.cache_control or obj.cache_control or DEFAULT_CACHE_CONTROL
    return content_type, cache_control


def _check_bytes(exp: _Expect, hashes: _Hashes, md5_comparable: bool) -> None:
    """:raises StorageCopyFailed: the bytes read are not those the row describes."""
    if hashes.size != exp.size:
        raise StorageCopyFailed(
            f"object {exp.obj.label!r}: read {hashes.size} bytes at the source, expected "
            f"{exp.size} (storage.objects metadata.size or the backend's size)"
        )
    if md5_comparable and exp.obj.md5 and hashes.md5.hexdigest() != exp.obj.md5:
        raise StorageCopyFailed(
            f"object {exp.obj.label!r}: md5 {hashes.md5.hexdigest()} of the source bytes differs "
            f"from the recorded eTag {exp.obj.md5}; the source file changed or is corrupt"
        )


class _Copier:
    """Copies one object at a time; shared by the worker threads (boto3 clients are)."""

    def __init__(
        self, source: Source, client: Any, settings: StorageCopySettings, reporter: Reporter
    ):
        self.source, self.s3, self.settings, self.reporter = source, client, settings, reporter

    def present(self, exp: _Expect) -> bool:
        """Whether a previous run already put these bytes at the key."""
        from botocore.exceptions import ClientError

        try:
            head = self.s3.head_object(Bucket=self.settings.bucket, Key=exp.key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        meta = head.get("Metadata") or {}
        return bool(
            int(head["ContentLength"]) == exp.size
            and meta.get(META_SOURCE) == exp.obj.fingerprint()
        )

    def copy(self, exp: _Expect) -> Outcome:
        if self.present(exp):
            self.reporter.advance(PROGRESS_KEY, exp.size)
            return "present"
        try:
            opened = self.source.open(exp.obj)
        except FileNotFoundError:
            return "missing"
        try:
            self._upload(exp, opened)
        finally:
            opened.close()
        self._confirm(exp)
        return "copied"

    def _upload(self, exp: _Expect, opened: Opened) -> None:
        content_type, cache_control = _headers(exp.obj, opened)
        hashes = _Hashes()
        first = bytearray()
        chunks = opened.chunks()
        for chunk in chunks:
            first += chunk
            hashes.update(chunk)
            if len(first) >= PART_SIZE:
                break
        else:  # the whole object fits one request
            _check_bytes(exp, hashes, opened.md5_comparable)
            self.s3.put_object(
                Bucket=self.settings.bucket,
                Key=exp.key,
                Body=bytes(first),
                ContentType=content_type,
                CacheControl=cache_control,
                ContentMD5=_b64(hashes.md5.digest()),
                ChecksumSHA256=_b64(hashes.sha256.digest()),
                Metadata={
                    META_SOURCE: exp.obj.fingerprint(),
                    META_SHA256: hashes.sha256.hexdigest(),
                },
            )
            self.reporter.advance(PROGRESS_KEY, hashes.size)
            return
        self._multipart(exp, opened, hashes, first, chunks, (content_type, cache_control))

    def _multipart(
        self,
        exp: _Expect,
        opened: Opened,
        hashes: _Hashes,
        first: bytearray,
        chunks: Any,
        headers: tuple[str, str],
    ) -> None:
        """Upload part by part; complete only once size and md5 of the whole checked out."""
        bucket = self.settings.bucket
        self._abort_stale(exp.key)
        upload = self.s3.create_multipart_upload(
            Bucket=bucket,
            Key=exp.key,
            ContentType=headers[0],
            CacheControl=headers[1],
            Metadata={META_SOURCE: exp.obj.fingerprint()},
        )["UploadId"]
        parts: list[dict[str, Any]] = []

        def send(data: bytes) -> None:
            number = len(parts) + 1
            md5 = _b64(hashlib.md5(data, usedforsecurity=False).digest())
            response = self.s3.upload_part(
                Bucket=bucket,
                Key=exp.key,
                UploadId=upload,
                PartNumber=number,
                Body=data,
                ContentMD5=md5,
            )
            parts.append({"ETag": response["ETag"], "PartNumber": number})
            self.reporter.advance(PROGRESS_KEY, len(data))

        try:
            buffer = first
            for chunk in chunks:
                hashes.update(chunk)
                buffer += chunk
                if len(buffer) >= PART_SIZE:
                    send(bytes(buffer[:PART_SIZE]))
                    del buffer[:PART_SIZE]
            if buffer:
                send(bytes(buffer))
            _check_bytes(exp, hashes, opened.md5_comparable)
            self.s3.complete_multipart_upload(
                Bucket=bucket, Key=exp.key, UploadId=upload, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            self.s3.abort_multipart_upload(Bucket=bucket, Key=exp.key, UploadId=upload)
            raise

    def _abort_stale(self, key: str) -> None:
        """Abort uploads of `key` that a killed run left open (they would bill until the
        bucket's lifecycle rule ends them)."""
        listed = self.s3.list_multipart_uploads(Bucket=self.settings.bucket, Prefix=key)
        for upload in listed.get("Uploads", []):
            if upload["Key"] == key:
                self.s3.abort_multipart_upload(
                    Bucket=self.settings.bucket, Key=key, UploadId=upload["UploadId"]
                )

    def _confirm(self, exp: _Expect) -> None:
        """:raises StorageCopyFailed: the bucket does not show what was sent."""
        if not self.present(exp):
            raise StorageCopyFailed(
                f"object {exp.obj.label!r}: s3://{self.settings.bucket}/{exp.key} does not show "
                f"{exp.size} bytes from this source after the upload"
            )


def _probe_all(
    source: Source, objects: list[SourceObject], pool: ThreadPoolExecutor
) -> tuple[list[_Expect], list[str]]:
    """Each object's expected size (the row's, else the backend's), and the missing ones.

    :raises StorageCopyFailed: the backend refused a read (keys, permissions), naming the object.
    """

    def probe(obj: SourceObject) -> int | None:
        try:
            return source.probe(obj)
        except MigrationError:
            raise
        except Exception as exc:  # a refusal of the backend: name the object and the cause
            raise StorageCopyFailed(
                f"cannot read object {obj.label!r} in the {source.describe()} "
                f"({type(exc).__name__}: {exc}); check the source's path or keys and their "
                "permissions; nothing was copied"
            ) from exc

    probes = list(pool.map(probe, objects))
    found: list[_Expect] = []
    missing: list[str] = []
    for obj, size in zip(objects, probes, strict=True):
        if size is None:
            missing.append(obj.label)
        else:
            found.append(_Expect(obj, "", obj.size if obj.size is not None else size))
    return found, missing


def _refuse_missing(missing: list[str], source: Source) -> None:
    shown = ", ".join(repr(n) for n in missing[:_LISTED])
    more = f" and {len(missing) - _LISTED} more" if len(missing) > _LISTED else ""
    raise MissingObjects(
        f"{len(missing)} object(s) in storage.objects have no bytes in the {source.describe()}: "
        f"{shown}{more}. Restore them, or accept their loss with `allow_missing_objects`; "
        "nothing was copied",
        missing,
    )


def _run_pool(copier: _Copier, work: list[_Expect], pool: ThreadPoolExecutor) -> list[Outcome]:
    """Copy all of `work`; on failures, name every failed object (up to 20)."""
    futures: list[tuple[_Expect, Future[Outcome]]] = [
        (e, pool.submit(copier.copy, e)) for e in work
    ]
    outcomes: list[Outcome] = []
    failures: list[tuple[str, BaseException]] = []
    try:
        for exp, future in futures:
            try:
                outcomes.append(future.result())
            except Exception as exc:  # every object is tried; all failures are named below
                failures.append((exp.obj.label, exc))
                outcomes.append("missing")
    except BaseException:
        # Ctrl-C: stop queueing objects (only those in flight finish); a re-run resumes.
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    if failures:
        lines = "; ".join(
            str(exc) if name in str(exc) else f"{name!r}: {exc}" for name, exc in failures[:_LISTED]
        )
        raise StorageCopyFailed(
            f"{len(failures)} object(s) failed to copy (re-run to resume; what arrived is kept): "
            f"{lines}"
        ) from failures[0][1]
    return outcomes


def copy_objects(
    source_db: Endpoint,
    source: Source,
    settings: StorageCopySettings,
    client: Any,
    reporter: Reporter | None = None,
) -> StorageCopyReport:
    """Copy every object listed in the source's ``storage.objects`` into ``settings.bucket``.

    :param source_db: the source database (its ``storage.objects`` lists the objects).
    :param source: the backend holding the bytes (`FileBackendSource`, `S3BackendSource`).
    :param client: a boto3 S3 client for the stack's bucket.
    :raises ConfigError: a bad setting (before anything is read).
    :raises MissingObjects: bytes missing and not `allow_missing` (before anything is written).
    :raises StorageCopyFailed: objects failed; the message names them; re-run to resume.
    """
    settings.validate()
    reporter = reporter or NullReporter()
    started = time.monotonic()
    with source_db.connect() as conn:
        objects = list_objects(conn)
    report = StorageCopyReport(settings.bucket, settings.tenant, source.describe(), len(objects))
    _check_bucket(client, settings.bucket)
    source.ready()
    with ThreadPoolExecutor(settings.workers, thread_name_prefix="storage") as pool:
        found, report.missing = _probe_all(source, objects, pool)
        if report.missing and not settings.allow_missing:
            _refuse_missing(report.missing, source)
        for name in report.missing:
            reporter.info(f"storage: {name!r} has no bytes at the source; left out (accepted)")
        work = [_Expect(e.obj, _target_key(e.obj, settings), e.size) for e in found]
        report.bytes_total = sum(e.size for e in work)
        reporter.start(PROGRESS_KEY, "storage objects", total=report.bytes_total)
        copier = _Copier(source, client, settings, reporter)
        outcomes = _run_pool(copier, work, pool)
    for exp, outcome in zip(work, outcomes, strict=True):
        if outcome == "copied":
            report.copied += 1
            report.bytes_copied += exp.size
        elif outcome == "present":
            report.already_there += 1
        else:
            _vanished(report, exp, settings)
    report.seconds = round(time.monotonic() - started, 3)
    reporter.finish(PROGRESS_KEY, report.summary())
    return report


def _vanished(report: StorageCopyReport, exp: _Expect, settings: StorageCopySettings) -> None:
    """An object whose bytes went missing between the probe and the copy."""
    if not settings.allow_missing:
        raise MissingObjects(
            f"object {exp.obj.label!r} disappeared from the {report.source} during the copy; "
            "restore it and re-run (what arrived is kept), or set `allow_missing_objects`",
            [exp.obj.label],
        )
    report.missing.append(exp.obj.label)


def _target_key(obj: SourceObject, settings: StorageCopySettings) -> str:
    return storage_key(settings.tenant, obj.bucket_id, obj.name, obj.version, settings.separator)


def _check_bucket(client: Any, bucket: str) -> None:
    """:raises PreflightError: the stack's bucket is not reachable with these credentials."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client.head_bucket(Bucket=bucket)
    except (ClientError, BotoCoreError) as exc:
        code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else ""
        raise PreflightError(
            f"cannot reach the target bucket s3://{bucket} ({code or type(exc).__name__}): check "
            "the bucket name and that these credentials may s3:ListBucket, s3:PutObject on it"
        ) from exc
