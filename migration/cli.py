"""`qckstrt-migrate`: a thin skin over the library.

It parses arguments, calls one library function per subcommand, prints the report (a table on
stderr, or JSON on stdout with ``--json``) and turns `MigrationError`s into a one-line cause and
a non-zero exit. Settings resolve flag, then environment variable, then default. URLs are better
given by environment (``SOURCE_DATABASE_URL``/``TARGET_DATABASE_URL``): flags show in process
lists. Passwords are never printed.

Adding a subcommand: write ``_cmd_<name>(args, reporter) -> dict`` and register it in
`SUBCOMMANDS` with a function adding its arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from migration.connection import DEFAULT_ATTEMPTS, DEFAULT_CONNECT_TIMEOUT, Endpoint
from migration.errors import ConfigError, MigrationError, VerificationFailed
from migration.models import DEFAULT_MODEL
from migration.progress import RichReporter
from migration.reindex import DEFAULT_TABLE

if TYPE_CHECKING:
    from migration.reindex import ReindexSettings

Handler = Callable[[argparse.Namespace, RichReporter], dict[str, Any]]


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value else default


def _endpoint(args: argparse.Namespace, which: str) -> Endpoint:
    url = getattr(args, which) or _env(f"{which.upper()}_DATABASE_URL")
    if not url:
        raise ConfigError(
            f"no {which} database: set {which.upper()}_DATABASE_URL (preferred) or --{which}"
        )
    return Endpoint(url, which, connect_timeout=args.connect_timeout, attempts=args.attempts)


def _optional_source(args: argparse.Namespace) -> Endpoint | None:
    if args.source or _env("SOURCE_DATABASE_URL"):
        return _endpoint(args, "source")
    return None


def _schemas(args: argparse.Namespace) -> list[str]:
    raw = args.schemas or _env("QCKSTRT_SCHEMAS", "public") or "public"
    return [s.strip() for s in raw.split(",") if s.strip()]


def _common(p: argparse.ArgumentParser, source: bool = True) -> None:
    if source:
        p.add_argument("--source", help="source URL (prefer SOURCE_DATABASE_URL)")
    p.add_argument("--target", help="target URL (prefer TARGET_DATABASE_URL)")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument(
        "--connect-timeout",
        type=int,
        default=int(_env("QCKSTRT_CONNECT_TIMEOUT", str(DEFAULT_CONNECT_TIMEOUT)) or 10),
        help="seconds per connection attempt (QCKSTRT_CONNECT_TIMEOUT, default 10)",
    )
    p.add_argument(
        "--attempts",
        type=int,
        default=int(_env("QCKSTRT_CONNECT_ATTEMPTS", str(DEFAULT_ATTEMPTS)) or 3),
        help="connection attempts on transient errors (QCKSTRT_CONNECT_ATTEMPTS, default 3)",
    )


def _lock_wait(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--lock-wait",
        type=float,
        default=float(_env("QCKSTRT_LOCK_WAIT", "0") or 0),
        help="seconds to wait for another run's lock on the target (QCKSTRT_LOCK_WAIT; 0)",
    )


def _vector_schema(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--vector-schema",
        default=_env("QCKSTRT_VECTOR_SCHEMA"),
        help="schema for `vector` (QCKSTRT_VECTOR_SCHEMA; default: the source's, else public)",
    )


def _add_extension(p: argparse.ArgumentParser) -> None:
    _common(p)
    _vector_schema(p)


def _cmd_extension(args: argparse.Namespace, rep: RichReporter) -> dict[str, Any]:
    from migration.extension import setup_extension

    report = setup_extension(
        _endpoint(args, "target"),
        _optional_source(args),
        vector_schema=args.vector_schema,
        reporter=rep,
    )
    return report.as_dict()


def _add_import(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument(
        "--schemas", help="application schemas, comma-separated (QCKSTRT_SCHEMAS; public)"
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=int(_env("QCKSTRT_JOBS", "2") or 2),
        help="tables copied at once (QCKSTRT_JOBS; 2)",
    )
    p.add_argument(
        "--backup",
        default=_env("QCKSTRT_BACKUP"),
        help="s3://bucket/prefix or a directory for pg_dump -Fc of the source (QCKSTRT_BACKUP)",
    )
    p.add_argument(
        "--on-existing",
        choices=["fail", "replace"],
        default=_env("QCKSTRT_ON_EXISTING", "fail"),
        help="a target that holds the tables: fail (default) or replace after a backup",
    )
    p.add_argument(
        "--restart", action="store_true", help="discard an interrupted import's progress"
    )
    p.add_argument("--dry-run", action="store_true", help="read and report; write nothing")
    p.add_argument(
        "--pg-dump", default=_env("QCKSTRT_PG_DUMP"), help="pg_dump to use (QCKSTRT_PG_DUMP)"
    )
    p.add_argument(
        "--retries",
        type=int,
        default=int(_env("QCKSTRT_RETRIES", "3") or 3),
        help="retries of a table copy after a lost connection (QCKSTRT_RETRIES; 3)",
    )
    _lock_wait(p)


def _cmd_import(args: argparse.Namespace, rep: RichReporter) -> dict[str, Any]:
    from migration.transfer import ImportOptions, import_database

    options = ImportOptions(
        schemas=_schemas(args),
        jobs=args.jobs,
        backup=args.backup,
        on_existing=args.on_existing,
        restart=args.restart,
        dry_run=args.dry_run,
        pg_dump=args.pg_dump,
        retries=args.retries,
        lock_wait_seconds=args.lock_wait,
    )
    report = import_database(_endpoint(args, "source"), _endpoint(args, "target"), options, rep)
    return report.as_dict()


def _add_verify(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument(
        "--schemas", help="application schemas, comma-separated (QCKSTRT_SCHEMAS; public)"
    )


def _cmd_verify(args: argparse.Namespace, rep: RichReporter) -> dict[str, Any]:
    from migration.verify import verify

    report = verify(
        _endpoint(args, "source"), _endpoint(args, "target"), _schemas(args), reporter=rep
    )
    return report.as_dict()


def _reindex_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=_env("QCKSTRT_MODEL", DEFAULT_MODEL),
        help="sentence-transformers model: name, name@revision or local path (QCKSTRT_MODEL)",
    )
    p.add_argument(
        "--dimensions",
        type=int,
        default=int(_env("QCKSTRT_VECTOR_DIMENSIONS", "384") or 384),
        help="the stack's vectorDimensions (QCKSTRT_VECTOR_DIMENSIONS, default 384)",
    )
    p.add_argument(
        "--allow-dimension-change",
        action="store_true",
        help="rewrite vector(N) to the model's dimension and re-embed every row",
    )
    p.add_argument("--schema", default=_env("QCKSTRT_VECTOR_SCHEMA", "public"))
    p.add_argument("--table", default=_env("QCKSTRT_VECTOR_TABLE", DEFAULT_TABLE))
    p.add_argument("--text-column", default="content")
    p.add_argument("--vector-column", default="embedding")
    p.add_argument("--batch-size", type=int, default=int(_env("QCKSTRT_BATCH_SIZE", "128") or 128))
    p.add_argument("--device", default=_env("QCKSTRT_DEVICE", "cpu"), help="cpu, cuda or auto")
    p.add_argument("--hnsw-m", type=int, default=16)
    p.add_argument("--hnsw-ef-construction", type=int, default=64)


def _add_reindex(p: argparse.ArgumentParser) -> None:
    _common(p, source=False)
    _reindex_flags(p)
    _lock_wait(p)


def _reindex_settings(args: argparse.Namespace) -> ReindexSettings:
    from migration.reindex import ReindexSettings

    return ReindexSettings(
        model=args.model,
        expected_dimensions=args.dimensions,
        allow_dimension_change=args.allow_dimension_change,
        schema=args.schema,
        table=args.table,
        text_column=args.text_column,
        vector_column=args.vector_column,
        batch_size=args.batch_size,
        device=args.device,
        hnsw_m=args.hnsw_m,
        hnsw_ef_construction=args.hnsw_ef_construction,
        lock_wait_seconds=args.lock_wait,
    )


def _cmd_reindex(args: argparse.Namespace, rep: RichReporter) -> dict[str, Any]:
    from migration.reindex import reindex

    return reindex(_endpoint(args, "target"), _reindex_settings(args), reporter=rep).as_dict()


def _auth_secrets(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument(
        "--auth-password-secrets",
        default=_env("QCKSTRT_AUTH_PASSWORD_SECRETS"),
        help="role=ARN,... : the Secrets Manager secret of each login role's password "
        "(supabase_auth_admin, supabase_storage_admin, authenticator; "
        "QCKSTRT_AUTH_PASSWORD_SECRETS)"
        + ("" if required else "; given: run the auth step after the import"),
    )


def _password_store(args: argparse.Namespace) -> Any:
    """The Secrets Manager store of ``--auth-password-secrets`` (ARNs only, never values)."""
    from migration.roles import SecretsManagerStore

    raw = args.auth_password_secrets or ""
    pairs = [item.split("=", 1) for item in raw.split(",") if item.strip()]
    if any(len(pair) != 2 for pair in pairs):
        raise ConfigError("--auth-password-secrets takes role=ARN pairs, comma-separated")
    return SecretsManagerStore({role.strip(): arn.strip() for role, arn in pairs})


def _add_auth(p: argparse.ArgumentParser) -> None:
    _common(p)
    _auth_secrets(p, required=True)
    p.add_argument(
        "--app-schemas",
        default=_env("QCKSTRT_SCHEMAS"),
        help="application schemas whose objects use auth (QCKSTRT_SCHEMAS; as imported)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=int(_env("QCKSTRT_JOBS", "2") or 2),
        help="tables copied at once (QCKSTRT_JOBS; 2)",
    )
    p.add_argument(
        "--pg-dump", default=_env("QCKSTRT_PG_DUMP"), help="pg_dump to use (QCKSTRT_PG_DUMP)"
    )
    _lock_wait(p)


def _cmd_auth(args: argparse.Namespace, rep: RichReporter) -> dict[str, Any]:
    from migration.auth import AuthOptions, carry_auth

    schemas = [s.strip() for s in (args.app_schemas or "").split(",") if s.strip()]
    options = AuthOptions(
        app_schemas=schemas or None,
        jobs=args.jobs,
        pg_dump=args.pg_dump,
        lock_wait_seconds=args.lock_wait,
    )
    store = _password_store(args)
    report = carry_auth(_endpoint(args, "source"), _endpoint(args, "target"), store, options, rep)
    return report.as_dict()


def _add_run(p: argparse.ArgumentParser) -> None:
    _add_import(p)
    _reindex_flags(p)
    _vector_schema(p)
    _auth_secrets(p, required=False)


def _cmd_run(args: argparse.Namespace, rep: RichReporter) -> dict[str, Any]:
    from migration.run import RunOptions, run_all

    if args.dry_run or args.restart:
        raise ConfigError("--dry-run and --restart belong to `qckstrt-migrate import`, not run")
    options = RunOptions(
        schemas=_schemas(args),
        jobs=args.jobs,
        backup=args.backup,
        on_existing=args.on_existing,
        retries=args.retries,
        vector_schema=args.vector_schema,
        reindex=_reindex_settings(args),
        lock_wait_seconds=args.lock_wait,
        auth_store=_password_store(args) if args.auth_password_secrets else None,
    )
    source, target = _endpoint(args, "source"), _endpoint(args, "target")
    return run_all(source, target, options, rep).as_dict()


def _add_restore(p: argparse.ArgumentParser) -> None:
    _common(p, source=False)
    p.add_argument(
        "--from",
        dest="location",
        required=True,
        help="the import's backup: s3://bucket/prefix-or-key or a directory/file",
    )
    p.add_argument(
        "--on-existing",
        choices=["fail", "replace"],
        default="fail",
        help="a target that holds the tables: fail (default) or replace after a --backup",
    )
    p.add_argument(
        "--backup",
        default=_env("QCKSTRT_BACKUP"),
        help="where to keep the target's tables before --on-existing replace (QCKSTRT_BACKUP)",
    )
    _lock_wait(p)


def _cmd_restore(args: argparse.Namespace, rep: RichReporter) -> dict[str, Any]:
    from migration.restore import restore

    report = restore(
        args.location,
        _endpoint(args, "target"),
        on_existing=args.on_existing,
        backup=args.backup,
        lock_wait_seconds=args.lock_wait,
        reporter=rep,
    )
    return report.as_dict()


def _add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dir",
        default=_env("QCKSTRT_DEMO_DIR", ".demo"),
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


def _cmd_demo(args: argparse.Namespace, rep: RichReporter) -> dict[str, Any]:
    from pathlib import Path

    from migration.demo import run_demo

    if args.chunks < 1:
        raise ConfigError(f"--chunks must be at least 1, not {args.chunks}")

    def serve(report: Any) -> None:
        rep.close()
        _render("demo", asdict(report), rep)
        print(
            "servers running; connect with psql as shown above. Press Enter (or Ctrl-C) to stop.",
            file=sys.stderr,
        )
        with contextlib.suppress(KeyboardInterrupt, EOFError):
            input()

    report = run_demo(
        Path(args.dir),
        fresh=args.fresh,
        chunks=args.chunks,
        reporter=rep,
        keep_running=serve if args.serve else None,
    )
    return asdict(report)


SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Handler]] = {
    "run": ("steps 1-4 in order: what `pulumi up` runs", _add_run, _cmd_run),
    "extension": ("1. create/update pgvector on the target", _add_extension, _cmd_extension),
    "import": ("2. back up, then import schema and data", _add_import, _cmd_import),
    "reindex": ("3. re-embed every chunk and build the HNSW index", _add_reindex, _cmd_reindex),
    "verify": ("4. compare row counts and checksums", _add_verify, _cmd_verify),
    "auth": (
        "opt-in, after import: Supabase's roles and schema auth (GoTrue's users)",
        _add_auth,
        _cmd_auth,
    ),
    "restore": (
        "rollback: restore the import's backup into an empty target",
        _add_restore,
        _cmd_restore,
    ),
    "demo": (
        "the whole migration on two embedded servers, no cloud account",
        _add_demo,
        _cmd_demo,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qckstrt-migrate",
        description="Move QCKSTRT's data from Supabase to RDS PostgreSQL + pgvector.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add, _) in SUBCOMMANDS.items():
        add(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def _render(command: str, report: dict[str, Any], rep: RichReporter) -> None:
    """Show a report as a table on stderr (stdout stays free for --json)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stderr)
    if command == "verify":
        table = Table("table", "source rows", "target rows", "checksum", title="verification")
        for t in report["tables"]:
            table.add_row(
                t["table"],
                f"{t['source_rows']:,}",
                "missing" if t["target_rows"] is None else f"{t['target_rows']:,}",
                "ok" if t["ok"] else "DIFFERS",
            )
        console.print(table)
    elif command == "import":
        table = Table("table", "rows", "MB", "seconds", "status", title="import")
        for t in report["tables"]:
            table.add_row(
                f"{t['schema']}.{t['table']}",
                f"{t['rows']:,}",
                f"{t['bytes'] / 1e6:.1f}",
                f"{t['seconds']:.2f}",
                t["status"],
            )
        console.print(table)
        if report["left_out"]:
            left = Table("left out", "name", "why")
            for lo in report["left_out"]:
                left.add_row(lo["kind"], lo["name"], lo["reason"])
            console.print(left)
        console.print(
            "timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in report["timings"].items())
        )
    elif command == "restore":
        table = Table("table", "rows", title="restore")
        for name, rows in report["tables"].items():
            table.add_row(name, f"{rows:,}")
        console.print(table)
        console.print(
            f"restored {report['backup']}: {len(report['tables'])} tables, {report['rows']:,} "
            f"rows in {report['seconds']:.1f}s; left out as the import did: "
            f"{report['left_out']} entries"
            + ("" if report["manifest"] else " (no manifest.json: catalog-free rules only)")
            + (f"; replaced {', '.join(report['replaced'])}" if report["replaced"] else "")
            + (f"; kept in {report['target_backup']}" if report["target_backup"] else ""),
            highlight=False,
            soft_wrap=True,
        )
    elif command == "run":
        _render_steps(console, report)
    elif command == "demo":
        _render_demo(console, report)
    else:
        for key, value in report.items():
            console.print(f"{key}: {value}", highlight=False)


