"""The data steps as Pulumi dynamic resources: thin skins over the library.

Why a skin and not new code: ``qckstrt-migrate`` runs the same library calls, so a step behaves
the same from a bastion and inside ``pulumi up``. A provider here only (1) validates inputs
without I/O (``check``, run in every preview), (2) names the inputs whose change re-runs the
step (``diff``; always an update, never a replacement, because ``delete`` keeps the data and a
replacement would gain nothing), (3) resolves secret ARNs with boto3 at run time, and (4) turns
a library report into outputs that hold no secret.

Contract (``DESIGN.md`` §4): classes live in this importable module so dill pickles them by
reference; providers hold no connection, client or model; every resource carries an explicit
``provider_version`` input. Progress goes to ``pulumi.log.info`` through `LogReporter`.
Exceptions that reach the engine are rebuilt from a one-line cause with every secret removed,
and raised ``from None`` so that no chained driver message (or traceback value) leaks.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import pulumi
from psycopg import conninfo
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ResourceProvider,
    UpdateResult,
)
from pulumi.output import Unknown

from migration import options
from migration.db.connection import DEFAULT_ATTEMPTS, DEFAULT_CONNECT_TIMEOUT, Endpoint
from migration.errors import ConfigError, ConnectionFailed, MigrationError, VerificationFailed
from migration.progress import LogReporter
from migration.steps.retrieval import RetrievalCheck, RetrievalThresholds

if TYPE_CHECKING:
    from migration.steps.storage_verify import StorageCheckReport

#: Bump when a provider's semantics change: a changed ``provider_version`` re-runs the step.
PROVIDER_VERSION = "1"
#: The wire value of inputs not known yet (a preview before the database exists). The SDK's
#: host turns it into `pulumi.output.Unknown` in check and diff (``keep_unknowns``).
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
PROVIDER_KEY = "__provider"

SSL_MODES = options.get("ssl_mode").choices
_ARN = re.compile(r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+$")
_S3 = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")
_IDENT_MAX = 63


class StepFailed(Exception):
    """A data step failed; the message is one line and holds no secret."""


def _known(value: Any) -> bool:
    """False for a value the engine does not know yet (an `Unknown`, or its wire sentinel)."""
    return not isinstance(value, Unknown) and not (isinstance(value, str) and value == UNKNOWN)


def _as_int(value: Any) -> int | None:
    """`value` as an int when it is a whole number, else None.

    The engine's wire format carries numbers as doubles: 5432.0 is 5432; 5432.5 and True are not.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if float(value).is_integer() else None


# ---------------------------------------------------------------------------------------------
# Secrets: resolved at run time, remembered only for scrubbing messages


@dataclass
class _Secrets:
    """The plaintext values one call has resolved, so messages can be scrubbed of them."""

    values: list[str] = field(default_factory=list)

    def remember(self, value: str) -> str:
        if value:
            self.values.append(value)
        return value

    def scrub(self, message: str) -> str:
        for value in sorted(self.values, key=len, reverse=True):
            message = message.replace(value, "***")
        return " ".join(message.split())


def _region_of(arn: str) -> str:
    return arn.split(":")[3]


def read_secret(arn: str) -> str:
    """The SecretString of `arn`, read with the credentials ``pulumi up`` runs with.

    :raises ConfigError: the secret cannot be read (missing, no permission, no value).
    :raises ConnectionFailed: Secrets Manager cannot be reached.
    """
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client("secretsmanager", region_name=_region_of(arn))
    try:
        response = client.get_secret_value(SecretId=arn)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise ConfigError(
            f"cannot read secret {arn} ({code}): check the ARN, and that the identity running "
            "pulumi may call secretsmanager:GetSecretValue and kms:Decrypt on its key"
        ) from None
    except BotoCoreError as exc:
        raise ConnectionFailed(f"cannot reach Secrets Manager for {arn}: {exc}") from None
    value = response.get("SecretString")
    if not value:
        raise ConfigError(f"secret {arn} has no string value")
    return str(value)


def _target(props: Mapping[str, Any], secrets: _Secrets) -> Endpoint:
    """The target as its master user, from the RDS-managed secret (``username``/``password``)."""
    raw = read_secret(str(props["master_secret_arn"]))
    try:
        doc = json.loads(raw)
        username, password = str(doc["username"]), str(doc["password"])
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            f"secret {props['master_secret_arn']} is not an RDS master secret: expected JSON with "
            "username and password"
        ) from None
    secrets.remember(password)
    params: dict[str, Any] = {
        "host": str(props["host"]),
        "port": str(int(props["port"])),
        "dbname": str(props["database"]),
        "user": username,
        "password": password,
        "sslmode": str(props.get("ssl_mode") or "require"),
    }
    if props.get("ssl_root_cert"):
        params["sslrootcert"] = str(props["ssl_root_cert"])
    return Endpoint(
        conninfo.make_conninfo(**params),
        "target",
        connect_timeout=int(props.get("connect_timeout") or DEFAULT_CONNECT_TIMEOUT),
        attempts=DEFAULT_ATTEMPTS,
    )


def _source(props: Mapping[str, Any], secrets: _Secrets) -> Endpoint | None:
    arn = props.get("source_secret_arn")
    if not arn:
        return None
    url = secrets.remember(read_secret(str(arn)))
    try:
        password = conninfo.conninfo_to_dict(url).get("password")
    except Exception:  # an unparsable URL is reported by Endpoint below, masked
        password = None
    if password:
        secrets.remember(str(password))
    return Endpoint(
        url,
        "source",
        connect_timeout=int(props.get("connect_timeout") or DEFAULT_CONNECT_TIMEOUT),
        attempts=DEFAULT_ATTEMPTS,
    )


