"""Backups: a stream of bytes to a directory or to S3 (multipart), never fully held locally.

S3 parts grow with the stream (`part_size`), so a backup of any size S3 accepts uploads.

Locations are ``s3://bucket/prefix`` or a directory path; each backup goes under
``<location>/<UTC timestamp>/`` so runs never overwrite each other (the stack's bucket is
versioned and encrypted as well).
"""

from __future__ import annotations

import datetime
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any, Protocol

from migration.errors import BackupFailed, ConfigError

PART_SIZE = 8 * 1024 * 1024  # S3 minimum part is 5 MiB
CHUNK = 1024 * 1024


def timestamp() -> str:
    """A UTC timestamp usable as a path component (sortable)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")


class Sink(Protocol):
    """Where one backup object goes."""

    uri: str

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class FileSink:
    """A file under a backup directory, written as ``<name>.partial`` and renamed when complete.

    Why the rename: a run killed mid-dump (SIGKILL runs no cleanup) must not leave a truncated
    file under the final name, where `restore` would take it for the newest good backup.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.uri = str(path)
        self._partial = path.with_name(path.name + ".partial")
        self._file: IO[bytes] = self._partial.open("wb")

    def write(self, data: bytes) -> None:
        self._file.write(data)

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._partial, self.path)

    def abort(self) -> None:
        self._file.close()
        self._partial.unlink(missing_ok=True)


#: S3's limits: at most 10,000 parts, each 5 MiB (but the last) to 5 GiB, 5 TiB per object.
MAX_PARTS = 10_000
MAX_PART_SIZE = 5 * 1024**3
#: Part sizes double every this many parts: 8 MiB parts for the first 8 GiB, and 10,000 parts
#: then reach 8 TiB (beyond S3's 5 TiB object limit) with parts of at most 4 GiB.
PARTS_PER_SIZE = 1000


def part_size(number: int) -> int:
    """The size of part `number` (1-based) of a stream of unknown length.

    Why growing parts: a dump's size is not known when its upload starts, and fixed 8 MiB parts
    stop at 10,000 x 8 MiB = 80 GiB. Doubling the size every `PARTS_PER_SIZE` parts keeps small
    backups in small parts (cheap retries, little memory) and lets any object S3 accepts fit.
    """
    return min(PART_SIZE << ((number - 1) // PARTS_PER_SIZE), MAX_PART_SIZE)


class S3Sink:
    """An S3 object written by multipart upload, part by part, as the data arrives.

    Parts are sized to the stream (`part_size`) and spooled to a temporary file beyond
    `PART_SIZE`, so memory stays bounded whatever the part size has grown to.
    """

    def __init__(self, bucket: str, key: str, client: Any | None = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("s3")
        self._s3 = client
        self.bucket, self.key = bucket, key
        self.uri = f"s3://{bucket}/{key}"
        self._part = tempfile.SpooledTemporaryFile(max_size=PART_SIZE)  # noqa: SIM115
        self._parts: list[dict[str, Any]] = []
        # No ServerSideEncryption here: the bucket's default (SSE-KMS with the stack's key)
        # applies; asking for AES256 would downgrade a whole-database backup to S3's own keys.
        self._upload_id: str = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]

    def _flush(self) -> None:
        number = len(self._parts) + 1
        if number > MAX_PARTS:
            raise BackupFailed(f"{self.uri}: more than {MAX_PARTS} parts (over S3's 5 TiB limit)")
        self._part.seek(0)
        response = self._s3.upload_part(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=self._part,
        )
        self._parts.append({"ETag": response["ETag"], "PartNumber": number})
        self._part.seek(0)
        self._part.truncate()

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            room = part_size(len(self._parts) + 1) - self._part.tell()
            self._part.write(view[:room])
            view = view[room:]
            if self._part.tell() >= part_size(len(self._parts) + 1):
                self._flush()

    def close(self) -> None:
        if self._part.tell() or not self._parts:
            self._flush()
        self._part.close()
        self._s3.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
        )

    def abort(self) -> None:
        self._part.close()
        self._s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id)


class BackupLocation:
    """A parsed ``--backup`` value with this run's timestamped folder.

    :param location: ``s3://bucket/prefix`` or a directory.
    :param stamp: the run's timestamp folder (default: now).
    """

    def __init__(self, location: str, stamp: str | None = None, s3_client: Any | None = None):
        self.location = location
        self.stamp = stamp or timestamp()
        self._client = s3_client
        if location.startswith("s3://"):
            bucket, _, prefix = location[5:].partition("/")
            if not bucket:
                raise ConfigError(f"backup location {location!r} names no bucket")
            self.bucket: str | None = bucket
            self.prefix = "/".join(p for p in (prefix.strip("/"), self.stamp) if p)
        elif "://" in location:
            raise ConfigError(f"backup location {location!r}: use s3://bucket/prefix or a path")
        else:
            self.bucket = None
            self.prefix = str(Path(location) / self.stamp)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.bucket else self.prefix

    def sink(self, name: str) -> Sink:
        """Open a sink for object `name` inside this run's folder."""
        if self.bucket is not None:
            return S3Sink(self.bucket, f"{self.prefix}/{name}", self._client)
        return FileSink(Path(self.prefix) / name)


def stream_to(sink: Sink, chunks: Iterable[bytes], progress: Callable[[int], None]) -> int:
    """Copy `chunks` into `sink`; abort the sink on any error. Returns the byte count."""
    total = 0
    try:
        for chunk in chunks:
            sink.write(chunk)
            total += len(chunk)
            progress(len(chunk))
        sink.close()
    except BaseException:
        sink.abort()
        raise
    return total


def run_pg_dump(
    args: list[str], env: dict[str, str], sink: Sink, progress: Callable[[int], None]
) -> int:
    """Run pg_dump with its output streamed into `sink` (no full local copy).

    :raises BackupFailed: pg_dump exits non-zero (its last stderr line is in the message).
    """
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, env=env)
        assert proc.stdout is not None

        def chunks() -> Iterable[bytes]:
            while chunk := proc.stdout.read(CHUNK):  # type: ignore[union-attr]
                yield chunk
            if proc.wait() != 0:
                err.seek(0)
                lines = err.read().decode(errors="replace").strip().splitlines()
                raise BackupFailed(f"pg_dump failed: {lines[-1] if lines else proc.returncode}")

        try:
            return stream_to(sink, chunks(), progress)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
