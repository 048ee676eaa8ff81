"""Rollback: restore a backup written by the import into an empty target.

Why through psycopg and not ``pg_restore --dbname``: RDS forces SSL and the embedded wheel's
client binaries have none. So pg_restore only turns the archive into SQL (``--file=-``, no
connection), and that SQL is applied through psycopg: statements as they come, ``COPY ... FROM
stdin`` blocks streamed into ``cursor.copy``. Everything runs in one transaction, so a failed or
interrupted restore leaves the target as it was.

What the import left out (Supabase's policies, vault helpers, grants, ...) is left out again, by
the import's own TOC filter: the import writes ``manifest.json`` beside ``source.dump`` naming the
entries it decided to leave out (that decision needs the source's catalog, which a rollback may
no longer reach). A dump without a manifest gets the filter's catalog-free rules only, and the
report says so.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import errors, sql

from migration.backends.backup import BackupLocation
from migration.db import carry_over, supabase
from migration.db.connection import Conn, Endpoint
from migration.db.lock import target_lock
from migration.db.pgtools import PgTools, TocEntry, find_pg_tools, parse_toc, restore_to_sql_args
from migration.db.schema_apply import (
    MANIFEST,
    SchemaApplyFailed,
    apply_script,
    filter_toc,
    target_settings,
)
from migration.db.supabase import LeftOut
from migration.db.target_backup import backup_target_tables
from migration.errors import ConfigError, ImportFailed, PreflightError, TargetNotEmpty
from migration.progress import NullReporter, Reporter
from migration.steps.reindex import forget_tables

DUMP = "source.dump"


class RestoreFailed(ImportFailed):
    """A statement of the backup failed on the target; nothing was kept (one transaction)."""


@dataclass
class RestoreReport:
    """What was restored; `as_dict` is JSON-able.

    :param tables: rows restored per table (``schema.table``).
    :param left_out: TOC entries not replayed (as the import left them out).
    :param replaced: the target's tables that were dropped and restored (``replace``).
    :param target_backup: where those tables were kept first.
    :param options_left_out: settings of the source's server the target does not know (column
        options, storage parameters, configuration parameters), left out of the statements.
    :param kept_from_target: the target's own policies, foreign keys and grants on replaced
        tables that the backup does not hold (what the auth step put back), kept.
    """

    backup: str
    target: str
    manifest: bool
    tables: dict[str, int] = field(default_factory=dict)
    rows: int = 0
    left_out: int = 0
    replaced: list[str] = field(default_factory=list)
    target_backup: str | None = None
    seconds: float = 0.0
    options_left_out: list[LeftOut] = field(default_factory=list)
    kept_from_target: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Backup:
    """A located backup: the dump (a local file) and its manifest, if any."""

    uri: str
    dump: Path
    manifest: dict[str, Any] | None


def _newest_local(path: Path) -> tuple[Path, Path]:
    if path.is_file():
        return path, path.parent / MANIFEST
    if not path.is_dir():
        raise ConfigError(f"`restore_from` {path}: no such file or directory")
    # Each import writes <location>/<UTC timestamp>/source.dump: the largest path is the newest.
    dumps = sorted(path.glob(f"**/{DUMP}"), key=lambda p: str(p.parent))
    if not dumps:
        raise ConfigError(
            f"`restore_from` {path}: no {DUMP} inside (is it the import's `backup` folder?)"
        )
    return dumps[-1], dumps[-1].parent / MANIFEST


def locate(location: str, workdir: Path, s3_client: Any | None = None) -> Backup:
    """Find the newest backup at `location` (a dump, a run folder, or the --backup root).

    S3 dumps are downloaded into `workdir` (pg_restore needs a seekable file to pick entries).

    :raises ConfigError: nothing there, or not a location this tool writes.
    """
    if location.startswith("s3://"):
        return _locate_s3(location, workdir, s3_client)
    if "://" in location:
        raise ConfigError(f"`restore_from` {location!r}: use s3://bucket/key or a directory")
    dump, manifest = _newest_local(Path(location))
    doc = json.loads(manifest.read_text()) if manifest.exists() else None
    return Backup(str(dump), dump, doc)


def _locate_s3(location: str, workdir: Path, client: Any | None) -> Backup:
    from botocore.exceptions import BotoCoreError, ClientError

    if client is None:
        import boto3

        client = boto3.client("s3")
    bucket, _, key = location[5:].partition("/")
    if not bucket:
        raise ConfigError(f"`restore_from` {location!r} names no bucket")
    try:
        if not key.endswith(".dump"):
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=key.rstrip("/") + "/" if key else ""
            )
            keys = sorted(
                o["Key"]
                for page in pages
                for o in page.get("Contents", [])
                if o["Key"].endswith("/" + DUMP) or o["Key"] == DUMP
            )
            if not keys:
                raise ConfigError(f"`restore_from` {location}: no {DUMP} under that prefix")
            key = keys[-1]
        dump = workdir / DUMP
        client.download_file(bucket, key, str(dump))
        manifest_key = key.rsplit("/", 1)[0] + "/" + MANIFEST if "/" in key else MANIFEST
        doc = None
        try:
            doc = json.loads(client.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
        except ClientError:
            doc = None
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise ConfigError(
            f"`restore_from` s3://{bucket}/{key}: cannot read it ({code}); check the bucket, "
            "the key and "
            "s3:GetObject/ListBucket (and kms:Decrypt) rights"
        ) from None
    except BotoCoreError as exc:
        raise ConfigError(f"`restore_from` {location}: cannot reach S3 ({exc})") from None
    return Backup(f"s3://{bucket}/{key}", dump, doc)


def _keep(toc: list[TocEntry], manifest: dict[str, Any] | None) -> list[TocEntry]:
    """The entries to replay: the import's filter, fed with the import's recorded decisions.

    The manifest names entries by (kind, schema, name): the backup is a second pg_dump run
    whose dump ids differ from the schema dump's. Catalog OIDs are the same (one source), so
    the named entries become the OID-keyed decisions `filter_toc` takes; entries it does not
    know by kind (comments, grants of a left-out function) are dropped by name.
    """
    named = {tuple(x) for x in (manifest or {}).get("left_out", [])}
    decided: dict[tuple[str, int], LeftOut] = {}
    for e in toc:
        kind = supabase.TOC_KINDS.get(e.desc)
        if kind and (e.desc, e.schema, e.tag) in named:
            decided[(kind, e.oid)] = LeftOut(kind, f"{e.schema}.{e.tag}", "left out by the import")
    kept, _ = filter_toc(toc, decided)
    return [e for e in kept if (e.desc, e.schema, e.tag) not in named]


def _existing(conn: Conn, tables: list[tuple[str, str]]) -> list[str]:
    found = []
    for schema, name in tables:
        row = conn.execute(
            "SELECT to_regclass(format('%%I.%%I', %s::text, %s::text))", (schema, name)
        ).fetchone()
        if row is not None and row[0] is not None:
            found.append(f"{schema}.{name}")
    return found


def _apply(
    conn: Conn, script: IO[str], settings: set[str], rep: Reporter, left: list[LeftOut]
) -> dict[str, int]:
    """Apply pg_restore's SQL: entries through `apply_script` (what the target does not know
    left out, into `left`), COPY blocks through ``cursor.copy``."""
    counts: dict[str, int] = {}
    pending: list[str] = []

    def flush() -> None:
        text = "\n".join(pending)
        pending.clear()
        if text.strip():
            apply_script(conn, text, settings, left)

    for line in script:
        if line.startswith("COPY ") and line.rstrip().endswith("FROM stdin;"):
            flush()
            table = line.split()[1]
            rep.start(f"restore:{table}", f"restore {table}", None)
            rows = 0
            with conn.cursor().copy(line.rstrip().rstrip(";")) as copy:
                for data in script:
                    if data in ("\\.\n", "\\."):
                        break
                    copy.write(data)
                    rows += 1
                    if rows % 10_000 == 0:
                        rep.advance(f"restore:{table}", 10_000)
            counts[table] = rows
            rep.finish(f"restore:{table}", f"restored {table}: {rows:,} rows")
        else:
            pending.append(line.rstrip("\n"))
    flush()
    return counts


def restore(
    location: str,
    target: Endpoint,
    *,
    on_existing: str = "fail",
    backup: str | None = None,
    lock_wait_seconds: float = 0.0,
    reporter: Reporter | None = None,
    s3_client: Any | None = None,
) -> RestoreReport:
    """Restore the import's backup at `location` into `target`.

    Step 1 (`qckstrt-migrate extension`) must have run on the target: the backup's tables may
    need `vector` in the schema the source had it in.

    :param location: ``s3://bucket/key`` (a dump, or a prefix: its newest dump) or a directory
        (the import's ``--backup`` folder or one run's folder) or the dump file itself.
    :param on_existing: ``fail`` refuses a target that holds any of the backup's tables;
        ``replace`` keeps those tables in `backup` first, then drops what the backup creates
        (``DROP ... IF EXISTS``, no CASCADE: an object outside the backup that depends on them
        makes the restore fail and change nothing) and restores, in one transaction.
    :raises ConfigError: bad location, or ``replace`` without `backup`.
    :raises TargetNotEmpty: the target holds the tables and `on_existing` is ``fail``.
    :raises PreflightError: `vector` is missing where the backup's tables need it.
    :raises RestoreFailed: a statement failed; the target is unchanged.
    """
    rep = reporter or NullReporter()
    if on_existing not in ("fail", "replace"):
        raise ConfigError(
            f"`on_existing` {on_existing!r} is not fail or replace", setting="on_existing"
        )
    if on_existing == "replace" and not backup:
        raise ConfigError(
            "`on_existing` replace needs `backup` to keep the target's tables", setting="backup"
        )
    where = BackupLocation(backup) if backup else None  # validates the form before any work
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="qckstrt-restore-") as tmp:
        found = locate(location, Path(tmp), s3_client)
        rep.info(f"backup {found.uri}" + ("" if found.manifest else " (no manifest.json)"))
        with target_lock(target, lock_wait_seconds), target.connect(autocommit=True) as conn:
            report = _restore(conn, found, target, on_existing == "replace", where, Path(tmp), rep)
    report.seconds = round(time.monotonic() - began, 3)
    rep.info(
        f"restore complete: {len(report.tables)} tables, {report.rows:,} rows "
        f"in {report.seconds:.1f}s"
    )
    return report


def _restore(
    conn: Conn,
    found: Backup,
    target: Endpoint,
    replace: bool,
    where: BackupLocation | None,
    tmp: Path,
    rep: Reporter,
) -> RestoreReport:
    # Any pg_restore at least as new as the target reads the archive (it only writes SQL).
    tools = find_pg_tools(conn.info.server_version // 10000)
    toc = _read_toc(tools, found)
    kept = _keep(toc, found.manifest)
    tables = [(e.schema, e.tag) for e in kept if e.desc == "TABLE"]
    report = RestoreReport(found.uri, target.masked, found.manifest is not None)
    report.left_out = len(toc) - len(kept)
    existing = _existing(conn, tables)
    _check_target(conn, found, existing, replace)
    if existing:
        assert where is not None  # `restore` refuses replace without a backup location
        report.target_backup = backup_target_tables(conn, existing, where)
        rep.info(
            f"replacing {', '.join(existing)} (kept in {report.target_backup}); the backup's "
            "other objects are dropped if they exist, all in one transaction"
        )
    keep_list = tmp / "keep.list"
    keep_list.write_text("\n".join(e.line for e in kept) + "\n")
    args = restore_to_sql_args(tools, keep_list)
    if existing:
        args += ["--clean", "--if-exists"]
    schemas = sorted({s for s, _ in tables})
    extras = carry_over.read_extras(conn, existing) if existing else None
    report.tables = _stream(
        conn, [*args, str(found.dump)], schemas, rep, report.options_left_out, extras
    )
    if extras is not None and extras.restored:
        report.kept_from_target = extras.restored
        rep.info(
            "kept the target's own objects on the replaced tables (the auth step's put-back, "
            f"not in the backup): {', '.join(extras.restored)}"
        )
    for lo in report.options_left_out:
        rep.info(f"left out {lo.kind} {lo.name}: {lo.reason}")
    report.replaced = existing
    report.rows = sum(report.tables.values())
    return report


def _read_toc(tools: PgTools, found: Backup) -> list[TocEntry]:
    listing = subprocess.run(
        [str(tools.pg_restore), "-l", "-v", str(found.dump)],
        capture_output=True,
        text=True,
        check=False,
    )
    if listing.returncode != 0:
        raise ConfigError(f"{found.uri} is not a pg_dump archive: {listing.stderr.strip()[-300:]}")
    return parse_toc(listing.stdout)


def _check_target(conn: Conn, found: Backup, existing: list[str], replace: bool) -> None:
    """Refuse before anything is written: tables there without replace, `vector` missing."""
    if existing and not replace:
        raise TargetNotEmpty(
            f"the target already holds {', '.join(existing)}: nothing was changed; restore into "
            "an empty database, or use `on_existing` replace with a `backup` location to keep them "
            "there and replace them"
        )
    vector_schema = ((found.manifest or {}).get("extensions") or {}).get("vector")
    if vector_schema:
        row = conn.execute(
            "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n "
            "ON n.oid = e.extnamespace WHERE e.extname = 'vector'"
        ).fetchone()
        if row is None or row[0] != vector_schema:
            raise PreflightError(
                f"the target has no vector extension in schema {vector_schema}: run step 1 "
                "(pgvector) on the target first"
            )


def _stream(
    conn: Conn,
    args: list[str],
    schemas: list[str],
    rep: Reporter,
    left: list[LeftOut],
    extras: carry_over.TargetExtras | None = None,
) -> dict[str, int]:
    """Run pg_restore writing SQL and apply it as it comes, in one transaction."""
    settings = target_settings(conn)
    with tempfile.TemporaryFile() as err:
        # stderr to a file, not a pipe: a chatty pg_restore must never block on a full pipe
        # while this side reads its stdout.
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=err, text=True, encoding="utf-8"
        )
        assert proc.stdout is not None
        try:
            with conn.transaction():
                for schema in schemas:
                    conn.execute(
                        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
                    )
                if extras is not None:
                    carry_over.drop_policies(conn, extras)
                counts = _apply(conn, proc.stdout, settings, rep, left)
                if proc.wait() != 0:
                    err.seek(0)
                    lines = err.read().decode(errors="replace").strip().splitlines()
                    raise RestoreFailed(
                        f"pg_restore failed: {lines[-1] if lines else proc.returncode}; "
                        "nothing was changed"
                    )
                if extras is not None:
                    carry_over.put_back(conn, extras)
                if forgotten := forget_tables(conn, list(counts)):
                    rep.info(
                        f"forgot {forgotten:,} chunks' embedding state: the backup's vectors are "
                        "the source's, so the next re-index embeds them again"
                    )
        except SchemaApplyFailed as exc:
            raise RestoreFailed(f"restoring failed, nothing was changed: {exc}") from exc
        except errors.DependentObjectsStillExist as exc:
            detail = " ".join((exc.diag.message_detail or "").split())
            raise RestoreFailed(
                f"cannot replace: {exc.diag.message_primary}"
                + (f" ({detail})" if detail else "")
                + ": objects outside the backup depend on it; drop them first. Nothing was changed"
            ) from exc
        except psycopg.Error as exc:
            raise RestoreFailed(
                f"restoring failed, nothing was changed: {exc.diag.message_primary or exc}"
            ) from exc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    return counts