def _required_source(props: Mapping[str, Any], secrets: _Secrets) -> Endpoint:
    """The source of a step whose `check` requires ``source_secret_arn``."""
    source = _source(props, secrets)
    assert source is not None  # check() requires source_secret_arn
    return source


# ---------------------------------------------------------------------------------------------
# Input checks shared by the steps (no I/O: they run in every preview)

Failures = list[CheckFailure]


def _check_connection(news: Mapping[str, Any], failures: Failures) -> None:
    host = news.get("host")
    if _known(host) and (not isinstance(host, str) or not host.strip()):
        failures.append(CheckFailure("host", "host is empty: the database endpoint is needed"))
    port = news.get("port")
    if _known(port) and not 1 <= (_as_int(port) or 0) <= 65535:
        failures.append(CheckFailure("port", f"port {port!r} is not a TCP port (1..65535)"))
    database = news.get("database")
    if _known(database) and (
        not isinstance(database, str) or not database or len(database) > _IDENT_MAX
    ):
        failures.append(CheckFailure("database", f"database name {database!r} is not valid"))
    _check_arn(news, "master_secret_arn", failures, required=True)
    version = news.get("provider_version")
    if not isinstance(version, str) or not version:
        failures.append(CheckFailure("provider_version", "provider_version is required (a string)"))


def _check_arn(news: Mapping[str, Any], key: str, failures: Failures, *, required: bool) -> None:
    value = news.get(key)
    if not _known(value):
        return
    if not value:
        if required:
            failures.append(CheckFailure(key, f"{key} is required: a Secrets Manager secret ARN"))
        return
    if not isinstance(value, str) or not _ARN.match(value):
        # Never echo the value: a user may have put the secret itself here by mistake.
        failures.append(
            CheckFailure(
                key,
                f"{key} is not a Secrets Manager secret ARN (arn:aws:secretsmanager:...); pass "
                "the secret's ARN, never its value",
            )
        )


def _check_declared(step: str, news: Mapping[str, Any], failures: Failures) -> None:
    """Judge each declared setting of `step` (and the rules between them) as every skin does.

    Unknown values (a preview before the database exists) and absent ones are skipped.
    """
    known: dict[str, Any] = {}
    for setting in options.for_step(step):
        value = news.get(setting.input)
        if not _known(value) or value is None or (value == "" and setting.default is None):
            continue
        if (found := options.check(setting.name, value)) is not None:
            failures.append(CheckFailure(setting.input, check_words(found)))
        else:
            known[setting.name] = value  # the rules between settings judge valid values only
    for found in options.cross_check(known):
        failures.append(CheckFailure(options.get(found.setting).input, check_words(found)))


def check_words(found: options.Problem) -> str:
    """A problem in a provider's ``check`` words: what is wrong names the resource's inputs
    (the failure's property is one), the fix names the stack keys the user sets."""
    text = options.render(found.text, options.input_label)
    return f"{text}; {options.render(found.fix, options.pulumi_name)}"


def stack_words(message: str) -> str:
    """A library message in ``pulumi up``'s words: settings by their config keys."""
    return options.render(message, options.pulumi_name)


# ---------------------------------------------------------------------------------------------
# The providers


def library_options(cls: Any, props: Mapping[str, Any], step: str) -> Any:
    """An instance of a library option dataclass from a step's inputs (typed off the wire).

    Fields whose setting is not an input of `step` keep the library's default.
    """
    values: dict[str, Any] = {}
    for field_name, name in options.declared_fields(cls).items():
        setting = options.get(name)
        if step not in setting.steps:
            continue
        value = props.get(setting.input)
        if value is None or (value == "" and setting.default is None):
            values[field_name] = setting.default
        elif setting.type == "integer":
            values[field_name] = int(value)
        elif setting.type == "number":
            values[field_name] = float(value)
        elif setting.type == "array":
            values[field_name] = [str(v) for v in value]
        elif setting.type == "boolean":
            values[field_name] = bool(value)
        else:
            values[field_name] = str(value)
    return cls(**values)


