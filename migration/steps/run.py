"""The four data steps in order, as one command: what an operator runs from a bastion.

Why a pipeline of existing steps and nothing more: each step is already idempotent and resumable,
so "run" only has to order them, name them ("step 2/4: import"), stop at the first failure with
the step's name, and hold the target's lock across all four so that no other run slips in
between them. A second `run` on a migrated target does nothing and still passes verification.
Order: pgvector, import, re-index, verify (verification leaves the embedding column out, since
the re-index rewrites it; it runs last so that it checks the final state). Two steps are opt-in
and run after the import and before the re-index, auth first: the auth step (GoTrue's schema and
Supabase's roles) with `RunOptions.auth_store` set, and the storage step (schema storage and
storage-api's files into the bucket) with `RunOptions.storage` set; it checks what it copied, and
after `verify` a last step checks the files again against the source's rows
(`migration.steps.storage_verify`, beside `verify`, not in it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from migration.db.connection import Endpoint
from migration.db.lock import target_lock
from migration.db.roles import PasswordStore
from migration.errors import MigrationError, VerificationFailed
from migration.options import option, validate
from migration.progress import NullReporter, Reporter
from migration.steps.reindex import ReindexSettings
from migration.steps.retrieval import RetrievalThresholds

if TYPE_CHECKING:
    from migration.backends.storage_sources import Source
    from migration.steps.storage_copy import StorageCopySettings

STEPS = ("pgvector", "import", "re-index", "verify")


class RunFailed(MigrationError):
    """A step failed; `result` holds the steps so far (`report`: the same, JSON-able)."""

    def __init__(self, message: str, result: RunReport, setting: str | None = None) -> None:
        super().__init__(message, setting=setting)
        self.result = result
        self.report = result.as_dict()


@dataclass
class StorageStep:
    """The opt-in storage step: where the files are and where they go.

    :param client: a boto3 S3 client for the stack's bucket (default: ``boto3.client("s3")``).
    """

    source: Source
    settings: StorageCopySettings
    client: Any = None

    def s3(self) -> Any:
        import boto3

        return self.client or boto3.client("s3")


@dataclass
class RunOptions:
    """Settings of the four steps; defaults and validation from ``migration.options``.

    `vector_schema` is the schema of the `vector` extension (step 1); the vector table's schema
    and name are the re-index's (`reindex.schema`, `reindex.table`), which the check uses too.
    """

    schemas: list[str] = option("schemas")
    jobs: int = option("jobs")
    backup: str | None = option("backup")
    on_existing: str = option("on_existing")
    retries: int = option("retries")
    pg_dump: str | None = option("pg_dump")
    vector_schema: str | None = option("vector_schema")
    reindex: ReindexSettings = field(default_factory=ReindexSettings)
    lock_wait_seconds: float = option("lock_wait_seconds")
    #: Where the auth step keeps the service roles' passwords; None: no auth step.
    auth_store: PasswordStore | None = None
    retrieval: RetrievalThresholds = field(default_factory=RetrievalThresholds)
    storage: StorageStep | None = None
    #: The storage step: carry schema storage (with its roles) or skip it (the files only).
    storage_schema: str = option("storage_schema")
    #: Where the storage step keeps supabase_storage_admin's password when it makes the roles
    #: itself (no auth step); None: the auth step's roles are used.
    storage_store: PasswordStore | None = None

    def __post_init__(self) -> None:
        validate(self)

    def steps(self) -> tuple[str, ...]:
        """The steps this run takes, in order (auth and storage only when asked for)."""
        optional = (("auth", self.auth_store), ("storage", self.storage))
        middle = tuple(name for name, wanted in optional if wanted is not None)
        checks = (
            *(("auth check",) if self.auth_store is not None else ()),
            *(("file check",) if self.storage is not None else ()),
        )
        return ("pgvector", "import", *middle, "re-index", "verify", *checks)


#: A step's own report: ExtensionReport, ImportReport, AuthReport, StorageCopyReport,
#: ReindexReport, VerifyReport, AuthCheckReport or StorageCheckReport.
StepReport = Any


@dataclass
class StepResult:
    """One step's outcome: a one-line summary for the table, and the step's own typed report."""

    number: int
    name: str
    status: str  # done | failed | not run
    seconds: float = 0.0
    summary: str = ""
    report: StepReport | None = None


@dataclass
class RunReport:
    """The four steps; `as_dict` is JSON-able."""

    source: str
    target: str
    steps: list[StepResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(s.status == "done" for s in self.steps)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _extension(source: Endpoint, target: Endpoint, o: RunOptions, rep: Reporter) -> Any:
    from migration.steps.extension import setup_extension

    return setup_extension(target, source, vector_schema=o.vector_schema, reporter=rep)


def _import(source: Endpoint, target: Endpoint, o: RunOptions, rep: Reporter) -> Any:
    from migration.steps.transfer import ImportOptions, import_database

    options = ImportOptions(
        schemas=o.schemas,
        jobs=o.jobs,
        backup=o.backup,
        on_existing=o.on_existing,  # type: ignore[arg-type]
        retries=o.retries,
        pg_dump=o.pg_dump,
    )
    return import_database(source, target, options, rep)


def _auth(source: Endpoint, target: Endpoint, o: RunOptions, rep: Reporter) -> Any:
    from migration.steps.auth import AuthOptions, carry_auth

    assert o.auth_store is not None
    options = AuthOptions(app_schemas=o.schemas, jobs=o.jobs, pg_dump=o.pg_dump, retries=o.retries)
    return carry_auth(source, target, o.auth_store, options, rep)


def _storage(source: Endpoint, target: Endpoint, o: RunOptions, rep: Reporter) -> Any:
    from migration.steps.storage_schema import carry_for_storage_step
    from migration.steps.storage_verify import copy_and_check

    assert o.storage is not None
    storage = o.storage
    # Schema storage first (owned by supabase_storage_admin), then the bytes.
    carry_for_storage_step(
        source, target, o.auth_store, o.schemas, rep, o.pg_dump, o.storage_store, o.storage_schema
    )
    return copy_and_check(source, storage.source, storage.settings, storage.s3(), target, rep)


def _check_auth(source: Endpoint, target: Endpoint, o: RunOptions, rep: Reporter) -> Any:
    """After `verify`: GoTrue's users and identities, source against target."""
    from migration.steps.auth_verify import check_auth

    return check_auth(source, target, rep)


