"""The import's pure decisions for real sources (issue 15), without a database: which TLS
context a URL's ``sslmode`` asks for, when a client binary goes through the loopback bridge and
what it is then given, how a dump's statements and option lists are cut, which TOC entries are
replayed, which column types may go by binary COPY, and the session settings every connection
carries.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from migration.db.connection import SESSION_OPTIONS, Endpoint
from migration.db.copying import FIRST_USER_OID, ColumnType, binary_portable
from migration.db.pgtools import parse_toc
from migration.db.schema_apply import _option_lists, _rewrite, filter_toc, split_statements
from migration.db.supabase import LeftOut
from migration.db.tlsbridge import client_context, supports_ssl, tool_connection
from migration.dev.local import wheel_bin_dir
from migration.errors import ConfigError
from tests.migration.tlsproxy import make_certificate


@pytest.fixture
def no_libpq_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No PGSSLMODE/PGSSLROOTCERT from the shell and no ~/.postgresql/root.crt: a home of
    its own, returned so a test can put a root certificate there."""
    for name in ("PGSSLMODE", "PGSSLROOTCERT", "PGHOST", "PGPORT", "PGOPTIONS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


@pytest.fixture(scope="module")
def embedded_pg_dump() -> Path:
    """The embedded wheel's pg_dump: what ``make install`` provides, built without SSL."""
    try:
        return wheel_bin_dir() / "pg_dump"
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("ca")
    make_certificate(directory)
    return directory / "ca.crt"


# --- sslmode -> TLS context, as libpq decides ---------------------------------------------


@pytest.mark.usefixtures("no_libpq_env")
@pytest.mark.parametrize("mode", ["require", "prefer", "allow"])
def test_require_without_a_root_certificate_encrypts_without_verifying(mode: str) -> None:
    ctx, effective = client_context({"sslmode": mode}, "db.example")
    assert effective == mode
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname


@pytest.mark.usefixtures("no_libpq_env")
def test_require_with_a_root_certificate_verifies_the_chain_as_libpq_does(ca: Path) -> None:
    ctx, effective = client_context({"sslmode": "require", "sslrootcert": str(ca)}, "h")
    assert effective == "verify-ca"
    assert ctx.verify_mode == ssl.CERT_REQUIRED and not ctx.check_hostname


def test_the_default_root_certificate_in_home_counts_like_sslrootcert(
    no_libpq_env: Path, ca: Path
) -> None:
    (no_libpq_env / ".postgresql").mkdir()
    (no_libpq_env / ".postgresql" / "root.crt").write_bytes(ca.read_bytes())
    ctx, effective = client_context({"sslmode": "verify-full"}, "h")
    assert effective == "verify-full"
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


@pytest.mark.usefixtures("no_libpq_env")
def test_verify_ca_checks_the_chain_and_verify_full_the_host_name_too(ca: Path) -> None:
    ctx, _ = client_context({"sslmode": "verify-ca", "sslrootcert": str(ca)}, "h")
    assert ctx.verify_mode == ssl.CERT_REQUIRED and not ctx.check_hostname
    ctx, _ = client_context({"sslmode": "verify-full", "sslrootcert": str(ca)}, "h")
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


def test_the_environment_stands_in_for_the_url(
    monkeypatch: pytest.MonkeyPatch, no_libpq_env: Path, ca: Path
) -> None:
    monkeypatch.setenv("PGSSLMODE", "verify-full")
    monkeypatch.setenv("PGSSLROOTCERT", str(ca))
    ctx, effective = client_context({}, "h")
    assert effective == "verify-full" and ctx.check_hostname


@pytest.mark.usefixtures("no_libpq_env")
@pytest.mark.parametrize("mode", ["verify-ca", "verify-full"])
def test_verification_without_a_root_certificate_says_what_to_give(mode: str) -> None:
    with pytest.raises(ConfigError, match=rf"sslmode={mode} needs sslrootcert=.*global-bundle"):
        client_context({"sslmode": mode}, "h")


@pytest.mark.usefixtures("no_libpq_env")
def test_an_unreadable_root_certificate_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(ConfigError, match=rf"sslrootcert {missing}: cannot be read"):
        client_context({"sslmode": "verify-ca", "sslrootcert": str(missing)}, "h")
    not_pem = tmp_path / "junk.pem"
    not_pem.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="cannot be read"):
        client_context({"sslmode": "verify-ca", "sslrootcert": str(not_pem)}, "h")


# --- when a client binary is bridged, and what it is given ---------------------------------


