"""The password store of the service roles: Secrets Manager by ARN (moto), values never echoed."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from migration.errors import ConfigError
from migration.roles import LOGIN_ROLES, SecretsManagerStore


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
