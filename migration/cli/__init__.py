"""`qckstrt-migrate`: a thin skin over the library.

It parses arguments, calls one library function per subcommand, prints the report (a table on
stderr, or JSON on stdout with ``--json``) and turns errors into a one-line cause and an exit
status a script can rely on (`EXIT_CODES`). The step settings' flags, environment variables,
defaults, help and validation come from their declarations in ``migration.options``: a setting
resolves flag, then environment variable, then default, and the environment is read only for the
subcommand that runs (so ``--help`` works whatever the environment holds). URLs are better given
by environment (``SOURCE_DATABASE_URL``/``TARGET_DATABASE_URL``): flags show in process lists.
Passwords are never printed.

Adding a subcommand: write ``_cmd_<name>(args, reporter)`` returning the library's report and
register it in
`SUBCOMMANDS`; declare its settings in ``migration.options`` with the subcommand's name.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, NoReturn

from migration import options
from migration.db.connection import Endpoint
from migration.errors import ConfigError, MigrationError, VerificationFailed
from migration.progress import RichReporter

if TYPE_CHECKING:
    from migration.dev.demo import DemoReport
    from migration.steps.reindex import ReindexSettings
    from migration.steps.restore import RestoreReport
    from migration.steps.retrieval import RetrievalCheck, RetrievalThresholds
    from migration.steps.run import RunReport
    from migration.steps.transfer import ImportReport
    from migration.steps.verify import VerifyReport

#: A subcommand returns the library's typed report (a dataclass with ``as_dict``); the table
#: renderers read its attributes, so a renamed field is caught by mypy, and --json its as_dict.
Handler = Callable[[argparse.Namespace, RichReporter], Any]

#: Exit statuses: what a script may rely on.
EXIT_OK = 0
EXIT_DIFFERENCES = 1  # verification ran and found differences (or an incomplete import)
EXIT_USAGE = 2  # a flag, environment variable or setting is wrong; nothing was done
EXIT_FAILED = 3  # a step failed at run time (connection, preflight, import, re-index, ...)
EXIT_INTERNAL = 4  # an unexpected exception: a bug; the traceback is written to a file
EXIT_INTERRUPTED = 130
EXIT_CODES = {
    EXIT_OK: "done",
    EXIT_DIFFERENCES: "verification found differences",
    EXIT_USAGE: "usage or configuration error",
    EXIT_FAILED: "a step failed",
    EXIT_INTERNAL: "internal error",
    EXIT_INTERRUPTED: "interrupted",
}
#: Flags that are not step settings: where the databases are, and how to print.
PLUMBING_FLAGS = ("--source", "--target", "--json")


def words(message: str) -> str:
    """A library message in the command line's words (```on_existing``` -> ``--on-existing``)."""
    return options.render(message, options.cli_name)


class UsageError(Exception):
    """argparse refused the command line (its message is already in the CLI's words).

    `setting` is the declared setting whose flag argparse named, if any (for ``--json``).
    """

    def __init__(self, message: str) -> None:
        # argparse echoes what it refused, which may be a URL with its password in it.
        message = re.sub(r"(://[^:/@\s']*):[^@\s']*@", r"\1:***@", message)
        message = re.sub(r"password\s*=\s*[^\s&']+", "password=***", message)
        super().__init__(message)
        named = re.match(r"argument (--[a-z-]+)", message)
        flags = {f: s.name for s in options.SETTINGS for f in (s.flag, *s.aliases) if f}
        self.setting = flags.get(named.group(1)) if named else None


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors `main` turns into the usual one-line cause (and JSON)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise UsageError(message)


# ---------------------------------------------------------------------------------------------
# Arguments, derived from the declarations


def _help(s: options.Setting) -> str:
    where = [s.env] if s.env else []
    if s.default not in (None, "", False, []):
        shown = ",".join(s.default) if isinstance(s.default, list) else s.default
        where.append(f"default {shown}")
    text = words(s.help) + (f" [{'; '.join(where)}]" if where else "")
    return text.replace("%", "%%")


def _converter(s: options.Setting) -> Callable[[str], Any]:
    """argparse ``type=``: parse, then judge the value as every skin does."""

    def convert(raw: str) -> Any:
        try:
            value = options.parse(s.name, raw)
        except options.ParseError as exc:
            raise argparse.ArgumentTypeError(words(str(exc))) from None
        if not s.choices and (found := options.check(s.name, value)) is not None:
            raise argparse.ArgumentTypeError(words(str(found)))
        return value

    convert.__name__ = s.type  # argparse names it in "invalid <type> value"
    return convert


