"""The QCKSTRT production stack: read settings once, build components, pass outputs on, export."""

from __future__ import annotations

import pulumi

from infra import settings as stack_settings
from infra.app_secrets import AppConfigInputs, AppSecrets, AppSecretsArgs
from infra.database import Database, DatabaseArgs
from infra.encryption import StackKey, StackKeyArgs
from infra.llm_host import LlmHost, LlmHostArgs
from infra.monitoring import Monitoring, MonitoringArgs
from infra.network import Network, NetworkArgs
from infra.pipeline import DataSteps, DataStepsArgs
from infra.storage import Storage, StorageArgs
from infra.storage_access import StorageApiAccess, StorageApiAccessArgs

s = stack_settings.load()
prefix = s.name_prefix

key = StackKey(
    prefix,
    StackKeyArgs(
        deletion_window_days=s.database.kms_key_deletion_window_days,
        protect=s.protect,
        tags=s.tags,
    ),
)
network = Network(prefix, NetworkArgs(settings=s.network, tags=s.tags))
database = Database(
    prefix,
    DatabaseArgs(
        settings=s.database,
        production=s.production,
        protect=s.protect,
        subnet_ids=network.public_subnet_ids
        if s.database.publicly_accessible
        else network.private_subnet_ids,
        security_group_id=network.database_security_group_id,
        kms_key_arn=key.key_arn,
        kms_key_id=key.key_id,
        tags=s.tags,
    ),
)
storage = Storage(
    prefix,
    StorageArgs(settings=s.storage, protect=s.protect, kms_key_arn=key.key_arn, tags=s.tags),
)
storage_api = StorageApiAccess(
    prefix,
    StorageApiAccessArgs(
        bucket_arn=storage.bucket_arn,
        kms_key_arn=key.key_arn,
        tenant_id=s.migration.storage_tenant,
        region=s.region,
        tags=s.tags,
    ),
)
llm = LlmHost(
    prefix,
    LlmHostArgs(
        settings=s.llm,
        subnet_id=network.private_subnet_ids[0],
        security_group_id=network.llm_security_group_id,
        kms_key_arn=key.key_arn,
        tags=s.tags,
    ),
)
secrets = AppSecrets(
    prefix,
    AppSecretsArgs(
        settings=s.secrets,
        stack=s.stack,
        protect=s.protect,
        kms_key_arn=key.key_arn,
        auth_roles=s.migration.auth_enabled,
        storage_role=s.migration.storage_role_secret,
        app_config=AppConfigInputs(
            db_host=database.address,
            db_port=database.port,
            db_name=database.name,
            db_username=database.master_username,
            db_master_secret_arn=database.master_secret_arn,
            vector_dimensions=s.embeddings.dimensions,
            xenova_model=s.embeddings.xenova_model,
            llm_url=llm.url,
            llm_model=s.llm.model,
            bucket_name=storage.bucket_name,
            region=s.region,
            storage_tenant_id=s.migration.storage_tenant,
        ),
        tags=s.tags,
    ),
)
Monitoring(
    prefix,
    MonitoringArgs(
        settings=s.monitoring,
        db_instance_identifier=database.instance_identifier,
        llm_instance_id=llm.instance_id,
        kms_key_id=key.key_id,
        tags=s.tags,
    ),
)

if s.migration.enabled:
    # settings.validate refuses migrationEnabled without sourceDatabaseUrl.
    assert secrets.source_database_url_arn is not None
    steps = DataSteps(
        f"{prefix}-data",
        DataStepsArgs(
            settings=s.migration,
            embeddings=s.embeddings,
            region=s.region,
            db_address=database.address,
            db_port=database.port,
            db_name=database.name,
            master_secret_arn=database.master_secret_arn,
            source_secret_arn=secrets.source_database_url_arn,
            bucket_name=storage.bucket_name,
            backup_prefix=f"migration/{s.stack}",
            depends_on=[database, network, secrets, storage],
            storage_credentials_arn=secrets.source_storage_credentials_arn,
            role_password_arns=secrets.role_password_arns,
        ),
    )
    pulumi.export("migrationBackupUri", steps.data_import.backup_uri)
    pulumi.export("migrationRowsImported", steps.data_import.rows)
    pulumi.export("migrationIndexName", steps.reindex.index_name)
    pulumi.export("migrationVerified", steps.check.ok)

pulumi.export("dbEndpoint", database.address)
pulumi.export("dbPort", database.port)
pulumi.export("dbName", database.name)
pulumi.export("dbMasterSecretArn", database.master_secret_arn)
pulumi.export("appSecurityGroupId", network.app_security_group_id)
pulumi.export("privateSubnetIds", network.private_subnet_ids)
pulumi.export("kmsKeyArn", key.key_arn)
pulumi.export("appConfigSecretArn", secrets.app_config_arn)
pulumi.export("bucketName", storage.bucket_name)
pulumi.export("storageApiPolicyArn", storage_api.policy_arn)
pulumi.export("llmUrl", llm.url)
