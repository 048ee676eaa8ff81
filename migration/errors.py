"""One small exception hierarchy for the data engine.

The CLI and the Pulumi providers only turn these into messages, so every message says what is
wrong (with the value) and what to do, and never carries a password.
"""

from __future__ import annotations

from typing import Any


class MigrationError(Exception):
    """Base class of every error the data engine raises on purpose.

    Messages name settings neutrally, in backticks (```on_existing```); each skin rewrites them
    in its own words (``migration.options.render``).

    :param setting: the setting at fault, when one is (its neutral name), for ``--json``.
    """

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class ConfigError(MigrationError):
    """A setting is missing or malformed (URL, schema name, backup location, ...)."""


class ConnectionFailed(MigrationError):
    """A database could not be reached or refused the credentials."""


class PreflightError(MigrationError):
    """A check before any write failed; nothing was changed."""


class ExtensionUnavailable(PreflightError):
    """`vector` (pgvector) is not installed on the server, or the role may not create it."""


class PgDumpUnsuitable(PreflightError):
    """No pg_dump/pg_restore pair whose major version is at least the source's."""


class UnknownSchema(PreflightError):
    """An application schema named in the settings does not exist on the source."""


class TargetNotEmpty(PreflightError):
    """The target already holds tables the import would create."""


class SettingsChanged(PreflightError):
    """An interrupted import exists on the target with different settings."""


class BackupFailed(MigrationError):
    """pg_dump or the upload of its output failed."""


class ImportFailed(MigrationError):
    """A schema, data or post-data statement failed on the target."""


class VerificationFailed(MigrationError):
    """Counts or checksums differ, or the import is incomplete.

    :param report: the report so far, so callers can still show the table: the library's typed
        report (`result`; `report` is then its ``as_dict()``), or a plain dict.
    """

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message, setting=None)
        self.result: Any = None if report is None or isinstance(report, dict) else report
        self.report: dict[str, Any] | None = report.as_dict() if self.result is not None else report