class _StepProvider(ResourceProvider):
    """What the four steps share: check, diff, the create/update run and a data-keeping delete.

    `STEP_ID` names the step in ``migration.options``: its inputs, their defaults, their
    validation and which of them re-run the step (`TRIGGERS`) all come from the declarations.
    Subclasses add the checks only a provider has (secret ARNs, an S3-only backup) and map a
    library report to outputs in `_run`.
    """

    STEP: ClassVar[str] = "step"
    STEP_ID: ClassVar[str] = ""
    #: Inputs whose change re-runs the step. Others (how to connect, batch size, device, ...)
    #: are recorded without running anything: a new tunnel port must not re-import a database.
    TRIGGERS: ClassVar[tuple[str, ...]] = ("provider_version",)
    DEFAULTS: ClassVar[dict[str, Any]] = {}

    # -- preview-time calls: no I/O --------------------------------------------------------------

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        inputs = {**self.DEFAULTS, **{k: v for k, v in news.items() if v is not None}}
        failures: Failures = []
        _check_connection(inputs, failures)
        _check_declared(self.STEP_ID, inputs, failures)
        self._check(_olds, inputs, failures)
        return CheckResult(inputs, failures)

    def _check(self, olds: dict[str, Any], news: dict[str, Any], failures: Failures) -> None:
        return None

    def changed_inputs(self, olds: Mapping[str, Any], news: Mapping[str, Any]) -> list[str]:
        """The trigger inputs whose value differs (or is not known yet), in declaration order."""
        return [
            key
            for key in self.TRIGGERS
            if not _known(news.get(key)) or olds.get(key) != news.get(key)
        ]

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = self.changed_inputs(olds, news)
        if changed:
            pulumi.log.info(f"{self.STEP}: runs again because {', '.join(changed)} changed")
        # Never a replacement: delete keeps the data, so replacing would only re-run the step.
        return DiffResult(
            changes=bool(changed), replaces=[], stables=[], delete_before_replace=False
        )

    # -- run-time calls --------------------------------------------------------------------------

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = self._execute(props, {})
        return CreateResult(self._id(props), outs)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(self._execute(news, olds))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        # Keeps the data and touches nothing: the database may already be gone (staging
        # teardown deletes the instance in the same run), and forgetting a step must never
        # cost data. Returns at once, so `pulumi destroy` cannot hang here.
        where = f"{props.get('database', '?')} on {props.get('host', '?')}"
        pulumi.log.info(f"{self.STEP}: removed from the stack; the data in {where} is kept")

    def _id(self, props: Mapping[str, Any]) -> str:
        return f"{self.STEP}:{props.get('database', '')}"

    def _execute(self, props: dict[str, Any], olds: Mapping[str, Any]) -> dict[str, Any]:
        """Run the step; return the inputs plus its outputs (what diff compares next time)."""
        secrets = _Secrets()
        began = time.monotonic()
        reporter = LogReporter(lambda line: pulumi.log.info(f"{self.STEP}: {line}"))
        try:
            result, changed_data = self._run(props, secrets, reporter)
        except VerificationFailed as exc:
            raise StepFailed(f"{self.STEP}: {secrets.scrub(stack_words(str(exc)))}") from None
        except MigrationError as exc:
            message = secrets.scrub(stack_words(str(exc)))
            raise StepFailed(f"{self.STEP} failed: {message}") from None
        except Exception as exc:
            raise StepFailed(
                f"{self.STEP} failed unexpectedly ({type(exc).__name__}): {secrets.scrub(str(exc))}"
            ) from None
        seconds = round(time.monotonic() - began, 3)
        pulumi.log.info(f"{self.STEP}: done in {seconds:.1f}s")
        # `run_id` changes only when the step changed data: later steps take it as an input,
        # so they run again exactly when the data before them changed.
        run_id = olds.get("run_id") if not changed_data and olds.get("run_id") else None
        inputs = {k: v for k, v in props.items() if k != PROVIDER_KEY}
        return {
            **inputs,
            **result,
            "run_id": run_id or uuid.uuid4().hex,
            "seconds": seconds,
        }

    def _run(
        self, props: Mapping[str, Any], secrets: _Secrets, reporter: LogReporter
    ) -> tuple[dict[str, Any], bool]:
        """Run the library call; return (outputs, whether data changed)."""
        raise NotImplementedError


class PgvectorExtensionProvider(_StepProvider):
    """Step 1: `vector` (and Supabase's ``extensions`` schema stand-ins) on the target."""

    STEP = "pgvector extension"
    STEP_ID = "extension"
    TRIGGERS = ("provider_version", *options.triggers(STEP_ID))
    DEFAULTS = options.input_defaults(STEP_ID)

    def _check(self, olds: dict[str, Any], news: dict[str, Any], failures: Failures) -> None:
        _check_arn(news, "source_secret_arn", failures, required=False)

    def _id(self, props: Mapping[str, Any]) -> str:
        return f"pgvector:{props.get('database', '')}"

    def _run(
        self, props: Mapping[str, Any], secrets: _Secrets, reporter: LogReporter
    ) -> tuple[dict[str, Any], bool]:
        from migration.steps.extension import setup_extension

        report = setup_extension(
            _target(props, secrets),
            _source(props, secrets),
            vector_schema=props.get("vector_schema") or None,
            reporter=reporter,
        )
        return {
            "vector_version": report.vector_version,
            "installed_schema": report.vector_schema,
            "extensions_schema": report.extensions_schema or "",
            "search_path": report.search_path or "",
            "notes": list(report.notes),
        }, report.vector_created or report.vector_updated