def _add_settings(p: argparse.ArgumentParser, command: str) -> None:
    for s in options.for_command(command):
        assert s.flag is not None, f"{s.name} is declared for `{command}` without a flag"
        kwargs: dict[str, Any] = {"dest": s.name, "default": None, "help": _help(s)}
        if s.type == "boolean":
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = _converter(s)
            if s.choices:
                kwargs["choices"] = s.choices
            else:
                kwargs["metavar"] = s.metavar or s.name.upper()
        p.add_argument(s.flag, *s.aliases, **kwargs)


def _add_plumbing(p: argparse.ArgumentParser, command: str) -> None:
    if command not in ("reindex", "restore"):
        p.add_argument("--source", help="source URL (prefer SOURCE_DATABASE_URL)")
    p.add_argument("--target", help="target URL (prefer TARGET_DATABASE_URL)")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")


def _resolve(args: argparse.Namespace, command: str) -> None:
    """Fill each setting the flags left out from its environment variable, else its default.

    :raises ConfigError: an environment variable's value is not valid for its setting.
    """
    for s in options.for_command(command):
        if getattr(args, s.name, None) is not None:
            continue
        raw = os.environ.get(s.env) if s.env else None
        if not raw:
            value = list(s.default) if isinstance(s.default, list) else s.default
        else:
            try:
                value = options.parse(s.name, raw)
            except options.ParseError as exc:
                raise ConfigError(f"{s.env}: {exc}", setting=s.name) from None
            if (found := options.check(s.name, value)) is not None:
                raise ConfigError(f"{s.env}: {found}", setting=s.name)
        setattr(args, s.name, value)


def _library_options(cls: Any, args: argparse.Namespace, **extra: Any) -> Any:
    """An instance of a library option dataclass from the resolved settings it declares."""
    values = {
        field: getattr(args, name)
        for field, name in options.declared_fields(cls).items()
        if hasattr(args, name)
    }
    return cls(**values, **extra)


# ---------------------------------------------------------------------------------------------
# The subcommands


def _endpoint(args: argparse.Namespace, which: str) -> Endpoint:
    url = getattr(args, which, None) or os.environ.get(f"{which.upper()}_DATABASE_URL")
    if not url:
        raise ConfigError(
            f"no {which} database: set {which.upper()}_DATABASE_URL (preferred) or --{which}"
        )
    return Endpoint(url, which, connect_timeout=args.connect_timeout, attempts=args.attempts)


def _optional_source(args: argparse.Namespace) -> Endpoint | None:
    if args.source or os.environ.get("SOURCE_DATABASE_URL"):
        return _endpoint(args, "source")
    return None


def _cmd_extension(args: argparse.Namespace, rep: RichReporter) -> Any:
    from migration.steps.extension import setup_extension

    return setup_extension(
        _endpoint(args, "target"),
        _optional_source(args),
        vector_schema=args.vector_schema,
        reporter=rep,
    )


def _cmd_import(args: argparse.Namespace, rep: RichReporter) -> Any:
    from migration.steps.transfer import ImportOptions, import_database

    opts = _library_options(ImportOptions, args)
    return import_database(_endpoint(args, "source"), _endpoint(args, "target"), opts, rep)


def _cmd_verify(args: argparse.Namespace, rep: RichReporter) -> Any:
    from migration.steps.verify import verify

    return verify(
        _endpoint(args, "source"),
        _endpoint(args, "target"),
        args.schemas,
        vector_table=args.vector_table,
        reporter=rep,
        retrieval=_retrieval(args),
    )


def _retrieval(args: argparse.Namespace) -> RetrievalThresholds:
    from migration.steps.retrieval import RetrievalThresholds

    thresholds: RetrievalThresholds = _library_options(RetrievalThresholds, args)
    return thresholds


def _reindex_settings(args: argparse.Namespace) -> ReindexSettings:
    from migration.steps.reindex import ReindexSettings

    settings: ReindexSettings = _library_options(ReindexSettings, args)
    return settings


def _cmd_reindex(args: argparse.Namespace, rep: RichReporter) -> Any:
    from migration.steps.reindex import reindex

    return reindex(_endpoint(args, "target"), _reindex_settings(args), reporter=rep)