def _render_steps(console: Any, report: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table("step", "status", "seconds", "what it did", title="migration")
    for step in report["steps"]:
        table.add_row(
            f"{step['number']}. {step['name']}",
            step["status"],
            f"{step['seconds']:.1f}" if step["status"] != "not run" else "",
            step["summary"],
        )
    table.add_row("total", "", f"{report['seconds']:.1f}", "", style="bold")
    console.print(table)


def _render_demo(console: Any, report: dict[str, Any]) -> None:
    from rich.table import Table

    if "run" not in report:  # a step failed: the report is the run's, so far
        _render_steps(console, report)
        return
    _render_steps(console, report["run"])
    hits = Table(
        "rank", "distance", "chunk", "text", title=f"RAG retrieval for {report['user_email']}"
    )
    for hit in report["retrieval"]:
        hits.add_row(
            str(hit["rank"]),
            f"{hit['distance']:.4f}",
            hit["chunk_id"][-12:],
            hit["content"][:90] + "...",
        )
    console.print(f"question: {report['question']!r} (embedded with the same model)")
    console.print(hits)
    from migration.demo import DIFFERENCES, MASTER, TARGET_DB

    console.print("what this demo does differently from RDS:", highlight=False)
    for line in DIFFERENCES:
        console.print(f"  - {line}", highlight=False)
    directory = report["directory"]
    console.print(
        f"data: {directory} (source/ and target/ clusters, backups/); "
        f"{'seeded this run' if report['seeded'] else 'reused'}; {report['seconds']:.0f}s in all",
        highlight=False,
    )
    console.print(
        f'connect while `qckstrt-migrate demo --serve` runs: PGPASSWORD="$(cat '
        f'{directory}/.target-master-password)" {report["psql"]} -h 127.0.0.1 '
        f"-p {report['target_port']} -U {MASTER} {TARGET_DB}",
        highlight=False,
        soft_wrap=True,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of `qckstrt-migrate`; returns the exit status."""
    # platformdirs (imported by the embedded server's package) warns about a desktop setting
    # that means nothing here; the warning would be the first line a newcomer sees.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", category=UserWarning)
    # The model's own download/loading bars would interleave with ours on stderr.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    rep = RichReporter()
    _, _, handler = SUBCOMMANDS[args.command]
    report: dict[str, Any] | None = None
    code = 0
    try:
        report = handler(args, rep)
    except VerificationFailed as exc:
        report = exc.report
        code = 1
        message = str(exc)
    except MigrationError as exc:
        code = 2
        message = str(exc)
        report = getattr(exc, "report", None)  # `run` keeps the steps done so far
    except KeyboardInterrupt:
        code = 130
        message = "interrupted; run the same command again to resume"
    finally:
        rep.close()
    if report is not None:
        if args.json:
            print(json.dumps(report, indent=2, default=str))
        else:
            _render(args.command, report, rep)
    if code:
        print(f"qckstrt-migrate {args.command}: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
