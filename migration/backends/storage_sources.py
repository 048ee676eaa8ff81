"""Where storage-api's objects are: their rows in the source database and their bytes.

storage-api (v1.x) keeps one row per object in ``storage.objects`` and the bytes in a backend,
under one key scheme for both of its backends (``src/storage/backend/adapter.ts``,
``withOptionalVersion``)::

    <tenant>/<bucket_id>/<object name>[<separator><version>]

``separator`` is ``/`` (``-$v-`` when storage-api runs with ``TUS_USE_FILE_VERSION_SEPARATOR``),
and objects written before storage-api recorded versions have none, hence no suffix. The S3
backend uses the key in ``GLOBAL_S3_BUCKET``; the file backend uses it as a path under
``<FILE_STORAGE_BACKEND_PATH>/<GLOBAL_S3_BUCKET>/``, with content type and cache control in the
extended attributes ``user.supabase.content-type`` and ``user.supabase.cache-control``. The
self-hosted docker-compose sets both ``GLOBAL_S3_BUCKET`` and ``TENANT_ID`` to ``stub``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psycopg

from migration.db.connection import Conn
from migration.errors import ConfigError, PreflightError
from migration.options import option, validate

#: The self-hosted docker-compose's ``TENANT_ID`` and ``GLOBAL_S3_BUCKET``.
STUB = "stub"
VERSION_SEPARATORS = ("/", "-$v-")
XATTR_CONTENT_TYPE = "user.supabase.content-type"
XATTR_CACHE_CONTROL = "user.supabase.cache-control"
_MD5 = re.compile(r"^[0-9a-f]{32}$")
_CHUNK = 1024 * 1024


def storage_key(
    tenant: str, bucket_id: str, name: str, version: str | None, separator: str = "/"
) -> str:
    """storage-api's key of an object (its S3 key; its path under the file backend's bucket)."""
    base = f"{tenant}/{bucket_id}/{name}"
    return f"{base}{separator}{version}" if version else base


@dataclass(frozen=True)
class SourceObject:
    """One row of ``storage.objects``, with what its ``metadata`` says about the bytes.

    :param etag: the recorded eTag without quotes (an md5 for the file backend and plain S3).
    """

    id: str
    bucket_id: str
    name: str
    version: str | None
    size: int | None
    etag: str | None
    mimetype: str | None
    cache_control: str | None

    @property
    def label(self) -> str:
        """``bucket/name`` as a user knows the object (messages, reports)."""
        return f"{self.bucket_id}/{self.name}"

    @property
    def md5(self) -> str | None:
        """The recorded md5, when the eTag is one (a multipart eTag ``...-N`` is not)."""
        return self.etag if self.etag and _MD5.match(self.etag) else None

    def fingerprint(self) -> str:
        """What identifies these bytes across runs: storage-api gives every upload a new
        version, so id, version, size and eTag together name one content."""
        return f"{self.id}:{self.version or ''}:{self.size if self.size is not None else ''}:" + (
            self.etag or ""
        )


def _text(meta: dict[str, Any], key: str) -> str | None:
    value = meta.get(key)
    return str(value) if value not in (None, "") else None


def _object_from_row(row: tuple[Any, ...]) -> SourceObject:
    ident, bucket_id, name, version, metadata = row
    meta = metadata if isinstance(metadata, dict) else json.loads(metadata or "{}")
    size = meta.get("size")
    etag = _text(meta, "eTag")
    return SourceObject(
        id=str(ident),
        bucket_id=str(bucket_id),
        name=str(name),
        version=str(version) if version else None,
        size=int(size) if isinstance(size, int | float | str) and str(size).isdigit() else None,
        etag=etag.strip('"') if etag else None,
        mimetype=_text(meta, "mimetype"),
        cache_control=_text(meta, "cacheControl"),
    )


def list_objects(conn: Conn) -> list[SourceObject]:
    """Every row of the source's ``storage.objects``, in key order.

    :raises PreflightError: the source has no ``storage.objects`` (storage-api never ran there).
    """
    row = conn.execute("SELECT to_regclass('storage.objects') IS NOT NULL").fetchone()
    if not row or not row[0]:
        raise PreflightError(
            "the source database has no table storage.objects: storage-api's schema is not "
            "there, so there are no files to copy (leave the storage step off)"
        )
    try:
        rows = conn.execute(
            "SELECT id, bucket_id, name, version, metadata FROM storage.objects "
            "WHERE bucket_id IS NOT NULL AND name IS NOT NULL "
            'ORDER BY bucket_id COLLATE "C", name COLLATE "C"'
        ).fetchall()
    except psycopg.errors.InsufficientPrivilege as exc:
        raise PreflightError(
            "the source role may not read storage.objects: use the URL of a role that may "
            "(postgres or supabase_storage_admin on self-hosted Supabase)"
        ) from exc
    return [_object_from_row(r) for r in rows]


@dataclass
class Opened:
    """An object's bytes being read, with the headers its backend serves them with.

    :param md5_comparable: whether the recorded eTag is an md5 of these bytes (false for an S3
        source encrypting with KMS, whose ETags are not).
    """

    stream: Any
    content_type: str | None
    cache_control: str | None
    md5_comparable: bool = True

    def chunks(self) -> Any:
        """The bytes in pieces of at most 1 MiB."""
        while chunk := self.stream.read(_CHUNK):
            yield chunk

    def close(self) -> None:
        self.stream.close()


class Source(Protocol):
    """A storage-api backend to read objects from."""

    def describe(self) -> str:
        """Where the bytes are, for messages (never a credential)."""

    def ready(self) -> None:
        """:raises ConfigError: the backend itself is not there (before objects are probed)."""

    def probe(self, obj: SourceObject) -> int | None:
        """The size of `obj`'s bytes, or None when they are missing."""

    def open(self, obj: SourceObject) -> Opened:
        """Start reading `obj`. :raises FileNotFoundError: its bytes are missing."""