def test_the_embedded_pg_dump_has_no_ssl(embedded_pg_dump: Path) -> None:
    """The premise of the bridge: what ``make install`` provides cannot speak SSL itself."""
    assert not supports_ssl(embedded_pg_dump)


@pytest.mark.usefixtures("no_libpq_env")
def test_an_ssl_url_for_an_ssl_less_tool_goes_through_a_loopback_bridge(
    embedded_pg_dump: Path, ca: Path
) -> None:
    url = (
        "postgresql://app:S3cret-pw@db.example:6543/app"
        f"?sslmode=verify-full&sslrootcert={ca}&options=-c%20statement_timeout%3D0"
    )
    with tool_connection(Endpoint(url, "source"), embedded_pg_dump) as (info, env):
        params = dict(part.split("=", 1) for part in info.split())
    # The tool dials the bridge in plain protocol; the bridge holds the SSL settings.
    assert params["host"] == "127.0.0.1" and params["port"] != "6543"
    assert params["sslmode"] == "disable" and "sslrootcert" not in params
    assert "S3cret-pw" not in info and env["PGPASSWORD"] == "S3cret-pw"
    assert env["PGOPTIONS"] == f"-c statement_timeout=0 {SESSION_OPTIONS}"
    assert env["PGCLIENTENCODING"] == "UTF8"


@pytest.mark.usefixtures("no_libpq_env")
@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:pw@db.example/app?sslmode=disable",  # no SSL asked for
        "postgresql://app:pw@/app?host=/var/run/postgresql&sslmode=require",  # a socket
    ],
)
def test_no_bridge_where_no_ssl_can_be_involved(url: str, embedded_pg_dump: Path) -> None:
    endpoint = Endpoint(url, "source")
    with tool_connection(endpoint, embedded_pg_dump) as (info, _):
        assert info == endpoint.libpq_env()[0]


@pytest.mark.usefixtures("no_libpq_env")
def test_several_hosts_cannot_be_bridged_and_the_message_names_the_setting(
    embedded_pg_dump: Path,
) -> None:
    endpoint = Endpoint("postgresql://app:pw@a.example,b.example/app?sslmode=require", "source")
    with (
        pytest.raises(ConfigError, match=r"several hosts.*SSL-capable.*`pg_dump`"),
        tool_connection(endpoint, embedded_pg_dump),
    ):
        pass


def test_every_engine_session_asks_for_exact_floats_and_utf8() -> None:
    params = Endpoint("postgresql://u@h/db?options=-c%20search_path%3Dapp").params()
    assert params["options"] == f"-c search_path=app {SESSION_OPTIONS}"
    assert "extra_float_digits=3" in SESSION_OPTIONS
    assert params["client_encoding"] == "UTF8"
    assert Endpoint("postgresql://u@h/db").params()["options"] == SESSION_OPTIONS


# --- cutting a dump's SQL --------------------------------------------------------------------


def test_statements_split_at_top_level_semicolons_only() -> None:
    text = (
        "-- a comment; not a statement\n"
        "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $body$ SELECT 'a;b' $body$;\n"
        "COMMENT ON TABLE t IS 'it''s; fine';\n"
        'CREATE TABLE "odd;name" (id int); /* trailing; comment */\n'
        "SELECT E'\\';';\n"
    )
    statements = [s.strip() for s in split_statements(text)]
    assert len(statements) == 4, statements
    assert statements[0].endswith("$body$;") and "'a;b'" in statements[0]
    assert statements[1].endswith("'it''s; fine';")
    assert statements[2] == 'CREATE TABLE "odd;name" (id int);'
    assert statements[3].endswith("*/\nSELECT E'\\';';")


def test_column_options_are_found_and_cut_one_by_one() -> None:
    statement = "ALTER TABLE ONLY public.t ALTER COLUMN id SET (pg_attver=1, n_distinct=5);"
    (lst,) = _option_lists(statement)
    assert lst.keyword == "SET" and lst.items == ["pg_attver=1", "n_distinct=5"]
    assert _rewrite(statement, lst, ["n_distinct=5"]) == (
        "ALTER TABLE ONLY public.t ALTER COLUMN id SET (n_distinct=5);"
    )
    # Nothing left to set: the statement itself goes.
    assert _rewrite(statement, lst, []) == ""


