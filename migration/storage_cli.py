"""`qckstrt-migrate storage`: the storage step's arguments and its call into the library.

Kept beside `migration.cli` (which registers it) so the step's settings live in one place.
Every flag also reads an environment variable; credentials of an S3-compatible source come from
``SOURCE_S3_ACCESS_KEY_ID``/``SOURCE_S3_SECRET_ACCESS_KEY`` or a secret ARN, never a flag.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from migration.connection import DEFAULT_ATTEMPTS, DEFAULT_CONNECT_TIMEOUT, Endpoint
from migration.errors import ConfigError
from migration.progress import Reporter
from migration.storage_copy import StorageCopySettings, copy_objects
from migration.storage_sources import (
    STUB,
    FileBackendSource,
    S3BackendSource,
    Source,
    credentials_from_env,
    credentials_from_secret_arn,
    s3_source_client,
)


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name) or default


def add_storage(
    p: argparse.ArgumentParser | argparse._ArgumentGroup, standalone: bool = True
) -> None:
    """The storage step's flags (each with its environment variable).

    :param standalone: the `storage` subcommand's own parser (else `run`'s, which already has
        ``--source`` and ``--json``).
    """
    if standalone:
        p.add_argument("--source", help="source database URL (prefer SOURCE_DATABASE_URL)")
        p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
        p.add_argument(
            "--check",
            action="store_true",
            help="copy nothing: check that every row's bytes are at its key (and, with "
            "--target/TARGET_DATABASE_URL, that the target's storage.objects matches)",
        )
        p.add_argument("--target", help="target URL for --check (prefer TARGET_DATABASE_URL)")
    p.add_argument(
        "--storage-bucket",
        default=_env("QCKSTRT_STORAGE_BUCKET"),
        help="the stack's bucket (QCKSTRT_STORAGE_BUCKET; the stack output bucketName)",
    )
    p.add_argument(
        "--storage-tenant",
        default=_env("QCKSTRT_STORAGE_TENANT", STUB),
        help="storage-api's TENANT_ID on AWS (QCKSTRT_STORAGE_TENANT; stub)",
    )
    p.add_argument(
        "--from-dir",
        default=_env("QCKSTRT_STORAGE_FILE_PATH"),
        help="the file backend's FILE_STORAGE_BACKEND_PATH as mounted here "
        "(QCKSTRT_STORAGE_FILE_PATH), e.g. supabase/docker/volumes/storage",
    )
    p.add_argument(
        "--from-s3",
        default=_env("QCKSTRT_STORAGE_SOURCE_BUCKET"),
        help="instead: the S3 backend's GLOBAL_S3_BUCKET (QCKSTRT_STORAGE_SOURCE_BUCKET)",
    )
    _add_s3_source(p)
    p.add_argument(
        "--source-global-bucket",
        default=_env("QCKSTRT_STORAGE_SOURCE_GLOBAL_BUCKET", STUB),
        help="the file backend's GLOBAL_S3_BUCKET, its first directory (stub)",
    )
    p.add_argument(
        "--source-tenant",
        default=_env("QCKSTRT_STORAGE_SOURCE_TENANT"),
        help="the source's TENANT_ID (QCKSTRT_STORAGE_SOURCE_TENANT; default: --storage-tenant)",
    )
    p.add_argument(
        "--storage-workers",
        type=int,
        default=int(_env("QCKSTRT_STORAGE_WORKERS", "4") or 4),
        help="objects copied at once (QCKSTRT_STORAGE_WORKERS; 4)",
    )
    p.add_argument(
        "--allow-missing-objects",
        action="store_true",
        default=_env("QCKSTRT_STORAGE_ALLOW_MISSING") == "true",
        help="copy the rest when some objects' bytes are missing, listing them in the report",
    )
    p.add_argument(
        "--version-separator",
        choices=["/", "-$v-"],
        default=_env("QCKSTRT_STORAGE_VERSION_SEPARATOR", "/"),
        help="'-$v-' when storage-api runs with TUS_USE_FILE_VERSION_SEPARATOR=true",
    )


def _add_s3_source(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Where an S3-compatible source store is, and where its keys come from."""
    p.add_argument(
        "--source-s3-endpoint",
        default=_env("QCKSTRT_STORAGE_SOURCE_ENDPOINT"),
        help="endpoint of an S3-compatible source (QCKSTRT_STORAGE_SOURCE_ENDPOINT)",
    )
    p.add_argument(
        "--source-s3-region",
        default=_env("QCKSTRT_STORAGE_SOURCE_REGION", "us-east-1"),
        help="region of the source store (QCKSTRT_STORAGE_SOURCE_REGION; us-east-1)",
    )
    p.add_argument(
        "--source-s3-secret-arn",
        default=_env("QCKSTRT_STORAGE_SOURCE_SECRET_ARN"),
        help="secret holding {accessKeyId, secretAccessKey} of the source store "
        "(QCKSTRT_STORAGE_SOURCE_SECRET_ARN; else SOURCE_S3_ACCESS_KEY_ID/..._SECRET_ACCESS_KEY)",
    )


