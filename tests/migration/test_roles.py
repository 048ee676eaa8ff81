"""Supabase's service roles made by a non-superuser master; their passwords in Secrets Manager."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from moto import mock_aws

from migration.db.roles import LOGIN_ROLES, SERVICE_ROLES, SecretsManagerStore, ensure_roles
from migration.dev.local import LocalPostgres
from migration.errors import ConfigError, PreflightError


def test_store_reads_nothing_before_a_write_and_names_no_value_in_errors() -> None:
    with mock_aws():
        client = boto3.client("secretsmanager", region_name="eu-west-1")
        arns = {r: client.create_secret(Name=f"s/{r}")["ARN"] for r in LOGIN_ROLES}
        store = SecretsManagerStore(arns, client)
        assert store.read("authenticator") is None  # a secret without a value yet
        store.write("authenticator", "pw-1")
        assert store.read("authenticator") == "pw-1"
        doc = json.loads(client.get_secret_value(SecretId=arns["authenticator"])["SecretString"])
        assert doc == {"username": "authenticator", "password": "pw-1"}

        gone = {**arns, "supabase_auth_admin": arns["supabase_auth_admin"] + "-missing"}
        with pytest.raises(ConfigError) as info:
            SecretsManagerStore(gone, client).write("supabase_auth_admin", "pw-2")
        assert "supabase_auth_admin" in str(info.value) and "pw-2" not in str(info.value)

    with pytest.raises(ConfigError, match="supabase_storage_admin"):
        SecretsManagerStore({"authenticator": "a", "supabase_auth_admin": "b"}, client=object())


def test_master_makes_the_roles_once_and_refuses_one_it_cannot_administer(
    tmp_path: Path,
) -> None:
    with mock_aws(), LocalPostgres(tmp_path / "pg", fast=True) as server:
        client = boto3.client("secretsmanager", region_name="eu-west-1")
        store = SecretsManagerStore(
            {r: client.create_secret(Name=f"s/{r}")["ARN"] for r in LOGIN_ROLES}, client
        )
        server.create_database("app")
        url = server.create_master_role("master", "master-pw-1", "app")
        with server.superuser() as su:  # made by someone else: the master has no ADMIN on it
            su.execute("CREATE ROLE authenticator LOGIN")
        with psycopg.connect(url, autocommit=True) as conn:
            with pytest.raises(PreflightError, match=r"authenticator exist.*ADMIN OPTION"):
                ensure_roles(conn, store)
            assert _one(conn, "SELECT to_regrole('anon')") is None  # nothing changed
            assert store.read("supabase_auth_admin") is None
        with server.superuser() as su:
            su.execute("DROP ROLE authenticator")
        # As a run killed after storing a generated password, before the role got it, left it.
        store.write("supabase_auth_admin", "stored-before-the-kill-1")

        with psycopg.connect(url, autocommit=True) as conn:
            first = ensure_roles(conn, store)
            assert first.created == [r.name for r in SERVICE_ROLES]
            assert first.granted_to_master == ["supabase_auth_admin", "supabase_storage_admin"]
            again = ensure_roles(conn, store)
            assert not again.changed
            conn.execute("SET ROLE supabase_auth_admin")  # what ALTER ... OWNER TO needs
            assert _one(conn, "SELECT current_user") == "supabase_auth_admin"
            conn.execute("RESET ROLE")
            assert _one(
                conn,
                "SELECT array_agg(r.rolname::text ORDER BY r.rolname) FROM pg_auth_members m "
                "JOIN pg_roles r ON r.oid = m.roleid WHERE m.member = 'authenticator'::regrole",
            ) == ["anon", "authenticated", "service_role"]
        password = store.read("supabase_auth_admin")
        assert password == "stored-before-the-kill-1"  # the stored one was used, not a new one
        login = server.url("app", "supabase_auth_admin", password)
        with psycopg.connect(login) as gotrue:  # the stored password is the role's
            assert _one(gotrue, "SELECT current_setting('search_path')") == "auth"


def _one(conn: psycopg.Connection[Any], query: str) -> Any:
    row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]
