"""Secrets Manager entries: the source database URL and the app's production configuration.

Named ``app_secrets`` rather than ``secrets``: Pulumi runs ``infra/`` with that folder first on
``sys.path``, where a ``secrets.py`` would shadow the standard library module of that name.

Why the app config holds the master secret's ARN and not a password: RDS generates and rotates
the password in its own secret; copying it would leave a stale, unrotated duplicate behind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import pulumi
import pulumi_aws as aws

from infra.settings import SecretSettings
from migration.db.roles import LOGIN_ROLES, STORAGE_PASSWORDS


@dataclass
class AppConfigInputs:
    """Resource outputs the app's production settings are built from."""

    db_host: pulumi.Input[str]
    db_port: pulumi.Input[int]
    db_name: pulumi.Input[str]
    db_username: pulumi.Input[str]
    db_master_secret_arn: pulumi.Input[str]
    vector_dimensions: int
    xenova_model: str
    llm_url: pulumi.Input[str]
    llm_model: str
    bucket_name: pulumi.Input[str]
    region: str
    storage_tenant_id: str = "stub"
    #: Login role -> ARN of its password secret (the auth step fills them); empty: no auth step.
    role_password_arns: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    #: ARN of the secret holding GoTrue's JWT secret; None when not configured.
    gotrue_jwt_secret_arn: pulumi.Input[str] | None = None


@dataclass
class AppSecretsArgs:
    settings: SecretSettings
    stack: str
    protect: bool
    kms_key_arn: pulumi.Input[str]
    app_config: AppConfigInputs
    tags: dict[str, str]
    #: Declare the login roles' password secrets (``migrationAuth``).
    auth_roles: bool = False
    #: Declare supabase_storage_admin's password secret (the storage step carrying schema
    #: storage without the auth step makes that role itself); implied by `auth_roles`.
    storage_role: bool = False


def app_config_document(c: AppConfigInputs) -> pulumi.Output[str]:
    """The JSON the app reads at start; every value comes from a resource output or setting."""
    return pulumi.Output.json_dumps(
        {
            "RELATIONAL_DB_PROVIDER": "postgres",
            "RELATIONAL_DB_HOST": c.db_host,
            "RELATIONAL_DB_PORT": pulumi.Output.from_input(c.db_port).apply(str),
            "RELATIONAL_DB_DATABASE": c.db_name,
            "RELATIONAL_DB_USERNAME": c.db_username,
            "RELATIONAL_DB_SSL": "true",
            # The password stays in the RDS-managed secret; the app resolves it by this ARN.
            "RELATIONAL_DB_PASSWORD_SECRET_ARN": c.db_master_secret_arn,
            "VECTOR_DB_PROVIDER": "pgvector",
            "VECTOR_DB_DIMENSIONS": str(c.vector_dimensions),
            "EMBEDDINGS_PROVIDER": "xenova",
            "EMBEDDINGS_XENOVA_MODEL": c.xenova_model,
            "LLM_URL": c.llm_url,
            "LLM_MODEL": c.llm_model,
            "FILE_STORAGE_PROVIDER": "s3",
            "FILE_STORAGE_BUCKET": c.bucket_name,
            "AWS_REGION": c.region,
            # storage-api, kept with the S3 backend: its own variable names, so its
            # environment is these values as they stand (its files are in the same bucket).
            "STORAGE_BACKEND": "s3",
            "GLOBAL_S3_BUCKET": c.bucket_name,
            "TENANT_ID": c.storage_tenant_id,
            "REGION": c.region,
            **_service_entries(c),
        }
    )


#: App-config prefix of each service's login role.
_SERVICE_LOGINS = (
    ("GOTRUE", "supabase_auth_admin"),
    ("STORAGE", "supabase_storage_admin"),
    ("AUTHENTICATOR", "authenticator"),
)


def _service_entries(c: AppConfigInputs) -> dict[str, pulumi.Input[str]]:
    """What GoTrue and storage-api need on RDS: their roles and where their passwords are.

    The database's host, port and name are the RELATIONAL_DB_* entries above; the passwords
    stay in their secrets (ARNs here, never values), as does GoTrue's JWT secret.
    """
    out: dict[str, pulumi.Input[str]] = {}
    arns = c.role_password_arns
    for prefix, role in _SERVICE_LOGINS:
        if role in arns:
            out[f"{prefix}_DB_USERNAME"] = role
            out[f"{prefix}_DB_PASSWORD_SECRET_ARN"] = arns[role]
    if c.gotrue_jwt_secret_arn is not None:
        out["GOTRUE_JWT_SECRET_ARN"] = c.gotrue_jwt_secret_arn
    return out