def _check_separator(separator: str) -> None:
    if separator not in VERSION_SEPARATORS:
        raise ConfigError(
            f"`version_separator` {separator!r} is not storage-api's: use '/' (the default) or "
            "'-$v-' (TUS_USE_FILE_VERSION_SEPARATOR=true)",
            setting="version_separator",
        )


def _xattr(path: Path, name: str) -> str | None:
    try:
        return os.getxattr(path, name).decode(errors="replace") or None
    except OSError:  # no such attribute, or a filesystem (or copy) without user xattrs
        return None


@dataclass(frozen=True)
class FileBackendSource:
    """storage-api's file backend: a directory tree readable where the step runs.

    :param root: ``FILE_STORAGE_BACKEND_PATH`` as mounted here (``volumes/storage``).
    :param global_bucket: the source's ``GLOBAL_S3_BUCKET`` (first directory under `root`).
    :param tenant: the source's ``TENANT_ID``.
    """

    root: Path
    global_bucket: str = STUB
    tenant: str = STUB
    separator: str = "/"

    def __post_init__(self) -> None:
        _check_separator(self.separator)
        if not self.root.is_dir():
            raise ConfigError(
                f"`storage_source_path` {str(self.root)!r} is not a directory here: mount "
                "storage-api's FILE_STORAGE_BACKEND_PATH (volumes/storage) where the step runs",
                setting="storage_source_path",
            )
        if not (self.root / self.global_bucket).is_dir():
            raise ConfigError(
                f"{str(self.root / self.global_bucket)!r} does not exist: the file backend keeps "
                "objects under <path>/<GLOBAL_S3_BUCKET>/<TENANT_ID>/; set "
                "`storage_source_global_bucket` (default 'stub') and `storage_source_tenant`",
                setting="storage_source_global_bucket",
            )

    def describe(self) -> str:
        return f"file backend {self.root}"

    def ready(self) -> None:
        return None  # checked when constructed

    def path(self, obj: SourceObject) -> Path:
        """Where the file backend keeps `obj`, refusing names that would leave the tree."""
        key = storage_key(self.tenant, obj.bucket_id, obj.name, obj.version, self.separator)
        base = (self.root / self.global_bucket).resolve()
        path = (base / key).resolve()
        if not path.is_relative_to(base):
            raise ConfigError(f"object {obj.label!r} names a path outside the storage tree")
        return path

    def probe(self, obj: SourceObject) -> int | None:
        path = self.path(obj)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        return None if path.is_dir() else stat.st_size

    def open(self, obj: SourceObject) -> Opened:
        path = self.path(obj)
        stream = path.open("rb")
        return Opened(
            stream, _xattr(path, XATTR_CONTENT_TYPE), _xattr(path, XATTR_CACHE_CONTROL), True
        )