class DataImportProvider(_StepProvider):
    """Step 2: back up the source to S3, then import schema and data (resumable)."""

    STEP = "data import"
    STEP_ID = "import"
    TRIGGERS = ("provider_version", *options.triggers(STEP_ID))
    DEFAULTS = options.input_defaults(STEP_ID)

    def _check(self, olds: dict[str, Any], news: dict[str, Any], failures: Failures) -> None:
        _check_arn(news, "source_secret_arn", failures, required=True)
        on_existing = news.get("on_existing")
        backup = news.get("backup")
        # Under Pulumi the backup goes to the stack's bucket: a local directory would be lost.
        judged = any(f.property == "backup" for f in failures)
        if _known(backup) and backup and not judged and not _S3.match(str(backup)):
            failures.append(CheckFailure("backup", f"backup {backup!r} is not s3://bucket/prefix"))
        # Re-importing over data already imported replaces the target's tables: it must be asked
        # for, together, in one change (the import backs the tables up first).
        if olds and on_existing != "replace":
            for key in ("revision", "schemas"):
                if key in olds and _known(news.get(key)) and olds[key] != news.get(key):
                    failures.append(
                        CheckFailure(
                            key,
                            f"changing {key} re-imports into a target that already holds the "
                            "data; set on_existing to replace as well (the import backs up the "
                            "target's tables first), or keep the old value",
                        )
                    )

    def _id(self, props: Mapping[str, Any]) -> str:
        return f"import:{props.get('database', '')}:{'+'.join(props.get('schemas') or [])}"

    def _run(
        self, props: Mapping[str, Any], secrets: _Secrets, reporter: LogReporter
    ) -> tuple[dict[str, Any], bool]:
        from migration.steps.transfer import ImportOptions, import_database

        source = _required_source(props, secrets)
        settings: ImportOptions = library_options(ImportOptions, props, self.STEP_ID)
        region = props.get("region")
        if settings.backup and region:
            import os

            # boto3 picks the bucket's region from here; pulumi's aws:region is not in the env.
            os.environ.setdefault("AWS_DEFAULT_REGION", str(region))
        report = import_database(source, _target(props, secrets), settings, reporter)
        rows = {f"{t.schema}.{t.table}": t.rows for t in report.tables}
        return {
            "source": source.identity(),
            "backup_uri": report.backup or "",
            "target_backup_uri": report.target_backup or "",
            "tables": len(report.tables),
            "rows": sum(rows.values()),
            "table_rows": rows,
            "left_out": [f"{lo.kind} {lo.name}: {lo.reason}" for lo in report.left_out],
            "replaced": list(report.discarded),
            "resumed": report.resumed,
            "pg_dump": report.pg_dump,
        }, not report.already_complete


class ReindexProvider(_StepProvider):
    """Step 3: re-embed every chunk with the stack's model and build the HNSW index."""

    STEP = "re-index"
    STEP_ID = "reindex"
    TRIGGERS = ("provider_version", *options.triggers(STEP_ID), "after")
    DEFAULTS = {**options.input_defaults(STEP_ID), "after": {}}

    def _id(self, props: Mapping[str, Any]) -> str:
        return f"reindex:{props.get('database', '')}:{props.get('schema')}.{props.get('table')}"

    def _run(
        self, props: Mapping[str, Any], secrets: _Secrets, reporter: LogReporter
    ) -> tuple[dict[str, Any], bool]:
        from migration.steps.reindex import ReindexSettings, reindex

        settings: ReindexSettings = library_options(ReindexSettings, props, self.STEP_ID)
        report = reindex(_target(props, secrets), settings, reporter=reporter)
        index, searched = report.index, report.search_settings
        return {
            "search_settings": dict(searched.settings) if searched else {},
            "rows_total": report.rows_total,
            "rows_embedded": report.rows_embedded,
            "rows_skipped": report.rows_skipped,
            "chunks_per_second": report.chunks_per_second,
            "model_dimensions": report.dimensions,
            "index_name": index.name if index else "",
            "index_action": index.action if index else "",
            "index_seconds": index.seconds if index else 0.0,
        }, bool(
            report.rows_embedded
            or (index and index.action != "kept")
            # New search settings change what the app's queries return: the check runs again.
            or (searched and searched.changed)
        )


class MigrationCheckProvider(_StepProvider):
    """Step 4: row counts and checksums, source against target; runs again after any step."""

    STEP = "migration check"
    STEP_ID = "verify"
    TRIGGERS = ("provider_version", *options.triggers(STEP_ID), "after")
    DEFAULTS = {**options.input_defaults(STEP_ID), "after": {}}

    def _check(self, olds: dict[str, Any], news: dict[str, Any], failures: Failures) -> None:
        _check_arn(news, "source_secret_arn", failures, required=True)

    def _id(self, props: Mapping[str, Any]) -> str:
        return f"check:{props.get('database', '')}"

    def _run(
        self, props: Mapping[str, Any], secrets: _Secrets, reporter: LogReporter
    ) -> tuple[dict[str, Any], bool]:
        from migration.steps.verify import verify

        source = _source(props, secrets)
        assert source is not None
        try:
            report = verify(
                source,
                _target(props, secrets),
                [str(s) for s in props.get("schemas") or ["public"]],
                vector_table=str(props.get("table") or options.DEFAULT_TABLE),
                reporter=reporter,
                retrieval=library_options(RetrievalThresholds, props, self.STEP_ID),
            )
        except VerificationFailed as exc:
            listed = (exc.result.mismatches if exc.result is not None else None) or [str(exc)]
            mismatches = "; ".join(str(m) for m in listed[:5])
            raise VerificationFailed(
                f"the target differs from the source: {mismatches}. Re-run `pulumi up` to "
                "resume an interrupted import, or see `qckstrt-migrate verify --json`",
                exc.result if exc.result is not None else exc.report,
            ) from None
        return {
            "ok": report.ok,
            "tables": len(report.tables),
            "rows": sum(t.source_rows for t in report.tables),
            "import_state": report.import_state,
            **_retrieval_outputs(report.retrieval),
            **self._storage(props, source, secrets, reporter),
            **self._auth(source, _target(props, secrets), reporter),
        }, True

    def _auth(self, source: Endpoint, target: Endpoint, rep: LogReporter) -> dict[str, Any]:
        """When the auth step carried `auth` to the target: its users and identities compared."""
        from migration.steps.auth_verify import auth_carried, check_auth

        if not auth_carried(target):
            return {}
        checked = check_auth(source, target, rep)
        return {
            "auth_users": checked.tables[0].source_rows,
            "auth_identities": checked.tables[1].source_rows,
            "auth_checked": checked.ok,
        }

    def _storage(
        self, props: Mapping[str, Any], source: Endpoint, secrets: _Secrets, rep: LogReporter
    ) -> dict[str, Any]:
        """With the storage step in the stack (a ``bucket``): its files, checked again."""
        from migration.steps.storage_copy import StorageCopySettings

        if not props.get("bucket"):
            return {}
        settings: StorageCopySettings = library_options(StorageCopySettings, props, self.STEP_ID)
        client = _s3(_bucket_region(props))
        # Its own call after verify(), not inside it: the files are storage-api's, not tables.
        from migration.steps.storage_verify import check_objects

        checked = check_objects(source, settings, client, _target(props, secrets), rep)
        return _check_outputs(checked)


