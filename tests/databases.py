"""The session's embedded databases: a Supabase-shaped source and an SSL-only RDS-like target.

Start-up cost is paid once per test session (the root conftest registers `servers` for every test
folder): each test gets fresh databases (the Supabase-shaped source is copied from a template
database, which takes milliseconds).
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from migration.dev.local import LocalPostgres
from tests.migration.supabase_source import DATA_SQL, SCHEMA_SQL, roles_sql
from tests.migration.tlsproxy import TLSProxy

TEMPLATE = "supabase_template"
MASTER = "rdsmaster"
_counter = itertools.count()


@dataclass
class Servers:
    """The session's servers and the target's master credentials."""

    source: LocalPostgres
    target: LocalPostgres
    proxy: TLSProxy
    master_password: str

    def source_db(self, chunks: int | None = None) -> tuple[str, str]:
        """A fresh copy of the Supabase-shaped source: (dbname, superuser URL).

        :param chunks: keep only this many chunk rows (a small corpus keeps a re-index quick);
            the other tables stay as seeded.
        """
        name = f"src_{next(_counter)}"
        self.source.create_database(name, template=TEMPLATE)
        url = self.source.url(name)
        if chunks is not None:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(
                    "DELETE FROM public.qckstrt_embeddings_vectors WHERE id NOT IN "
                    "(SELECT id FROM public.qckstrt_embeddings_vectors ORDER BY id LIMIT %s)",
                    (chunks,),
                )
        return name, url

    def target_db(self) -> tuple[str, str]:
        """A fresh empty target database owned by the master role: (dbname, SSL URL)."""
        name = f"tgt_{next(_counter)}"
        self.target.create_database(name)
        self.target.create_master_role(MASTER, self.master_password, name)
        return name, self.target_url(name)

    def target_url(self, dbname: str, password: str | None = None, sslmode: str = "require") -> str:
        pw = password if password is not None else self.master_password
        return f"postgresql://{MASTER}:{pw}@127.0.0.1:{self.proxy.port}/{dbname}?sslmode={sslmode}"


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    base: Path = tmp_path_factory.mktemp("pg")
    source = LocalPostgres(base / "source", fast=True).start()
    target = LocalPostgres(base / "target", fast=True).start()
    proxy = TLSProxy(target.port)
    try:
        with source.superuser() as conn:
            conn.execute(roles_sql())
        source.create_database(TEMPLATE)
        with source.superuser(TEMPLATE) as conn:
            conn.execute(SCHEMA_SQL)
            psycopg.ClientCursor(conn).execute(DATA_SQL, {"users": 500, "docs": 500})
            conn.execute("ANALYZE")
        yield Servers(source, target, proxy, secrets.token_urlsafe(12))
    finally:
        proxy.close()
        source.stop()
        target.stop()