def source_of(args: argparse.Namespace) -> Source:
    """The backend named by ``--from-dir`` or ``--from-s3`` (exactly one).

    :raises ConfigError: none or both given.
    """
    tenant = args.source_tenant or args.storage_tenant
    if bool(args.from_dir) == bool(args.from_s3):
        raise ConfigError(
            "name the source backend: --from-dir (QCKSTRT_STORAGE_FILE_PATH) for the file "
            "backend, or --from-s3 (QCKSTRT_STORAGE_SOURCE_BUCKET) for an S3 one; not both"
        )
    if args.from_dir:
        return FileBackendSource(
            Path(args.from_dir), args.source_global_bucket, tenant, args.version_separator
        )
    credentials = (
        credentials_from_secret_arn(args.source_s3_secret_arn)
        if args.source_s3_secret_arn
        else credentials_from_env()
    )
    client = s3_source_client(args.source_s3_endpoint, args.source_s3_region, credentials)
    return S3BackendSource(args.from_s3, client, tenant, args.version_separator)


def wanted(args: argparse.Namespace) -> bool:
    """Whether `run` should take the storage step: a source backend is named."""
    return bool(args.from_dir or args.from_s3)


def settings_of(args: argparse.Namespace) -> StorageCopySettings:
    """:raises ConfigError: no bucket, or a bad value (before anything is read)."""
    if not args.storage_bucket:
        raise ConfigError("no target bucket: set QCKSTRT_STORAGE_BUCKET or --storage-bucket")
    settings = StorageCopySettings(
        args.storage_bucket,
        args.storage_tenant,
        args.storage_workers,
        args.allow_missing_objects,
        args.version_separator,
    )
    settings.validate()
    return settings


def cmd_storage(args: argparse.Namespace, rep: Reporter) -> dict[str, Any]:
    """Copy the objects; the report as a dict."""
    import boto3

    url = args.source or _env("SOURCE_DATABASE_URL")
    if not url:
        raise ConfigError("no source database: set SOURCE_DATABASE_URL (preferred) or --source")
    settings = settings_of(args)
    client = boto3.client("s3")
    if args.check:
        from migration.storage_verify import check_objects

        target_url = args.target or _env("TARGET_DATABASE_URL")
        target = _endpoint(target_url, "target") if target_url else None
        return check_objects(_endpoint(url, "source"), settings, client, target, rep).as_dict()
    source = source_of(args)
    return copy_objects(_endpoint(url, "source"), source, settings, client, rep).as_dict()


def _endpoint(url: str, name: str) -> Endpoint:
    return Endpoint(
        url,
        name,
        connect_timeout=int(_env("QCKSTRT_CONNECT_TIMEOUT", str(DEFAULT_CONNECT_TIMEOUT)) or 10),
        attempts=int(_env("QCKSTRT_CONNECT_ATTEMPTS", str(DEFAULT_ATTEMPTS)) or 3),
    )