class StorageCopyProvider(_StepProvider):
    """The storage step: storage-api's files into the stack's bucket at its S3 keys, then checked.

    The rows of ``storage.objects`` come from the source and the bytes go to S3; after the copy
    every row's bytes are checked at their key (size, the copy's fingerprint) and the rows'
    count, bytes and checksum against the target's ``storage.objects`` when the import carried
    it (`migration.steps.storage_verify`). Re-running is cheap and safe (objects already in
    the bucket are skipped), so it re-runs when the import's ``run_id`` changes (``after``).
    """

    STEP = "storage copy"
    STEP_ID = "storage"
    TRIGGERS = ("provider_version", *options.triggers(STEP_ID), "after")
    DEFAULTS = {**options.input_defaults(STEP_ID), "after": {}}

    def _check(self, olds: dict[str, Any], news: dict[str, Any], failures: Failures) -> None:
        _check_arn(news, "source_secret_arn", failures, required=True)
        _check_arn(news, "source_credentials_secret_arn", failures, required=False)
        path, bucket = news.get("source_path"), news.get("source_bucket")
        if _known(path) and _known(bucket) and not path and not bucket:
            failures.append(
                CheckFailure(
                    "source_path",
                    "no source backend: set source_path (the file backend's directory where "
                    "pulumi runs) or source_bucket (its S3 bucket)",
                )
            )
        target = news.get("bucket")
        if _known(target) and not target:
            failures.append(CheckFailure("bucket", "bucket is empty: the stack's bucket is needed"))
        mode, arn = news.get("storage_schema"), news.get("password_secret_arn", "")
        if mode == "carry" and _known(arn) and not arn:
            failures.append(
                CheckFailure(
                    "password_secret_arn",
                    "storage_schema carry needs password_secret_arn (the stack's secret "
                    "qckstrt/<stack>/db-role-supabase-storage-admin), or storage_schema skip "
                    "to copy the files only",
                )
            )
        else:
            _check_arn(news, "password_secret_arn", failures, required=False)

    def _id(self, props: Mapping[str, Any]) -> str:
        return f"storage:{props.get('bucket', '')}/{props.get('tenant', '')}"

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        where = f"s3://{props.get('bucket', '?')}/{props.get('tenant', '?')}/"
        pulumi.log.info(f"{self.STEP}: removed from the stack; the files in {where} are kept")

    def _run(
        self, props: Mapping[str, Any], secrets: _Secrets, reporter: LogReporter
    ) -> tuple[dict[str, Any], bool]:
        from migration.backends.storage_sources import SourceSettings, credentials_from_json
        from migration.steps.storage_copy import StorageCopySettings
        from migration.steps.storage_schema import carry_for_storage_step
        from migration.steps.storage_verify import copy_and_check

        source_db = _required_source(props, secrets)
        settings: StorageCopySettings = library_options(StorageCopySettings, props, self.STEP_ID)
        spec: SourceSettings = library_options(SourceSettings, props, self.STEP_ID)
        credentials = None
        if arn := props.get("source_credentials_secret_arn"):
            credentials = credentials_from_json(read_secret(str(arn)), f"secret {arn}")
            secrets.remember(credentials.secret_access_key)
            secrets.remember(credentials.session_token or "")
        region = _bucket_region(props)
        source = spec.open(settings.tenant, settings.separator, credentials, region)
        client = _s3(region)
        target = _target(props, secrets)
        # Schema storage first, owned by supabase_storage_admin (its roles: the auth step's, or
        # made here with the admin's password into the stack's secret).
        carried = carry_for_storage_step(
            source_db,
            target,
            None,
            [str(s) for s in props.get("schemas") or ["public"]],
            reporter,
            storage_store=_storage_store(props, secrets),
            mode=str(props.get("storage_schema") or "carry"),
        )
        report = copy_and_check(source_db, source, settings, client, target, reporter)
        assert report.check is not None
        return {
            "source": source_db.identity(),
            "source_backend": source.describe(),
            "objects": report.objects,
            "copied": report.copied,
            "already_there": report.already_there,
            "bytes_copied": report.bytes_copied,
            "bytes_total": report.bytes_total,
            "missing": list(report.missing),
            "schema_carried": carried is not None,
            **_check_outputs(report.check),
        }, report.copied > 0


