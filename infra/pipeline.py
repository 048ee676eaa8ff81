"""The data steps, declared after the database, secrets and bucket exist.

Why a component: the four dynamic resources share one connection and one order, and a preview
groups them under one node, so a pull request shows "DataSteps: re-index ~ model" rather than
four unrelated resources. Order is explicit (``depends_on``) and carried by data: each step takes
the previous one's ``run_id`` as an input, so it runs again exactly when the data before it
changed, and one data step runs at a time.

Cut-over semantics (documented in the README): once imported, later ``up``s with unchanged inputs
do nothing, even after the source is switched off; bumping ``migrationRevision`` re-imports only
together with ``migrationOnExisting: replace``; ``migrationEnabled: false`` removes these
resources from the stack and keeps the data (their ``delete`` touches nothing). The steps are
never ``protect``ed: they hold no data, so a model change can roll out in prod.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi

from infra.settings import EmbeddingSettings, MigrationSettings
from migration.providers import (
    AuthStep,
    Connection,
    DataImport,
    MigrationCheck,
    PgvectorExtension,
    Reindex,
    ReindexOptions,
    StorageCopy,
    StorageOptions,
)
from migration.steps.retrieval import RetrievalThresholds


@dataclass
class DataStepsArgs:
    """What the steps need from the rest of the stack."""

    settings: MigrationSettings
    embeddings: EmbeddingSettings
    region: str
    db_address: pulumi.Input[str]
    db_port: pulumi.Input[int]
    db_name: pulumi.Input[str]
    master_secret_arn: pulumi.Input[str]
    source_secret_arn: pulumi.Input[str]
    bucket_name: pulumi.Input[str]
    backup_prefix: str
    #: Resources that must exist before any step dials the database (instance, rules, secrets).
    depends_on: list[pulumi.Resource]
    #: The source store's keys (the storage step from an S3 source), a secret's ARN.
    storage_credentials_arn: pulumi.Input[str] | None = None
    #: Login role -> ARN of its password secret: all three with ``migrationAuth`` (the auth
    #: step), supabase_storage_admin's alone for the storage step carrying schema storage.
    role_password_arns: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)


class DataSteps(pulumi.ComponentResource):
    """pgvector setup, import, (auth, storage copy,) re-index and check, in that order."""

    def __init__(
        self, name: str, args: DataStepsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("qckstrt:data:DataSteps", name, None, opts)
        s = args.settings
        connection = Connection(
            host=s.connect_host or args.db_address,
            port=s.connect_port or args.db_port,
            database=args.db_name,
            master_secret_arn=args.master_secret_arn,
            ssl_mode=s.ssl_mode,
        )
        schemas = list(s.schemas)

        def step_opts(*after: pulumi.Resource) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(parent=self, depends_on=[*args.depends_on, *after])

        self.extension = PgvectorExtension(
            f"{name}-pgvector",
            connection,
            source_secret_arn=args.source_secret_arn,
            opts=step_opts(),
        )
        self.data_import = DataImport(
            f"{name}-import",
            connection,
            source_secret_arn=args.source_secret_arn,
            backup=pulumi.Output.concat("s3://", args.bucket_name, "/", args.backup_prefix),
            region=args.region,
            schemas=schemas,
            on_existing=s.on_existing,
            revision=s.import_revision,
            jobs=s.jobs,
            opts=step_opts(self.extension),
        )
        self.auth: AuthStep | None = None
        if s.auth_enabled and args.role_password_arns:
            self.auth = AuthStep(
                f"{name}-auth",
                connection,
                source_secret_arn=args.source_secret_arn,
                password_secret_arns=args.role_password_arns,
                after=self.data_import.run_id,
                schemas=schemas,
                jobs=s.jobs,
                opts=step_opts(self.data_import),
            )
        after_import: pulumi.Resource = self.auth or self.data_import
        self.storage: StorageCopy | None = None
        storage = _storage_options(s)
        if storage is not None:
            self.storage = StorageCopy(
                f"{name}-storage",
                connection,
                source_secret_arn=args.source_secret_arn,
                bucket=args.bucket_name,
                region=args.region,
                options=storage,
                credentials_secret_arn=args.storage_credentials_arn or "",
                after={
                    "import": self.data_import.run_id,
                    **({"auth": self.auth.run_id} if self.auth else {}),
                },
                opts=step_opts(after_import),
                password_secret_arn=args.role_password_arns.get("supabase_storage_admin", ""),
                schemas=schemas,
            )
        before_reindex: pulumi.Resource = self.storage or after_import
        self.reindex = Reindex(
            f"{name}-reindex",
            connection,
            ReindexOptions(
                model=args.embeddings.model,
                dimensions=args.embeddings.dimensions,
                table=s.vector_table,
                batch_size=s.batch_size,
                device=s.device,
                hnsw_m=s.hnsw_m,
                hnsw_ef_construction=s.hnsw_ef_construction,
                revision=s.reindex_revision,
                ef_search=s.ef_search,
                iterative_scan=s.iterative_scan,
                max_scan_tuples=s.max_scan_tuples,
            ),
            after={"import": self.data_import.run_id},
            opts=step_opts(before_reindex),
        )
        self.check = MigrationCheck(
            f"{name}-check",
            connection,
            source_secret_arn=args.source_secret_arn,
            after={
                "extension": self.extension.run_id,
                "import": self.data_import.run_id,
                "reindex": self.reindex.run_id,
                **({"auth": self.auth.run_id} if self.auth else {}),
                **({"storage": self.storage.run_id} if self.storage else {}),
            },
            schemas=schemas,
            table=s.vector_table,
            storage=(args.bucket_name, storage) if storage is not None else None,
            opts=step_opts(self.reindex),
            retrieval=RetrievalThresholds(
                sample_size=s.retrieval_sample, max_short_results=s.max_short_results
            ),
        )
        self.register_outputs(
            {
                "vectorVersion": self.extension.vector_version,
                "backupUri": self.data_import.backup_uri,
                "rowsImported": self.data_import.rows,
                "rowsEmbedded": self.reindex.rows_embedded,
                "indexName": self.reindex.index_name,
                "verified": self.check.ok,
                "filesCopied": self.storage.objects if self.storage else None,
                "authRowsCarried": self.auth.rows if self.auth else None,
            }
        )


def _storage_options(s: MigrationSettings) -> StorageOptions | None:
    """The storage step's options when a source backend is named (else no storage step)."""
    if not s.copies_files:
        return None
    return StorageOptions(
        source_path=s.storage_source_path,
        source_bucket=s.storage_source_bucket,
        source_endpoint=s.storage_source_endpoint,
        tenant=s.storage_tenant,
        allow_missing=s.allow_missing_objects,
        storage_schema=s.storage_schema,
    )