def test_storage_parameters_of_a_create_are_cut_and_the_with_goes_when_empty() -> None:
    statement = "CREATE TABLE public.t (\n    id integer\n)\nWITH (fillfactor='90', foo.bar=1);"
    (lst,) = _option_lists(statement)
    assert lst.keyword == "WITH" and lst.items == ["fillfactor='90'", "foo.bar=1"]
    assert _rewrite(statement, lst, ["fillfactor='90'"]).endswith("WITH (fillfactor='90');")
    assert _rewrite(statement, lst, []) == "CREATE TABLE public.t (\n    id integer\n)\n;"


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE VIEW v WITH (security_barrier) AS SELECT 1 AS x;",  # bare names are options too
        "CREATE TABLE t (id int) WITH (autovacuum_enabled=false);",
    ],
)
def test_option_lists_of_bare_names_and_booleans_are_recognised(statement: str) -> None:
    assert len(_option_lists(statement)) == 1


def test_parentheses_that_are_not_option_lists_are_left_alone() -> None:
    # A CTE, a default in parentheses, function calls: none is a list of options.
    statement = "CREATE VIEW v AS WITH x AS (SELECT 1 AS a) SELECT a, lower('A') FROM x;"
    assert _option_lists(statement) == []
    statement = "ALTER TABLE t ALTER COLUMN c SET DEFAULT (now() + interval '1 day');"
    assert _option_lists(statement) == []


# --- which TOC entries are replayed ----------------------------------------------------------

TOC = """;
3; 2615 2200 SCHEMA - public pg_database_owner
4; 3079 16385 EXTENSION - vector
215; 1259 16390 TABLE public users postgres
216; 1259 16400 FUNCTION public vault_read_secret(text) postgres
217; 0 0 COMMENT public FUNCTION vault_read_secret(text) postgres
;\tdepends on: 216
218; 2620 16420 TRIGGER public users users_audit postgres
;\tdepends on: 216 215
3500; 0 0 ACL - SCHEMA public pg_database_owner
3501; 0 0 ACL public TABLE users postgres
3600; 6104 16500 PUBLICATION - supabase_realtime postgres
3700; 0 0 DATABASE PROPERTIES - postgres postgres
"""


def test_filter_toc_keeps_the_app_and_names_every_reason_for_the_rest() -> None:
    toc = parse_toc(TOC)
    vault = LeftOut("function", "public.vault_read_secret(text)", "calls vault")
    kept, left = filter_toc(toc, {("function", 16400): vault})
    assert [e.dump_id for e in kept] == [215]
    by_name = {lo.name: lo for lo in left}
    assert by_name["public.vault_read_secret(text)"] is vault
    assert by_name["public.users users_audit"].reason == (
        "depends on left-out function public.vault_read_secret(text)"
    )
    assert by_name["-.supabase_realtime"].kind == "publication"
    assert by_name["2 GRANT/REVOKE entries"].kind == "grants"
    assert by_name["public.FUNCTION vault_read_secret(text)"].kind == "comment"
    assert by_name["postgres"].kind == "owners"
    # Schemas, extensions and database properties are the engine's (or the cluster's): left
    # out without a line in the report.
    assert len(left) == 6


# --- binary COPY only for types whose binary form is portable ------------------------------

INT4 = ColumnType(23, "int4", "b")
TEXT = ColumnType(25, "text", "b")
FLOAT8 = ColumnType(701, "float8", "b")
TSVECTOR = ColumnType(3614, "tsvector", "b")
VECTOR = ColumnType(FIRST_USER_OID + 10, "vector", "b")
HALFVEC = ColumnType(FIRST_USER_OID + 11, "halfvec", "b")
ENUM = ColumnType(FIRST_USER_OID + 20, "documents_status_enum", "e")
COMPOSITE = ColumnType(FIRST_USER_OID + 30, "address", "c")
CITEXT = ColumnType(FIRST_USER_OID + 40, "citext", "b")


def _array(element: ColumnType) -> ColumnType:
    return ColumnType(element.oid + 1000, f"_{element.name}", "b", element)


@pytest.mark.parametrize(
    ("types", "binary"),
    [
        ([INT4, TEXT, FLOAT8], True),
        ([INT4, VECTOR, HALFVEC], True),  # pgvector's: plain big-endian floats
        ([INT4, ENUM], True),  # enums go by label
        ([_array(INT4), _array(TEXT)], True),  # arrays of built-ins
        ([], True),
        ([INT4, TSVECTOR], False),  # tsvectorrecv faults on arm64 (pgcopydb #994)
        ([_array(TSVECTOR)], False),
        ([INT4, COMPOSITE], False),  # carries type OIDs that differ between servers
        ([_array(ENUM)], False),  # an array header carries its element's OID
        ([_array(VECTOR)], False),
        ([INT4, CITEXT], False),  # another extension's type: unknown binary form
    ],
)
def test_binary_copy_only_where_every_column_type_is_portable(
    types: list[ColumnType], binary: bool
) -> None:
    assert binary_portable(types) is binary