def _storage_store(props: Mapping[str, Any], secrets: _Secrets) -> Any:
    """supabase_storage_admin's password secret (the stack's), scrubbed from any message."""
    from migration.db.roles import STORAGE_PASSWORDS, SecretsManagerStore

    arn = str(props.get("password_secret_arn") or "")
    if not arn:
        return None
    store = SecretsManagerStore({"supabase_storage_admin": arn}, roles=STORAGE_PASSWORDS)
    return _ScrubbingStore(store, secrets)


def _bucket_region(props: Mapping[str, Any]) -> str | None:
    region = str(props.get("region") or "") or None
    if region:
        import os

        # boto3 picks the bucket's region from here; pulumi's aws:region is not in the env.
        os.environ.setdefault("AWS_DEFAULT_REGION", region)
    return region


def _s3(region: str | None) -> Any:
    import boto3

    return boto3.client("s3", region_name=region)


def _check_outputs(checked: StorageCheckReport) -> dict[str, Any]:
    """The storage check as outputs: what was compared, and that it matched."""
    return {
        "storage_rows": checked.source.objects,
        "storage_rows_bytes": checked.source.bytes,
        "storage_rows_checksum": checked.source.checksum,
        "objects_in_bucket": checked.in_bucket,
        "bytes_in_bucket": checked.bytes_in_bucket,
        "target_rows_compared": checked.target is not None,
        "storage_checked": checked.ok,
    }


_RETRIEVAL_OUTPUTS = (
    "recall_at_3",
    "recall_at_5",
    "recall_at_10",
    "self_hit_rate",
    "short_results",
    "latency_p50_ms",
    "latency_p95_ms",
)


def _retrieval_outputs(check: RetrievalCheck | None) -> dict[str, Any]:
    """The app's query figures as outputs (None where the target has no vector table)."""
    return {name: getattr(check, name) if check else None for name in _RETRIEVAL_OUTPUTS}


class _ScrubbingStore:
    """A password store whose values are scrubbed from any message the step raises."""

    def __init__(self, inner: Any, secrets: _Secrets) -> None:
        self.inner, self.secrets = inner, secrets

    def read(self, role: str) -> str | None:
        value: str | None = self.inner.read(role)
        if value:
            self.secrets.remember(value)
        return value

    def write(self, role: str, password: str) -> None:
        self.secrets.remember(password)
        self.inner.write(role, password)


class AuthStepProvider(_StepProvider):
    """The auth step (opt-in): Supabase's roles, schema `auth` and what the app built on it."""

    STEP = "auth"
    STEP_ID = "auth"
    TRIGGERS = ("provider_version", *options.triggers(STEP_ID), "after")
    DEFAULTS = {**options.input_defaults(STEP_ID), "after": ""}

    def _check(self, olds: dict[str, Any], news: dict[str, Any], failures: Failures) -> None:
        from migration.db.roles import LOGIN_ROLES

        _check_arn(news, "source_secret_arn", failures, required=True)
        schemas = news.get("schemas")
        if _known(schemas) and isinstance(schemas, list) and "auth" in schemas:
            failures.append(
                CheckFailure("schemas", "schemas names auth, which the auth step carries itself")
            )
        arns = news.get("password_secret_arns")
        if not _known(arns):
            return
        if not isinstance(arns, Mapping):
            failures.append(
                CheckFailure(
                    "password_secret_arns",
                    f"password_secret_arns must map each of {', '.join(LOGIN_ROLES)} to a "
                    "Secrets Manager secret ARN",
                )
            )
            return
        for role in LOGIN_ROLES:
            _check_arn(
                {f"password_secret_arns.{role}": arns.get(role, "")},
                f"password_secret_arns.{role}",
                failures,
                required=True,
            )

    def _id(self, props: Mapping[str, Any]) -> str:
        return f"auth:{props.get('database', '')}"

    def _run(
        self, props: Mapping[str, Any], secrets: _Secrets, reporter: LogReporter
    ) -> tuple[dict[str, Any], bool]:
        from migration.db.roles import SecretsManagerStore
        from migration.steps.auth import AuthOptions, carry_auth

        source = _required_source(props, secrets)
        store = _ScrubbingStore(
            SecretsManagerStore(
                {str(k): str(v) for k, v in dict(props.get("password_secret_arns") or {}).items()}
            ),
            secrets,
        )
        opts = library_options(AuthOptions, props, self.STEP_ID)
        report = carry_auth(source, _target(props, secrets), store, opts, reporter)
        return {
            "roles_created": list(report.roles.created),
            "tables": len(report.tables),
            "rows": sum(report.tables.values()),
            "table_rows": dict(report.tables),
            "reapplied": list(report.reapplied),
            "left_out": [f"{lo.kind} {lo.name}: {lo.reason}" for lo in report.left_out],
            "notes": list(report.roles.notes),
        }, not report.already_complete or report.roles.changed


# ---------------------------------------------------------------------------------------------
# The resources the program declares


def _outputs(*names: str) -> dict[str, None]:
    return dict.fromkeys(names)


_COMMON_OUTPUTS = ("run_id", "seconds")


class _StepResource(pulumi.dynamic.Resource):
    """A data step; inputs are plain values or outputs, never plaintext secrets."""

    run_id: pulumi.Output[str]
    seconds: pulumi.Output[float]

    def __init__(
        self,
        provider: _StepProvider,
        name: str,
        inputs: Mapping[str, Any],
        outputs: tuple[str, ...],
        opts: pulumi.ResourceOptions | None,
    ) -> None:
        props: dict[str, Any] = {"provider_version": PROVIDER_VERSION, **inputs}
        props.update(_outputs(*_COMMON_OUTPUTS, *outputs))
        super().__init__(provider, name, props, opts)