def _password_store(args: argparse.Namespace) -> Any:
    """The Secrets Manager store named by `auth_password_secrets` (ARNs only, never values)."""
    from migration.db.roles import SecretsManagerStore

    raw = args.auth_password_secrets or ""
    pairs = [item.split("=", 1) for item in raw.split(",") if item.strip()]
    if not pairs or any(len(pair) != 2 for pair in pairs):
        raise ConfigError(
            "`auth_password_secrets` takes role=ARN pairs, comma-separated, one per login role",
            setting="auth_password_secrets",
        )
    return SecretsManagerStore({role.strip(): arn.strip() for role, arn in pairs})


def _cmd_auth(args: argparse.Namespace, rep: RichReporter) -> Any:
    from migration.steps.auth import AuthOptions, carry_auth

    opts = _library_options(AuthOptions, args)
    store = _password_store(args)
    report = carry_auth(_endpoint(args, "source"), _endpoint(args, "target"), store, opts, rep)
    return report


def _cmd_run(args: argparse.Namespace, rep: RichReporter) -> Any:
    from migration.cli import storage as storage_cli
    from migration.steps.run import RunOptions, StorageStep, run_all

    store = _password_store(args) if args.auth_password_secrets else None
    storage = None
    if storage_cli.wanted(args):
        settings = storage_cli.copy_settings(args)
        storage = StorageStep(storage_cli.open_source(args, settings), settings)
    opts = _library_options(
        RunOptions,
        args,
        reindex=_reindex_settings(args),
        auth_store=store,
        storage=storage,
        storage_store=storage_cli.schema_store(args) if storage is not None else None,
        retrieval=_retrieval(args),
    )
    source, target = _endpoint(args, "source"), _endpoint(args, "target")
    return run_all(source, target, opts, rep)


def _cmd_storage(args: argparse.Namespace, rep: RichReporter) -> Any:
    from migration.cli import storage as storage_cli
    from migration.cli.storage import cmd_storage
    from migration.steps.storage_schema import carry_for_storage_step

    target = None
    if args.target or os.environ.get("TARGET_DATABASE_URL"):
        target = _endpoint(args, "target")
    source = _endpoint(args, "source")
    if not args.storage_check:
        storage_cli.open_source(args, storage_cli.copy_settings(args))  # bad input stops here
        # Schema storage first (its roles: the auth step's, or made here), then the bytes.
        schemas = list(args.schemas or ["public"])
        carry_for_storage_step(
            source,
            target,
            None,
            schemas,
            rep,
            storage_store=storage_cli.schema_store(args),
            mode=args.storage_schema,
        )
    return cmd_storage(args, source, target, rep)


def _cmd_restore(args: argparse.Namespace, rep: RichReporter) -> Any:
    from migration.steps.restore import restore

    if not args.restore_from:
        raise ConfigError(
            "no backup to restore: name the import's backup with `restore_from`",
            setting="restore_from",
        )
    return restore(
        args.restore_from,
        _endpoint(args, "target"),
        on_existing=args.on_existing,
        backup=args.backup,
        lock_wait_seconds=args.lock_wait_seconds,
        reporter=rep,
    )


def _add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dir",
        default=os.environ.get("QCKSTRT_DEMO_DIR") or ".demo",
        help="where the two embedded servers keep their data (reused; default .demo)",
    )
    p.add_argument("--fresh", action="store_true", help="delete --dir first and start over")
    p.add_argument(
        "--chunks", type=int, default=1000, help="chunk rows to generate in the source (1000)"
    )
    p.add_argument(
        "--serve",
        action="store_true",
        help="keep both servers running after the demo until Enter or Ctrl-C (to use psql)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")


def _cmd_demo(args: argparse.Namespace, rep: RichReporter) -> Any:
    from pathlib import Path

    from migration.dev.demo import run_demo

    if args.chunks < 1:
        raise ConfigError(f"--chunks must be at least 1, not {args.chunks}")

    def serve(report: Any) -> None:
        rep.close()
        _render(report)
        print(
            "servers running; connect with psql as shown above. Press Enter (or Ctrl-C) to stop.",
            file=sys.stderr,
        )
        with contextlib.suppress(KeyboardInterrupt, EOFError):
            input()

    return run_demo(
        Path(args.dir),
        fresh=args.fresh,
        chunks=args.chunks,
        reporter=rep,
        keep_running=serve if args.serve else None,
    )


