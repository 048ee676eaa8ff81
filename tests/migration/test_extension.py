"""Step 1 against the SSL-only target with a non-superuser master role."""

from __future__ import annotations

import psycopg
import pytest

from migration.db.connection import Endpoint
from migration.dev.local import LocalPostgres
from migration.errors import ExtensionUnavailable
from migration.steps.extension import setup_extension
from tests.migration.conftest import Servers


def test_creates_vector_where_the_source_has_it_and_app_sql_resolves(
    servers: Servers, source_url: str, target: tuple[str, str]
) -> None:
    _, url = target
    report = setup_extension(Endpoint(url, "target"), Endpoint(source_url, "source"))
    assert report.vector_schema == "extensions"
    assert report.vector_created
    assert report.vector_version in report.available_versions
    assert report.uuid_generate_v4 == "stand-in"
    assert any("stand-in" in n for n in report.notes)
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE t (id uuid DEFAULT uuid_generate_v4(), e vector(3))")
        conn.execute("INSERT INTO t (e) VALUES ('[1,0,0]'), ('[0,1,0]')")
        row = conn.execute("SELECT id FROM t ORDER BY e <=> '[1,0,0]' LIMIT 1").fetchone()
        assert row is not None and row[0] is not None
    again = setup_extension(Endpoint(url, "target"), Endpoint(source_url, "source"))
    assert not again.vector_created


def test_vector_in_public_without_source(target: tuple[str, str]) -> None:
    _, url = target
    report = setup_extension(Endpoint(url, "target"))
    assert report.vector_schema == "public"
    assert report.extensions_schema is None


def _schemas(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {str(r[0]) for r in conn.execute("SELECT nspname FROM pg_namespace").fetchall()}


@pytest.mark.parametrize("mode", ["absent", "untrusted"])
def test_missing_or_forbidden_vector_fails_clearly_and_changes_nothing(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory, source_url: str, mode: str
) -> None:
    server = LocalPostgres(tmp_path_factory.mktemp(mode) / "data", vector=mode, fast=True)  # type: ignore[arg-type]
    server.start()
    try:
        server.create_database("app")
        url = server.create_master_role("master", "pw-1", "app")
        before = _schemas(url)
        with pytest.raises(ExtensionUnavailable) as info:
            setup_extension(Endpoint(url, "target"), Endpoint(source_url, "source"))
        if mode == "absent":
            assert "pgvector is not available" in str(info.value)
        else:
            assert "may not create extension vector" in str(info.value)
        assert _schemas(url) == before
    finally:
        server.stop()