def _check_files(source: Endpoint, target: Endpoint, o: RunOptions, rep: Reporter) -> Any:
    """After `verify`: every row's bytes still at its key, the rows against the target's."""
    from migration.steps.storage_verify import check_objects

    assert o.storage is not None
    return check_objects(source, o.storage.settings, o.storage.s3(), target, rep)


def _reindex(source: Endpoint, target: Endpoint, o: RunOptions, rep: Reporter) -> Any:
    from migration.steps.reindex import reindex

    return reindex(target, o.reindex, reporter=rep)


def _verify(source: Endpoint, target: Endpoint, o: RunOptions, rep: Reporter) -> Any:
    from migration.steps.verify import verify

    return verify(
        source,
        target,
        o.schemas,
        vector_table=o.reindex.table,
        reporter=rep,
        retrieval=o.retrieval,
    )


def _summary(report: StepReport) -> str:
    """What a step did, in one line for the table (from the step's typed report)."""
    from migration.steps.auth import AuthReport
    from migration.steps.auth_verify import AuthCheckReport
    from migration.steps.extension import ExtensionReport
    from migration.steps.reindex import ReindexReport
    from migration.steps.storage_copy import StorageCopyReport
    from migration.steps.storage_verify import StorageCheckReport
    from migration.steps.transfer import ImportReport

    if isinstance(report, ExtensionReport):
        verb = "created" if report.vector_created else "updated" if report.vector_updated else ""
        return (
            f"vector {report.vector_version} {verb or 'present'} in schema {report.vector_schema}"
        )
    if isinstance(report, ImportReport):
        rows = sum(t.rows for t in report.tables)
        tables = len(report.tables)
        if report.already_complete:
            return f"already imported: {tables} tables, {rows:,} rows; nothing to do"
        resumed = " (resumed)" if report.resumed else ""
        backup = f"; backup {report.backup}" if report.backup else ""
        return f"{tables} tables, {rows:,} rows{resumed}{backup}"
    if isinstance(report, AuthReport):
        users = report.tables.get("auth.users", 0)
        done = "already carried; nothing to do" if report.already_complete else "carried"
        return f"schema auth {done}: {len(report.tables)} tables, {users:,} users"
    if isinstance(report, StorageCopyReport):
        missing = f", {len(report.missing)} missing (accepted)" if report.missing else ""
        return (
            f"{report.objects:,} files in s3://{report.bucket}/{report.tenant}/: "
            f"{report.copied:,} copied, {report.already_there:,} already there{missing}"
            + ("; checked" if report.check is not None else "")
        )
    if isinstance(report, AuthCheckReport):
        return ", ".join(f"{t.table} {t.target_rows:,} rows" for t in report.tables) + "; match"
    if isinstance(report, StorageCheckReport):
        return (
            f"{report.in_bucket:,} of {report.source.objects:,} files at their keys, "
            f"{report.bytes_in_bucket / 1e6:,.1f} MB; sizes and fingerprints match"
        )
    if isinstance(report, ReindexReport):
        index = report.index
        rate = f"{report.chunks_per_second:.1f}/s" if report.rows_embedded else "all current"
        searched = report.search_settings.settings if report.search_settings else {}
        shown = ", ".join(f"{k}={v}" for k, v in searched.items()) or "pgvector defaults"
        return (
            f"{report.rows_embedded:,} of {report.rows_total:,} chunks embedded ({rate}); "
            f"index {index.name if index else '-'} {index.action if index else '-'}; {shown}"
        )
    rows = sum(t.source_rows for t in report.tables)
    line = f"{len(report.tables)} tables, {rows:,} rows: counts and checksums match"
    if (q := report.retrieval) is not None:
        line += (
            f"; app's query: recall@5 {q.recall_at_5:.4f}, {q.short_results} short, "
            f"p95 {q.latency_p95_ms:.1f} ms"
        )
    return line