class AppSecrets(pulumi.ComponentResource):
    """``qckstrt/<stack>/app-config`` and, when set, ``qckstrt/<stack>/source-database-url`` and
    ``qckstrt/<stack>/source-storage-credentials``."""

    app_config_arn: pulumi.Output[str]
    source_database_url_arn: pulumi.Output[str] | None
    source_storage_credentials_arn: pulumi.Output[str] | None

    def __init__(self, name: str, args: AppSecretsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("qckstrt:secrets:AppSecrets", name, None, opts)
        self._args = args
        self._name = name
        # Before app-config, which names them by ARN.
        self.role_password_arns: dict[str, pulumi.Output[str]] = {}
        roles = LOGIN_ROLES if args.auth_roles else STORAGE_PASSWORDS if args.storage_role else ()
        self.role_password_arns = {
            role: self._empty_secret(
                f"db-role-{role.replace('_', '-')}",
                f"Password of the database role {role} ({{username, password}}); generated "
                "and written by the auth step (or the storage step), never in stack state",
            ).arn
            for role in roles
        }
        self.gotrue_jwt_secret_arn: pulumi.Output[str] | None = None
        if args.settings.gotrue_jwt_secret is not None:
            self.gotrue_jwt_secret_arn = self._secret(
                "gotrue-jwt-secret",
                "GoTrue's JWT secret (GOTRUE_JWT_SECRET), the source's, so tokens stay valid",
                args.settings.gotrue_jwt_secret,
            ).arn
        config = replace(
            args.app_config,
            role_password_arns=dict(self.role_password_arns),
            gotrue_jwt_secret_arn=self.gotrue_jwt_secret_arn,
        )
        app_config = self._secret(
            "app-config",
            "QCKSTRT production settings (JSON); the DB password is in the RDS-managed secret",
            app_config_document(config),
        )
        self.app_config_arn = app_config.arn
        self.source_database_url_arn = None
        url = args.settings.source_database_url
        if url is not None:
            source = self._secret(
                "source-database-url",
                "PostgreSQL URL of the Supabase source database (read by the data import)",
                url,
            )
            self.source_database_url_arn = source.arn
        self.source_storage_credentials_arn = None
        keys = args.settings.source_storage_credentials
        if keys is not None:
            self.source_storage_credentials_arn = self._secret(
                "source-storage-credentials",
                "Keys of the source storage-api's S3 store (read by the storage step)",
                keys,
            ).arn
        self.register_outputs(
            {
                "appConfigArn": self.app_config_arn,
                "sourceDatabaseUrlArn": self.source_database_url_arn,
                "sourceStorageCredentialsArn": self.source_storage_credentials_arn,
                "rolePasswordArns": self.role_password_arns,
                "gotrueJwtSecretArn": self.gotrue_jwt_secret_arn,
            }
        )

    def _empty_secret(self, suffix: str, description: str) -> aws.secretsmanager.Secret:
        """A secret without a version: its value is written by a data step, not by Pulumi."""
        a = self._args
        return aws.secretsmanager.Secret(
            f"{self._name}-{suffix}",
            name=f"qckstrt/{a.stack}/{suffix}",
            description=description,
            kms_key_id=a.kms_key_arn,
            recovery_window_in_days=a.settings.recovery_window_days,
            tags=a.tags,
            opts=pulumi.ResourceOptions(parent=self, protect=a.protect),
        )

    def _secret(
        self, suffix: str, description: str, value: pulumi.Input[str]
    ) -> aws.secretsmanager.Secret:
        secret = self._empty_secret(suffix, description)
        aws.secretsmanager.SecretVersion(
            f"{self._name}-{suffix}-version",
            secret_id=secret.id,
            # Marked secret whatever its origin, so state and previews show it encrypted.
            secret_string=pulumi.Output.secret(value),
            opts=pulumi.ResourceOptions(parent=self),
        )
        return secret