@dataclass
class Connection:
    """How a provider reaches the target: endpoint plus the RDS-managed master secret's ARN."""

    host: pulumi.Input[str]
    port: pulumi.Input[int]
    database: pulumi.Input[str]
    master_secret_arn: pulumi.Input[str]
    ssl_mode: str = "require"
    connect_timeout: int = DEFAULT_CONNECT_TIMEOUT

    def inputs(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "database": self.database,
            "master_secret_arn": self.master_secret_arn,
            "ssl_mode": self.ssl_mode,
            "connect_timeout": self.connect_timeout,
        }


class PgvectorExtension(_StepResource, module="qckstrt", name="PgvectorExtension"):
    """Step 1 as a resource."""

    vector_version: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        connection: Connection,
        source_secret_arn: pulumi.Input[str] | None = None,
        vector_schema: str = "",
        revision: int = 0,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        inputs = {
            **connection.inputs(),
            "source_secret_arn": source_secret_arn or "",
            "vector_schema": vector_schema,
            "revision": revision,
        }
        outputs = ("vector_version", "installed_schema", "extensions_schema", "search_path")
        super().__init__(PgvectorExtensionProvider(), name, inputs, (*outputs, "notes"), opts)


class DataImport(_StepResource, module="qckstrt", name="DataImport"):
    """Step 2 as a resource."""

    backup_uri: pulumi.Output[str]
    rows: pulumi.Output[int]

    def __init__(
        self,
        name: str,
        connection: Connection,
        source_secret_arn: pulumi.Input[str],
        backup: pulumi.Input[str],
        region: str,
        schemas: list[str] | None = None,
        on_existing: str = "fail",
        revision: int = 0,
        jobs: int = 2,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        inputs = {
            **connection.inputs(),
            "source_secret_arn": source_secret_arn,
            "backup": backup,
            "region": region,
            "schemas": schemas or ["public"],
            "on_existing": on_existing,
            "revision": revision,
            "jobs": jobs,
        }
        outputs = (
            "source",
            "backup_uri",
            "target_backup_uri",
            "tables",
            "rows",
            "table_rows",
            "left_out",
            "replaced",
            "resumed",
            "pg_dump",
        )
        super().__init__(DataImportProvider(), name, inputs, outputs, opts)


def _default(name: str) -> Any:
    return options.get(name).default


@dataclass
class ReindexOptions:
    """The re-index's settings as the stack configures them; field = input name, defaults and
    validation from ``migration.options`` (``tests/migration/test_options.py`` holds them
    together)."""

    model: str = _default("model")
    dimensions: int = _default("dimensions")
    schema: str = _default("table_schema")
    table: str = _default("vector_table")
    text_column: str = _default("text_column")
    vector_column: str = _default("vector_column")
    batch_size: int = _default("batch_size")
    device: str = _default("device")
    hnsw_m: int = _default("hnsw_m")
    hnsw_ef_construction: int = _default("hnsw_ef_construction")
    allow_dimension_change: bool = _default("allow_dimension_change")
    revision: int = _default("reindex_revision")
    ef_search: int = _default("ef_search")
    iterative_scan: str = _default("iterative_scan")
    max_scan_tuples: int = _default("max_scan_tuples")

    def inputs(self) -> dict[str, Any]:
        return asdict(self)


class Reindex(_StepResource, module="qckstrt", name="Reindex"):
    """Step 3 as a resource; `after` carries the import's ``run_id``."""

    rows_embedded: pulumi.Output[int]
    index_name: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        connection: Connection,
        options: ReindexOptions,
        after: Mapping[str, pulumi.Input[str]] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        inputs = {**connection.inputs(), **options.inputs(), "after": dict(after or {})}
        outputs = (
            "rows_total",
            "rows_embedded",
            "rows_skipped",
            "chunks_per_second",
            "model_dimensions",
            "index_name",
            "index_action",
            "index_seconds",
            "search_settings",
        )
        super().__init__(ReindexProvider(), name, inputs, outputs, opts)


class MigrationCheck(_StepResource, module="qckstrt", name="MigrationCheck"):
    """Step 4 as a resource; `after` carries every earlier step's ``run_id``."""

    ok: pulumi.Output[bool]

    def __init__(
        self,
        name: str,
        connection: Connection,
        source_secret_arn: pulumi.Input[str],
        after: Mapping[str, pulumi.Input[str]],
        schemas: list[str] | None = None,
        revision: int = 0,
        table: str = options.DEFAULT_TABLE,
        storage: tuple[pulumi.Input[str], StorageOptions] | None = None,
        opts: pulumi.ResourceOptions | None = None,
        retrieval: RetrievalThresholds | None = None,
    ) -> None:
        """:param storage: the stack's bucket and the storage step's options, when the stack
        has that step: the check then looks at the files again after the re-index."""
        limits = retrieval or RetrievalThresholds()
        inputs = {
            **connection.inputs(),
            "source_secret_arn": source_secret_arn,
            "schemas": schemas or ["public"],
            "revision": revision,
            "table": table,
            "retrieval_sample": limits.sample_size,
            "min_recall_at_5": limits.min_recall_at_5,
            "max_short_results": limits.max_short_results,
            "after": dict(after),
        }
        if storage is not None:
            inputs.update(storage[1].check_inputs(), bucket=storage[0])
        outputs = (
            "ok",
            "tables",
            "rows",
            "import_state",
            *_STORAGE_CHECK_OUTPUTS,
            "auth_users",
            "auth_identities",
            "auth_checked",
            *_RETRIEVAL_OUTPUTS,
        )
        super().__init__(MigrationCheckProvider(), name, inputs, outputs, opts)


class AuthStep(_StepResource, module="qckstrt", name="AuthStep"):
    """The auth step as a resource (after the import, before the re-index).

    :param password_secret_arns: login role -> ARN of the stack's secret for its password
        (``supabase_auth_admin``, ``supabase_storage_admin``, ``authenticator``); the step
        writes the generated passwords there, never into state or outputs.
    :param after: the import's ``run_id``: the step runs again when the import did.
    """

    rows: pulumi.Output[int]

    def __init__(
        self,
        name: str,
        connection: Connection,
        source_secret_arn: pulumi.Input[str],
        password_secret_arns: Mapping[str, pulumi.Input[str]],
        after: pulumi.Input[str],
        schemas: list[str] | None = None,
        revision: int = 0,
        jobs: int = 2,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        inputs = {
            **connection.inputs(),
            "source_secret_arn": source_secret_arn,
            "password_secret_arns": dict(password_secret_arns),
            "after": after,
            "schemas": schemas or ["public"],
            "revision": revision,
            "jobs": jobs,
        }
        outputs = (
            "roles_created",
            "tables",
            "rows",
            "table_rows",
            "reapplied",
            "left_out",
            "notes",
        )
        super().__init__(AuthStepProvider(), name, inputs, outputs, opts)


@dataclass
class StorageOptions:
    """The storage step's settings as the stack configures them; field = input name, defaults
    and validation from ``migration.options``. The bucket is the stack's (an output), passed
    apart; the source store's keys go by secret ARN."""

    source_path: str = _default("storage_source_path")
    source_bucket: str = _default("storage_source_bucket")
    source_endpoint: str = _default("storage_source_endpoint")
    source_region: str = _default("storage_source_region")
    source_global_bucket: str = _default("storage_source_global_bucket")
    source_tenant: str = _default("storage_source_tenant")
    tenant: str = _default("storage_tenant")
    workers: int = _default("storage_workers")
    allow_missing: bool = _default("allow_missing_objects")
    file_version_separator: bool = _default("file_version_separator")
    storage_schema: str = _default("storage_schema")
    revision: int = _default("storage_revision")

    def inputs(self) -> dict[str, Any]:
        return asdict(self)

    def check_inputs(self) -> dict[str, Any]:
        """What the check (step 4) needs to look at the files again."""
        return {
            s.input: getattr(self, s.input)
            for s in options.for_step("verify")
            if "storage" in s.steps and hasattr(self, s.input)
        }


_STORAGE_CHECK_OUTPUTS = (
    "storage_rows",
    "storage_rows_bytes",
    "storage_rows_checksum",
    "objects_in_bucket",
    "bytes_in_bucket",
    "target_rows_compared",
    "storage_checked",
)


class StorageCopy(_StepResource, module="qckstrt", name="StorageCopy"):
    """The storage step as a resource; `after` carries the import's ``run_id``.

    It dials the target to carry schema ``storage`` before the copy (``options.storage_schema``
    carry) and to compare its ``storage.objects`` with the source's rows after it.

    :param password_secret_arn: the stack's secret for ``supabase_storage_admin``'s password
        (``qckstrt/<stack>/db-role-supabase-storage-admin``): without the auth step the step
        makes the roles storage-api needs and writes the password there, never into state.
    :param schemas: the import's application schemas, whose objects that use ``storage`` are
        put back once it is carried.
    """

    objects: pulumi.Output[int]
    copied: pulumi.Output[int]

    def __init__(
        self,
        name: str,
        connection: Connection,
        source_secret_arn: pulumi.Input[str],
        bucket: pulumi.Input[str],
        region: str,
        options: StorageOptions,
        credentials_secret_arn: pulumi.Input[str] = "",
        after: Mapping[str, pulumi.Input[str]] | None = None,
        opts: pulumi.ResourceOptions | None = None,
        password_secret_arn: pulumi.Input[str] = "",
        schemas: list[str] | None = None,
    ) -> None:
        inputs = {
            **connection.inputs(),
            "source_secret_arn": source_secret_arn,
            "source_credentials_secret_arn": credentials_secret_arn,
            "password_secret_arn": password_secret_arn,
            "bucket": bucket,
            "region": region,
            "schemas": schemas or ["public"],
            **options.inputs(),
            "after": dict(after or {}),
        }
        outputs = (
            "source",
            "source_backend",
            "objects",
            "copied",
            "already_there",
            "bytes_copied",
            "bytes_total",
            "missing",
            "schema_carried",
            *_STORAGE_CHECK_OUTPUTS,
        )
        super().__init__(StorageCopyProvider(), name, inputs, outputs, opts)


PROVIDERS: dict[str, Callable[[], _StepProvider]] = {
    "PgvectorExtension": PgvectorExtensionProvider,
    "DataImport": DataImportProvider,
    "Reindex": ReindexProvider,
    "MigrationCheck": MigrationCheckProvider,
    "AuthStep": AuthStepProvider,
    "StorageCopy": StorageCopyProvider,
}