Step = Callable[[Endpoint, Endpoint, RunOptions, Reporter], Any]
_FUNCTIONS: dict[str, Step] = {
    "pgvector": _extension,
    "import": _import,
    "auth": _auth,
    "storage": _storage,
    "re-index": _reindex,
    "verify": _verify,
    "auth check": _check_auth,
    "file check": _check_files,
}


def _preflight(target: Endpoint, o: RunOptions) -> None:
    """What a later step would refuse, refused before the first step writes anything."""
    from migration.steps.storage_schema import storage_schema_plan

    if o.storage is not None:
        storage_schema_plan(target, o.auth_store, o.storage_store, o.schemas, o.storage_schema)


def run_all(
    source: Endpoint,
    target: Endpoint,
    options: RunOptions | None = None,
    reporter: Reporter | None = None,
) -> RunReport:
    """Run pgvector setup, import, (the storage step,) re-index and verification, in order.

    :raises TargetBusy: another run holds the target (after `lock_wait_seconds`).
    :raises VerificationFailed: step 4 found a difference; carries the run's report.
    :raises RunFailed: another step failed; carries the run's report, names the step.
    :raises ConfigError: before any step: the storage step would carry schema storage with no
        way to make its roles (`storage_password_secret`, the auth step, or `storage_schema` skip).
    """
    opts = options or RunOptions()
    rep = reporter or NullReporter()
    report = RunReport(source.masked, target.masked)
    names = opts.steps()
    report.steps = [StepResult(i, name, "not run") for i, name in enumerate(names, 1)]
    began = time.monotonic()
    with target_lock(target, opts.lock_wait_seconds):
        _preflight(target, opts)
        for step in report.steps:
            rep.info(f"step {step.number}/{len(names)}: {step.name}")
            t0 = time.monotonic()
            try:
                result = _FUNCTIONS[step.name](source, target, opts, rep)
            except VerificationFailed as exc:
                step.status, step.seconds = "failed", round(time.monotonic() - t0, 3)
                step.report = exc.result
                step.summary = str(exc)
                report.seconds = round(time.monotonic() - began, 3)
                raise VerificationFailed(
                    f"step {step.number}/{len(names)} ({step.name}) failed: {exc}", report
                ) from exc
            except MigrationError as exc:
                step.status, step.seconds = "failed", round(time.monotonic() - t0, 3)
                step.summary = str(exc)
                report.seconds = round(time.monotonic() - began, 3)
                raise RunFailed(
                    f"step {step.number}/{len(names)} ({step.name}) failed: {exc}",
                    report,
                    setting=exc.setting,
                ) from exc
            step.status, step.seconds = "done", round(time.monotonic() - t0, 3)
            step.report = result
            step.summary = _summary(result)
            rep.info(f"step {step.number}/{len(names)}: {step.name}: {step.summary}")
    report.seconds = round(time.monotonic() - began, 3)
    return report
