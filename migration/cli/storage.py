"""The storage step from the command line: `qckstrt-migrate storage` and `run`'s storage step.

``migration.cli`` builds the flags, resolves them (flag, then environment variable, then
default: all declared in ``migration.options``) and calls these with the resolved values. What
is left here is what only a command line does: reading the source store's keys from a secret
ARN or from ``SOURCE_S3_ACCESS_KEY_ID``/``SOURCE_S3_SECRET_ACCESS_KEY`` (never a flag: flags
show in process lists), and making the boto3 clients.
"""

from __future__ import annotations

import argparse
from typing import Any

from migration.backends.storage_sources import (
    Source,
    SourceSettings,
    credentials_from_env,
    credentials_from_secret_arn,
)
from migration.db.connection import Endpoint
from migration.db.roles import PasswordStore
from migration.errors import ConfigError
from migration.options import declared_fields
from migration.progress import Reporter
from migration.steps.storage_copy import StorageCopyReport, StorageCopySettings
from migration.steps.storage_verify import StorageCheckReport, check_objects, copy_and_check


def wanted(args: argparse.Namespace) -> bool:
    """Whether `run` takes the storage step: a source backend is named."""
    return bool(args.storage_source_path or args.storage_source_bucket)


def open_source(args: argparse.Namespace, settings: StorageCopySettings) -> Source:
    """The named backend, with the source store's keys from the secret ARN or the environment.

    :raises ConfigError: no backend, both, or keys that cannot be read.
    """
    spec = _source_settings(args)
    credentials = None
    if spec.bucket:
        arn = args.storage_source_secret_arn
        credentials = credentials_from_secret_arn(arn) if arn else credentials_from_env()
    return spec.open(settings.tenant, settings.separator, credentials)


def _declared(cls: Any, args: argparse.Namespace) -> Any:
    """An instance of a library option dataclass from the resolved settings it declares."""
    return cls(**{f: getattr(args, n) for f, n in declared_fields(cls).items()})


def _source_settings(args: argparse.Namespace) -> SourceSettings:
    spec: SourceSettings = _declared(SourceSettings, args)
    return spec


def schema_store(args: argparse.Namespace) -> PasswordStore | None:
    """supabase_storage_admin's password secret (`storage_password_secret`), by ARN only.

    :raises ConfigError: the value is not a Secrets Manager secret ARN.
    """
    from migration.db.roles import STORAGE_PASSWORDS, SecretsManagerStore

    arn = str(args.storage_password_secret or "").strip()
    if not arn:
        return None
    if not arn.startswith("arn:") or arn.count(":") < 6 or ":secretsmanager:" not in arn:
        raise ConfigError(
            "`storage_password_secret` takes a Secrets Manager secret ARN "
            "(arn:aws:secretsmanager:<region>:<account>:secret:<name>)",
            setting="storage_password_secret",
        )
    return SecretsManagerStore({"supabase_storage_admin": arn}, roles=STORAGE_PASSWORDS)


def copy_settings(args: argparse.Namespace) -> StorageCopySettings:
    """:raises ConfigError: no bucket, or a bad value (before anything is read)."""
    settings: StorageCopySettings = _declared(StorageCopySettings, args)
    settings.validate()
    return settings


def cmd_storage(
    args: argparse.Namespace, source_db: Endpoint, target_db: Endpoint | None, rep: Reporter
) -> StorageCopyReport | StorageCheckReport:
    """Copy the objects then check them (or, with `storage_check`, only check); the report.

    :param target_db: its ``storage.objects`` is compared too, when it has one.
    """
    import boto3

    settings = copy_settings(args)
    client = boto3.client("s3")
    if args.storage_check:
        return check_objects(source_db, settings, client, target_db, rep)
    source = open_source(args, settings)
    return copy_and_check(source_db, source, settings, client, target_db, rep)