SUBCOMMANDS: dict[str, tuple[str, Handler]] = {
    "run": ("steps 1-4 in order (and the storage step): what `pulumi up` runs", _cmd_run),
    "extension": ("1. create/update pgvector on the target", _cmd_extension),
    "import": ("2. back up, then import schema and data", _cmd_import),
    "reindex": ("3. re-embed every chunk and build the HNSW index", _cmd_reindex),
    "verify": ("4. compare row counts and checksums; measure the app's vector query", _cmd_verify),
    "auth": ("opt-in, after the import: Supabase's roles and schema auth (GoTrue)", _cmd_auth),
    "storage": (
        "copy storage-api's files into the stack's bucket at its S3 keys, then check them "
        "(opt-in; `run` takes it between import and re-index when a source backend is named)",
        _cmd_storage,
    ),
    "restore": ("rollback: restore the import's backup into an empty target", _cmd_restore),
    "demo": ("the whole migration on two embedded servers, no cloud account", _cmd_demo),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="qckstrt-migrate",
        description="Move QCKSTRT's data from Supabase to RDS PostgreSQL + pgvector.",
        epilog="exit status: "
        + "; ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES.items()),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, _) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == "demo":
            _add_demo(p)
            continue
        _add_plumbing(p, name)
        _add_settings(p, name)
    return parser


# ---------------------------------------------------------------------------------------------
# Reports


def as_json(report: Any) -> dict[str, Any]:
    """A report as JSON-able data: its ``as_dict`` (every library report has one)."""
    data: dict[str, Any] = report.as_dict() if hasattr(report, "as_dict") else asdict(report)
    return data


def _render(report: Any) -> None:
    """Show a library report as a table on stderr (stdout stays free for --json)."""
    from rich.console import Console

    from migration.dev.demo import DemoReport
    from migration.steps.restore import RestoreReport
    from migration.steps.run import RunReport
    from migration.steps.transfer import ImportReport
    from migration.steps.verify import VerifyReport

    console = Console(file=sys.stderr)
    if isinstance(report, VerifyReport):
        _render_verify(console, report)
    elif isinstance(report, ImportReport):
        _render_import(console, report)
    elif isinstance(report, RestoreReport):
        _render_restore(console, report)
    elif isinstance(report, RunReport):
        _render_steps(console, report)
    elif isinstance(report, DemoReport):
        _render_demo(console, report)
    else:
        for key, value in as_json(report).items():
            console.print(f"{key}: {_plain(value)}", highlight=False, soft_wrap=True)


def _plain(value: Any) -> str:
    """A report value as a reader wants it: lists of lines one per line, structures as JSON
    (the same text `--json` prints), not Python's repr."""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return "".join(f"\n  - {v}" for v in value)
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


def _render_verify(console: Any, report: VerifyReport) -> None:
    from rich.table import Table

    table = Table("table", "source rows", "target rows", "checksum", title="verification")
    for t in report.tables:
        table.add_row(
            t.table,
            f"{t.source_rows:,}",
            "missing" if t.target_rows is None else f"{t.target_rows:,}",
            "ok" if t.ok else "DIFFERS",
        )
    console.print(table)
    if report.retrieval is not None:
        _render_retrieval(console, report.retrieval)


def _render_retrieval(console: Any, r: RetrievalCheck) -> None:
    from rich.table import Table

    table = Table("measure", "value", title=f"the app's vector query on {r.table}")
    table.add_row("sampled", f"{r.sampled:,} of {r.chunks:,} chunks, {r.users_sampled} users")
    for k, recall in ((3, r.recall_at_3), (5, r.recall_at_5), (10, r.recall_at_10)):
        table.add_row(f"recall@{k}", f"{recall:.4f}")
    table.add_row("self-hit rate", f"{r.self_hit_rate:.4f}")
    table.add_row("short results", str(r.short_results))
    table.add_row("latency p50 / p95", f"{r.latency_p50_ms:.2f} / {r.latency_p95_ms:.2f} ms")
    table.add_row("session settings", ", ".join(f"{k}={v}" for k, v in r.session_settings.items()))
    console.print(table)
    for line in r.failures:
        console.print(f"FAILS: {line}", highlight=False, soft_wrap=True)


def _render_import(console: Any, report: ImportReport) -> None:
    from rich.table import Table

    table = Table("table", "rows", "MB", "seconds", "status", title="import")
    for t in report.tables:
        table.add_row(
            f"{t.schema}.{t.table}",
            f"{t.rows:,}",
            f"{t.bytes / 1e6:.1f}",
            f"{t.seconds:.2f}",
            t.status,
        )
    console.print(table)
    if report.left_out:
        left = Table("left out", "name", "why")
        for lo in report.left_out:
            left.add_row(lo.kind, lo.name, lo.reason)
        console.print(left)
    console.print("timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in report.timings.items()))


def _render_restore(console: Any, report: RestoreReport) -> None:
    from rich.table import Table

    table = Table("table", "rows", title="restore")
    for name, rows in report.tables.items():
        table.add_row(name, f"{rows:,}")
    console.print(table)
    console.print(
        f"restored {report.backup}: {len(report.tables)} tables, {report.rows:,} "
        f"rows in {report.seconds:.1f}s; left out as the import did: "
        f"{report.left_out} entries"
        + ("" if report.manifest else " (no manifest.json: catalog-free rules only)")
        + (f"; replaced {', '.join(report.replaced)}" if report.replaced else "")
        + (f"; kept in {report.target_backup}" if report.target_backup else ""),
        highlight=False,
        soft_wrap=True,
    )
    if report.options_left_out:
        left = Table("left out", "name", "why")
        for lo in report.options_left_out:
            left.add_row(lo.kind, lo.name, lo.reason)
        console.print(left)


def _render_steps(console: Any, report: RunReport) -> None:
    from rich.table import Table

    table = Table("step", "status", "seconds", "what it did", title="migration")
    for step in report.steps:
        table.add_row(
            f"{step.number}. {step.name}",
            step.status,
            f"{step.seconds:.1f}" if step.status != "not run" else "",
            words(step.summary),
        )
    table.add_row("total", "", f"{report.seconds:.1f}", "", style="bold")
    console.print(table)


def _render_demo(console: Any, report: DemoReport) -> None:
    from rich.table import Table

    _render_steps(console, report.run)
    hits = Table(
        "rank", "distance", "chunk", "text", title=f"RAG retrieval for {report.user_email}"
    )
    for hit in report.retrieval:
        hits.add_row(
            str(hit.rank), f"{hit.distance:.4f}", hit.chunk_id[-12:], hit.content[:90] + "..."
        )
    from migration.steps.verify import VerifyReport as Verified  # at run time, for isinstance

    verified = next((s.report for s in report.run.steps if s.name == "verify"), None)
    if isinstance(verified, Verified) and verified.retrieval is not None:
        _render_retrieval(console, verified.retrieval)
    console.print(f"question: {report.question!r} (embedded with the same model)")
    console.print(hits)
    _render_demo_checks(console, report)
    _render_demo_footer(console, report)


def _render_demo_checks(console: Any, report: DemoReport) -> None:
    """The sign-in on the target and the file fetched from the bucket (`demo_checks`)."""
    if (s := report.sign_in) is not None:
        console.print(
            f"sign-in check: {s.email} / password {s.password!r}: bcrypt matches the target's "
            f"auth.users.encrypted_password{'' if s.password_ok else ' - FAILS'}; a wrong "
            f"password is {'refused' if s.wrong_password_refused else 'ACCEPTED'}; as {s.role}: "
            f"session {s.session_id[:8]}..., refresh token {s.refresh_token_id} inserted "
            "(rolled back)",
            highlight=False,
            soft_wrap=True,
        )
    if (f := report.file) is not None:
        console.print(
            f"file fetched from the local bucket: s3://{f.bucket}/{f.key}: {f.size:,} bytes, "
            f"{f.content_type}, "
            + ("equal to the source's file" if f.equal_to_source else "DIFFERS from the source"),
            highlight=False,
            soft_wrap=True,
        )


def _render_demo_footer(console: Any, report: DemoReport) -> None:
    from migration.dev.demo import DIFFERENCES, MASTER, TARGET_DB

    console.print("what this demo does differently from RDS:", highlight=False)
    for line in DIFFERENCES:
        console.print(f"  - {line}", highlight=False)
    console.print(
        f"data: {report.directory} (source/ and target/ clusters, storage/ files, aws/ local "
        "AWS state, backups/); "
        f"{'seeded this run' if report.seeded else 'reused'}; {report.seconds:.0f}s in all",
        highlight=False,
    )
    console.print(
        f'connect while `qckstrt-migrate demo --serve` runs: PGPASSWORD="$(cat '
        f'{report.directory}/.target-master-password)" {report.psql} -h 127.0.0.1 '
        f"-p {report.target_port} -U {MASTER} {TARGET_DB}",
        highlight=False,
        soft_wrap=True,
    )


# ---------------------------------------------------------------------------------------------
# Errors and exit statuses


def exit_code(exc: BaseException) -> int:
    """The exit status for an exception that ended a subcommand (see `EXIT_CODES`).

    A failed ``run`` step is judged by its cause, so ``run`` and the step alone agree.
    """
    if isinstance(exc, VerificationFailed):
        return EXIT_DIFFERENCES
    if isinstance(exc, UsageError):
        return EXIT_USAGE
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if not isinstance(exc, MigrationError):
        return EXIT_INTERNAL
    cause = exc.__cause__ if isinstance(exc.__cause__, MigrationError) else exc
    if isinstance(cause, VerificationFailed):
        return EXIT_DIFFERENCES
    return EXIT_USAGE if isinstance(cause, ConfigError) else EXIT_FAILED


def _passwords(args: argparse.Namespace | None) -> list[str]:
    """Passwords in the URLs this run was given, so an unexpected message can be scrubbed."""
    from psycopg import conninfo

    urls = [os.environ.get("SOURCE_DATABASE_URL"), os.environ.get("TARGET_DATABASE_URL")]
    if args is not None:
        urls += [getattr(args, "source", None), getattr(args, "target", None)]
    found = []
    for url in urls:
        with contextlib.suppress(Exception):
            if url and (password := conninfo.conninfo_to_dict(url).get("password")):
                found.append(str(password))
    return found


def _describe(exc: BaseException, args: argparse.Namespace | None) -> str:
    """The one-line cause of `exc`, in the command line's words and without a password."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted; run the same command again to resume"
    if isinstance(exc, MigrationError | UsageError):
        message = words(str(exc))
    else:
        with tempfile.NamedTemporaryFile(
            "w", prefix="qckstrt-migrate-", suffix=".traceback", delete=False
        ) as log:
            traceback.print_exception(exc, file=log)
        first = " ".join(str(exc).split())[:300]
        message = f"internal error ({type(exc).__name__}: {first}); traceback in {log.name}"
    for password in _passwords(args):
        message = message.replace(password, "***")
    return " ".join(message.split())


def _error_object(exc: BaseException, code: int, message: str) -> dict[str, Any]:
    return {
        "code": code,
        "kind": "Interrupted" if isinstance(exc, KeyboardInterrupt) else type(exc).__name__,
        "setting": getattr(exc, "setting", None),
        "message": message,
    }


def _finish(
    command: str,
    json_out: bool,
    report: Any,
    failure: BaseException | None,
    args: argparse.Namespace | None,
) -> int:
    """Print the report (and the error, if any); return the exit status.

    On failure `report` is what the library kept (a typed report, or a plain dict from an
    older caller): shown as a table when typed, and merged into the JSON error object.
    """
    code = EXIT_OK if failure is None else exit_code(failure)
    message = "" if failure is None else _describe(failure, args)
    data = None if report is None else report if isinstance(report, dict) else as_json(report)
    if json_out and failure is not None:
        out = {**(data or {}), "ok": False, "error": _error_object(failure, code, message)}
        print(json.dumps(out, indent=2, default=str))
    elif json_out and data is not None:
        print(json.dumps(data, indent=2, default=str))
    elif report is not None and not isinstance(report, dict):
        _render(report)
    if failure is not None:
        print(f"qckstrt-migrate {command}: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point of `qckstrt-migrate`; returns the exit status (`EXIT_CODES`)."""
    # platformdirs (imported by the embedded server's package) warns about a desktop setting
    # that means nothing here; the warning would be the first line a newcomer sees.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", category=UserWarning)
    # The model's own download/loading bars would interleave with ours on stderr.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        command = next((a for a in argv if a in SUBCOMMANDS), "")
        return _finish(command or "usage", "--json" in argv, None, exc, None)
    _, handler = SUBCOMMANDS[args.command]
    rep = RichReporter()
    report: Any = None
    failure: BaseException | None = None
    try:
        if args.command != "demo":
            _resolve(args, args.command)
        report = handler(args, rep)
    except (Exception, KeyboardInterrupt) as exc:
        failure = exc
        # `run` and verify keep what they found: typed (`result`), else a dict (`report`).
        report = getattr(exc, "result", None) or getattr(exc, "report", None)
    finally:
        rep.close()
    return _finish(args.command, args.json, report, failure, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
