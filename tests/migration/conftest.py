"""Fixtures of the data-step tests: fresh databases on the session's servers.

The servers themselves (`servers`) come from the root conftest, shared with ``tests/e2e``.
"""

from __future__ import annotations

import pytest

from tests.databases import MASTER, TEMPLATE, Servers
from tests.migration.supabase_auth import auth_source

# auth_source (session): declared here once, so that every module shares one GoTrue template.
__all__ = ["MASTER", "TEMPLATE", "Servers", "auth_source"]


@pytest.fixture
def source_url(servers: Servers) -> str:
    return servers.source_db()[1]


@pytest.fixture
def target(servers: Servers) -> tuple[str, str]:
    """(dbname, SSL URL of the master user) of a fresh target database."""
    return servers.target_db()