@dataclass(frozen=True)
class S3BackendSource:
    """storage-api's S3 backend (AWS or S3-compatible: MinIO, R2, ...).

    :param bucket: the source's ``GLOBAL_S3_BUCKET``.
    :param client: a boto3 S3 client for the source (see `s3_source_client`).
    """

    bucket: str
    client: Any = field(repr=False)
    tenant: str = STUB
    separator: str = "/"

    def __post_init__(self) -> None:
        _check_separator(self.separator)

    def describe(self) -> str:
        return f"s3://{self.bucket}"

    def ready(self) -> None:
        """A HEAD of a missing key and of a key in a missing bucket both answer 404: without
        this, a mistyped bucket would report every object as missing."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else ""
            raise ConfigError(
                f"source bucket s3://{self.bucket} cannot be reached "
                f"({code or type(exc).__name__}): check `storage_source_bucket` (GLOBAL_S3_BUCKET "
                "of the source storage-api), `storage_source_endpoint` and the keys",
                setting="storage_source_bucket",
            ) from exc

    def _key(self, obj: SourceObject) -> str:
        return storage_key(self.tenant, obj.bucket_id, obj.name, obj.version, self.separator)

    def probe(self, obj: SourceObject) -> int | None:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(obj))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return int(head["ContentLength"])

    def open(self, obj: SourceObject) -> Opened:
        from botocore.exceptions import ClientError

        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self._key(obj))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(self._key(obj)) from exc
            raise
        kms = got.get("ServerSideEncryption") == "aws:kms"
        return Opened(got["Body"], got.get("ContentType"), got.get("CacheControl"), not kms)


@dataclass(frozen=True)
class SourceSettings:
    """Where the storage step reads the bytes: the file backend's tree or an S3 bucket.

    Defaults and validation from ``migration.options``; credentials are not a field (they come
    from a secret or the environment, resolved by the skin that runs the step).
    """

    path: str = option("storage_source_path")
    bucket: str = option("storage_source_bucket")
    endpoint: str = option("storage_source_endpoint")
    region: str = option("storage_source_region")
    global_bucket: str = option("storage_source_global_bucket")
    tenant: str = option("storage_source_tenant")

    def __post_init__(self) -> None:
        validate(self)

    @property
    def named(self) -> bool:
        """Whether a backend is named (which turns the storage step on)."""
        return bool(self.path or self.bucket)

    def open(
        self,
        tenant: str,
        separator: str,
        credentials: SourceCredentials | None = None,
        region: str | None = None,
    ) -> Source:
        """The named backend.

        :param tenant: the target's ``TENANT_ID``: the source's unless `tenant` is set here.
        :param region: the source store's region when `region` is not set (else us-east-1).
        :raises ConfigError: no backend is named, or the named one is not usable.
        """
        if not self.named:
            raise ConfigError(
                "no source backend for the storage step: set `storage_source_path` (the file "
                "backend's directory) or `storage_source_bucket` (its S3 bucket)",
                setting="storage_source_path",
            )
        source_tenant = self.tenant or tenant
        if self.path:
            return FileBackendSource(Path(self.path), self.global_bucket, source_tenant, separator)
        client = s3_source_client(
            self.endpoint or None, self.region or region or "us-east-1", credentials
        )
        return S3BackendSource(self.bucket, client, source_tenant, separator)

    def describe(self) -> str:
        return f"file backend {self.path}" if self.path else f"s3://{self.bucket}"


@dataclass(frozen=True)
class SourceCredentials:
    """Keys of an S3-compatible source; never printed (``repr`` hides them)."""

    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


def credentials_from_json(text: str, origin: str) -> SourceCredentials:
    """Keys from a secret's JSON: ``{"accessKeyId": ..., "secretAccessKey": ...}`` (the
    ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` spellings are accepted too).

    :raises ConfigError: naming `origin`, never the values.
    """
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{origin} is not JSON: store {{accessKeyId, secretAccessKey}}") from exc
    key = (
        data.get("accessKeyId") or data.get("AWS_ACCESS_KEY_ID") if isinstance(data, dict) else None
    )
    secret = (
        data.get("secretAccessKey") or data.get("AWS_SECRET_ACCESS_KEY")
        if isinstance(data, dict)
        else None
    )
    if not key or not secret:
        raise ConfigError(f"{origin} lacks accessKeyId or secretAccessKey")
    return SourceCredentials(str(key), str(secret), data.get("sessionToken"))


def credentials_from_env(environ: dict[str, str] | None = None) -> SourceCredentials | None:
    """``SOURCE_S3_ACCESS_KEY_ID`` / ``SOURCE_S3_SECRET_ACCESS_KEY``, when both are set.

    Their own names, not ``AWS_*``: those are the target account's, and the source is often
    another store (a MinIO beside the self-hosted stack).
    """
    env = os.environ if environ is None else environ
    key, secret = env.get("SOURCE_S3_ACCESS_KEY_ID"), env.get("SOURCE_S3_SECRET_ACCESS_KEY")
    if bool(key) != bool(secret):
        raise ConfigError("set both SOURCE_S3_ACCESS_KEY_ID and SOURCE_S3_SECRET_ACCESS_KEY")
    return SourceCredentials(key, secret) if key and secret else None


def s3_source_client(
    endpoint_url: str | None,
    region: str | None,
    credentials: SourceCredentials | None,
    force_path_style: bool = True,
) -> Any:
    """A boto3 client for the source store (path-style by default, as MinIO needs)."""
    import boto3
    from botocore.config import Config

    config = Config(
        s3={"addressing_style": "path" if force_path_style else "auto"},
        retries={"max_attempts": 5, "mode": "standard"},
    )
    keys: dict[str, str | None] = {}
    if credentials is not None:
        keys = {
            "aws_access_key_id": credentials.access_key_id,
            "aws_secret_access_key": credentials.secret_access_key,
            "aws_session_token": credentials.session_token,
        }
    return boto3.client(
        "s3", endpoint_url=endpoint_url or None, region_name=region, config=config, **keys
    )


def credentials_from_secret_arn(arn: str) -> SourceCredentials:
    """Keys of the source store from a Secrets Manager secret (JSON, see
    `credentials_from_json`), read with the identity the step runs as.

    :raises ConfigError: the secret cannot be read or lacks the keys (no value in the message).
    """
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    parts = arn.split(":")
    if len(parts) < 7 or parts[2] != "secretsmanager":
        raise ConfigError(f"{arn!r} is not a Secrets Manager secret ARN")
    client = boto3.client("secretsmanager", region_name=parts[3])
    try:
        text = client.get_secret_value(SecretId=arn).get("SecretString")
    except (ClientError, BotoCoreError) as exc:
        raise ConfigError(
            f"cannot read secret {arn} ({type(exc).__name__}): check the ARN and that this "
            "identity may call secretsmanager:GetSecretValue and kms:Decrypt on its key"
        ) from None
    if not text:
        raise ConfigError(f"secret {arn} has no string value")
    return credentials_from_json(str(text), f"secret {arn}")
