"""Typed, validated stack settings: the one place that reads ``pulumi.Config``.

Why a registry of keys: Pulumi.yaml declares each key's type and default, the README documents
each key, and this module reads them. :data:`KEYS` is the single list all three are checked
against (``tests/infra/test_settings.py``), so a key cannot be added in one place and forgotten
in another. The data steps' keys are not written here: they come from their settings'
declarations in ``migration.options`` (`_declared`), which also give `MigrationSettings` its
fields and judge their values (`_validate_declared`), as the CLI and the providers do.
Validation happens before any resource is declared, so a bad value fails ``pulumi preview``
with the key's name and the fix instead of failing half-way through ``up``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pulumi
from pulumi.runtime.config import get_config, is_config_secret

from migration import options
from migration.backends.models import xenova_name

PROJECT = "qckstrt"
KeyType = Literal["string", "integer", "boolean", "array"]


@dataclass(frozen=True)
class Key:
    """One configuration key of the project namespace."""

    name: str
    type: KeyType
    default: Any
    description: str
    secret: bool = False


#: Data-step keys declared in migration.options (with the embedding keys, which the app shares).
_EMBEDDING_KEYS = ("embeddingModel", "vectorDimensions")


def _declared(key: str) -> Key:
    """The stack key of a data-step setting, as ``migration.options`` declares it."""
    setting = options.by_key(key)
    assert setting.type != "number", f"{key}: Pulumi.yaml declares no float keys"
    described = options.render(setting.help, lambda s: f"`{options.pulumi_name(s)}`")
    return Key(key, setting.type, setting.default, described)


def stack_words(message: str) -> str:
    """A data-step message in the stack's words: settings by their config keys."""
    return options.render(message, options.pulumi_name)


KEYS: tuple[Key, ...] = (
    # General
    Key(
        "production",
        "boolean",
        False,
        "Marks a production stack: enforces Multi-AZ, deletion protection, a final snapshot, "
        "resource protection and no public database.",
    ),
    Key(
        "protectStatefulResources",
        "boolean",
        False,
        "Sets Pulumi `protect` on the database, KMS key, bucket and secrets so that "
        "`pulumi destroy` refuses to delete them. Required when `production` is true.",
    ),
    # Network
    Key(
        "vpcCidr",
        "string",
        "10.0.0.0/16",
        "CIDR of the VPC this stack creates (ignored with `existingVpcId`). /16 to /24.",
    ),
    Key(
        "natGatewayPerAz",
        "boolean",
        False,
        "One NAT gateway per availability zone (resilient, dearer) instead of one for the VPC.",
    ),
    Key(
        "existingVpcId",
        "string",
        "",
        "Use this VPC instead of creating one; subnets then come from the two keys below.",
    ),
    Key(
        "existingPublicSubnetIds",
        "array",
        [],
        "Public subnets of `existingVpcId` (needed only with `dbPubliclyAccessible`).",
    ),
    Key(
        "existingPrivateSubnetIds",
        "array",
        [],
        "Private subnets of `existingVpcId`, in at least two availability zones.",
    ),
    Key(
        "operatorCidrs",
        "array",
        [],
        "CIDRs allowed to reach PostgreSQL on 5432 when `dbPubliclyAccessible` is true "
        "(operators running the data steps). Never 0.0.0.0/0.",
    ),
    # Database
    Key(
        "dbEngineVersion",
        "string",
        "16",
        'RDS PostgreSQL engine version: a 16.x minor or "16" for the latest 16 minor.',
    ),
    Key("dbInstanceClass", "string", "db.t4g.medium", "RDS instance class."),
    Key("dbAllocatedStorageGb", "integer", 20, "Initial gp3 storage in GiB."),
    Key(
        "dbMaxAllocatedStorageGb",
        "integer",
        100,
        "Storage autoscaling ceiling in GiB (greater than `dbAllocatedStorageGb`).",
    ),
    Key("dbName", "string", "qckstrt", "Name of the application database."),
    Key(
        "dbMasterUsername",
        "string",
        "qckstrt_admin",
        "Master user; its password is generated and kept by RDS in Secrets Manager.",
    ),
    Key("dbMultiAz", "boolean", False, "Multi-AZ standby (required in production)."),
    Key(
        "dbDeletionProtection",
        "boolean",
        False,
        "RDS deletion protection (required in production).",
    ),
    Key(
        "dbSkipFinalSnapshot",
        "boolean",
        False,
        "Delete the database without a final snapshot (staging only; refused in production).",
    ),
    Key(
        "dbBackupRetentionDays",
        "integer",
        7,
        "Automated backup retention, 1 to 35 days (at least 7 in production).",
    ),
    Key(
        "dbPubliclyAccessible",
        "boolean",
        False,
        "Place the database in public subnets, reachable from `operatorCidrs` only "
        "(staging convenience for running data steps from a laptop; refused in production).",
    ),
    Key(
        "dbMaintenanceWorkMemMb",
        "integer",
        1024,
        "`maintenance_work_mem` in MiB for the parameter group: HNSW index builds are much "
        "faster when the graph fits in it. 64 to 2047.",
    ),
    Key(
        "dbSlowQueryMs",
        "integer",
        1000,
        "`log_min_duration_statement`: statements slower than this are logged (-1 disables).",
    ),
    Key(
        "dbPerformanceInsightsRetentionDays",
        "integer",
        7,
        "Performance Insights retention: 7 (free), 731, or a multiple of 31.",
    ),
    Key(
        "dbMonitoringIntervalSeconds",
        "integer",
        60,
        "Enhanced monitoring interval: 1, 5, 10, 15, 30 or 60 seconds.",
    ),
    Key(
        "kmsKeyDeletionWindowDays",
        "integer",
        30,
        "Waiting period before the stack's KMS key is deleted, 7 to 30 days.",
    ),
    # Embeddings (consistency with the data steps and the app)
    _declared("embeddingModel"),
    _declared("vectorDimensions"),
    # LLM host
    Key("llmInstanceType", "string", "g4dn.xlarge", "GPU EC2 instance type serving Ollama."),
    Key(
        "llmAmiId",
        "string",
        "",
        "AMI for the LLM host; empty selects the latest AWS Deep Learning Base GPU AMI "
        "(Ubuntu 22.04).",
    ),
    Key(
        "llmRootVolumeGb",
        "integer",
        150,
        "Encrypted gp3 root volume of the LLM host in GiB (models are large). At least 100.",
    ),
    Key("llmModel", "string", "falcon", "Ollama model pulled at boot and named in the app config."),
    Key(
        "ollamaVersion",
        "string",
        "",
        "Ollama release to install (for example 0.12.6); empty installs the latest.",
    ),
    # Secrets
    Key(
        "sourceDatabaseUrl",
        "string",
        "",
        "Secret. PostgreSQL URL of the Supabase source database; stored in Secrets Manager as "
        "`qckstrt/<stack>/source-database-url` when set.",
        secret=True,
    ),
    Key(
        "secretRecoveryWindowDays",
        "integer",
        30,
        "Secrets Manager recovery window: 0 deletes at once (staging, so it can be recreated "
        "under the same names), else 7 to 30.",
    ),
    # Storage
    Key(
        "bucketForceDestroy",
        "boolean",
        False,
        "Let `pulumi destroy` delete the bucket with its objects (staging only).",
    ),
    Key(
        "migrationObjectExpirationDays",
        "integer",
        90,
        "Days after which objects under `migration/` (dumps, backups) expire.",
    ),
    Key(
        "storageSourceCredentials",
        "string",
        "",
        "Secret. JSON `{accessKeyId, secretAccessKey}` of the storage step's S3-compatible source "
        "store; kept in Secrets Manager as `qckstrt/<stack>/source-storage-credentials`, passed "
        "to the step by ARN.",
        secret=True,
    ),
    Key(
        "gotrueJwtSecret",
        "string",
        "",
        "Secret. The source GoTrue's JWT secret (GOTRUE_JWT_SECRET), so existing tokens and API "
        "keys stay valid; kept in Secrets Manager as `qckstrt/<stack>/gotrue-jwt-secret`, named "
        "by ARN in the app-config secret.",
        secret=True,
    ),
    # Data steps (dynamic resources run by `pulumi up`)
    *(_declared(str(s.key)) for s in options.keyed() if s.key not in _EMBEDDING_KEYS),
    # Monitoring
    Key(
        "alertEmail",
        "string",
        "",
        "Email subscribed to the alarm topic (confirm the subscription mail); empty for none.",
    ),
    Key("alarmDbCpuPercent", "integer", 80, "RDS CPU alarm threshold, percent."),
    Key("alarmDbFreeStorageGb", "integer", 5, "RDS free storage alarm threshold, GiB."),
    Key("alarmDbConnections", "integer", 100, "RDS connections alarm threshold."),
)

KEYS_BY_NAME = {key.name: key for key in KEYS}

GPU_FAMILIES = ("g4dn", "g5", "g6", "g6e", "gr6", "p3", "p4d", "p4de", "p5", "p5e")
DOCUMENTATION_NETS = tuple(
    ipaddress.IPv4Network(net) for net in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
)
PG_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
RESERVED_USERNAMES = {"rdsadmin", "rdsrepladmin", "rds_superuser", "postgres", "public"}


class SettingsError(pulumi.RunError):
    """A configuration value is invalid; the message names the key and the fix."""

    def __init__(self, key: str, problem: str, fix: str) -> None:
        self.key = key
        super().__init__(f"config {PROJECT}:{key}: {problem}. Fix: {fix}")


@dataclass(frozen=True)
class NetworkSettings:
    vpc_cidr: str
    nat_gateway_per_az: bool
    existing_vpc_id: str
    existing_public_subnet_ids: tuple[str, ...]
    existing_private_subnet_ids: tuple[str, ...]
    operator_cidrs: tuple[str, ...]
    db_publicly_accessible: bool


@dataclass(frozen=True)
class DatabaseSettings:
    engine_version: str
    instance_class: str
    allocated_storage_gb: int
    max_allocated_storage_gb: int
    name: str
    master_username: str
    multi_az: bool
    deletion_protection: bool
    skip_final_snapshot: bool
    backup_retention_days: int
    publicly_accessible: bool
    maintenance_work_mem_mb: int
    slow_query_ms: int
    performance_insights_retention_days: int
    monitoring_interval_seconds: int
    kms_key_deletion_window_days: int

    @property
    def engine_major(self) -> str:
        return self.engine_version.split(".", 1)[0]

    @property
    def parameter_group_family(self) -> str:
        return f"postgres{self.engine_major}"


@dataclass(frozen=True)
class EmbeddingSettings:
    model: str
    dimensions: int

    @property
    def xenova_model(self) -> str:
        """The app's EMBEDDINGS_XENOVA_MODEL; an unknown model is passed through as named."""
        return xenova_name(self.model) or self.model


@dataclass(frozen=True)
class LlmSettings:
    instance_type: str
    ami_id: str
    root_volume_gb: int
    model: str
    ollama_version: str
    port: int = 11434


@dataclass(frozen=True)
class StorageSettings:
    force_destroy: bool
    migration_object_expiration_days: int


@dataclass(frozen=True)
class SecretSettings:
    source_database_url: pulumi.Output[str] | None
    recovery_window_days: int
    source_storage_credentials: pulumi.Output[str] | None = None
    gotrue_jwt_secret: pulumi.Output[str] | None = None


@dataclass(frozen=True)
class MigrationSettings:
    """The data steps: whether they run, how they reach the database, what they do.

    One field per keyed setting of ``migration.options`` (named as declared there), except the
    embedding keys, which are `EmbeddingSettings`; `load` fills them from the declarations.
    """

    enabled: bool
    connect_host: str
    connect_port: int
    ssl_mode: str
    schemas: tuple[str, ...]
    jobs: int
    on_existing: str
    import_revision: int
    vector_table: str
    batch_size: int
    device: str
    reindex_revision: int
    hnsw_m: int
    hnsw_ef_construction: int
    ef_search: int
    iterative_scan: str
    max_scan_tuples: int
    retrieval_sample: int
    max_short_results: int
    storage_source_path: str
    storage_source_bucket: str
    storage_source_endpoint: str
    storage_tenant: str
    allow_missing_objects: bool
    storage_schema: str
    auth_enabled: bool

    @property
    def copies_files(self) -> bool:
        """Whether the storage step is in the stack (a source backend is named)."""
        return bool(self.storage_source_path or self.storage_source_bucket)

    @property
    def storage_role_secret(self) -> bool:
        """Whether the stack declares supabase_storage_admin's password secret: the auth step
        makes all login roles' secrets; the storage step alone (carrying schema storage) makes
        its admin's."""
        return self.auth_enabled or (self.copies_files and self.storage_schema == "carry")


@dataclass(frozen=True)
class MonitoringSettings:
    alert_email: str
    db_cpu_percent: int
    db_free_storage_gb: int
    db_connections: int


@dataclass(frozen=True)
class Settings:
    """Everything the program needs, validated."""

    project: str
    stack: str
    region: str
    production: bool
    protect: bool
    network: NetworkSettings
    database: DatabaseSettings
    embeddings: EmbeddingSettings
    llm: LlmSettings
    secrets: SecretSettings
    storage: StorageSettings
    monitoring: MonitoringSettings
    migration: MigrationSettings

    @property
    def name_prefix(self) -> str:
        """Prefix of every physical name, so two stacks never collide in one account."""
        return f"{self.project}-{self.stack}"

    @property
    def tags(self) -> dict[str, str]:
        return {"Project": self.project, "Stack": self.stack, "ManagedBy": "pulumi"}


class _Reader:
    """Reads typed values, falling back to the registry's default (also declared in Pulumi.yaml)."""

    def __init__(self, config: pulumi.Config) -> None:
        self._config = config

    def _raw(self, name: str) -> str | None:
        key = KEYS_BY_NAME[name]
        assert not key.secret, f"{name} is secret; use secret()"
        return self._config.get(name)

    def string(self, name: str) -> str:
        raw = self._raw(name)
        return str(KEYS_BY_NAME[name].default) if raw is None else raw.strip()

    def integer(self, name: str) -> int:
        raw = self._raw(name)
        if raw is None:
            return int(KEYS_BY_NAME[name].default)
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(name, f"{raw!r} is not an integer", "give a whole number") from None

    def boolean(self, name: str) -> bool:
        raw = self._raw(name)
        if raw is None:
            return bool(KEYS_BY_NAME[name].default)
        lowered = raw.strip().lower()
        if lowered not in ("true", "false"):
            raise SettingsError(name, f"{raw!r} is not a boolean", "use true or false")
        return lowered == "true"

    def strings(self, name: str) -> tuple[str, ...]:
        raw = self._raw(name)
        if raw is None:
            return tuple(KEYS_BY_NAME[name].default)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SettingsError(
                name,
                f"{raw!r} is not a list of strings",
                f"set it with `pulumi config set --path '{name}[0]' VALUE`",
            )
        return tuple(v.strip() for v in value)

    def value(self, name: str) -> Any:
        """The value of `name`, read by its declared type."""
        readers = {
            "string": self.string,
            "integer": self.integer,
            "boolean": self.boolean,
            "array": self.strings,
        }
        return readers[KEYS_BY_NAME[name].type](name)

    def secret(self, name: str) -> pulumi.Output[str] | None:
        """A secret value, or None when unset; a value stored in plaintext is refused."""
        assert KEYS_BY_NAME[name].secret
        full_key = f"{self._config.name}:{name}"
        # Read the raw value: Config.get would warn that a secret is read as plaintext.
        if not get_config(full_key):
            return None
        if not is_config_secret(full_key):
            raise SettingsError(
                name,
                "the value is stored in plaintext in the stack file",
                f"run `pulumi config rm {name}` then `pulumi config set --secret {name} VALUE`",
            )
        return self._config.require_secret(name)


def load(config: pulumi.Config | None = None, stack: str | None = None) -> Settings:
    """Read and validate the stack's settings.

    :raises SettingsError: a value or combination is invalid; nothing has been declared yet.
    """
    read = _Reader(config or pulumi.Config(PROJECT))
    production = read.boolean("production")
    network = NetworkSettings(
        vpc_cidr=read.string("vpcCidr"),
        nat_gateway_per_az=read.boolean("natGatewayPerAz"),
        existing_vpc_id=read.string("existingVpcId"),
        existing_public_subnet_ids=read.strings("existingPublicSubnetIds"),
        existing_private_subnet_ids=read.strings("existingPrivateSubnetIds"),
        operator_cidrs=read.strings("operatorCidrs"),
        db_publicly_accessible=read.boolean("dbPubliclyAccessible"),
    )
    database = DatabaseSettings(
        engine_version=read.string("dbEngineVersion"),
        instance_class=read.string("dbInstanceClass"),
        allocated_storage_gb=read.integer("dbAllocatedStorageGb"),
        max_allocated_storage_gb=read.integer("dbMaxAllocatedStorageGb"),
        name=read.string("dbName"),
        master_username=read.string("dbMasterUsername"),
        multi_az=read.boolean("dbMultiAz"),
        deletion_protection=read.boolean("dbDeletionProtection"),
        skip_final_snapshot=read.boolean("dbSkipFinalSnapshot"),
        backup_retention_days=read.integer("dbBackupRetentionDays"),
        publicly_accessible=network.db_publicly_accessible,
        maintenance_work_mem_mb=read.integer("dbMaintenanceWorkMemMb"),
        slow_query_ms=read.integer("dbSlowQueryMs"),
        performance_insights_retention_days=read.integer("dbPerformanceInsightsRetentionDays"),
        monitoring_interval_seconds=read.integer("dbMonitoringIntervalSeconds"),
        kms_key_deletion_window_days=read.integer("kmsKeyDeletionWindowDays"),
    )
    settings = Settings(
        project=PROJECT,
        stack=stack or pulumi.get_stack(),
        region=_region(),
        production=production,
        protect=read.boolean("protectStatefulResources"),
        network=network,
        database=database,
        embeddings=EmbeddingSettings(
            model=read.string("embeddingModel"),
            dimensions=read.integer("vectorDimensions"),
        ),
        llm=LlmSettings(
            instance_type=read.string("llmInstanceType"),
            ami_id=read.string("llmAmiId"),
            root_volume_gb=read.integer("llmRootVolumeGb"),
            model=read.string("llmModel"),
            ollama_version=read.string("ollamaVersion"),
        ),
        secrets=SecretSettings(
            source_database_url=read.secret("sourceDatabaseUrl"),
            recovery_window_days=read.integer("secretRecoveryWindowDays"),
            source_storage_credentials=read.secret("storageSourceCredentials"),
            gotrue_jwt_secret=read.secret("gotrueJwtSecret"),
        ),
        storage=StorageSettings(
            force_destroy=read.boolean("bucketForceDestroy"),
            migration_object_expiration_days=read.integer("migrationObjectExpirationDays"),
        ),
        monitoring=MonitoringSettings(
            alert_email=read.string("alertEmail"),
            db_cpu_percent=read.integer("alarmDbCpuPercent"),
            db_free_storage_gb=read.integer("alarmDbFreeStorageGb"),
            db_connections=read.integer("alarmDbConnections"),
        ),
        migration=MigrationSettings(
            **{
                setting.name: read.value(str(setting.key))
                for setting in options.keyed()
                if setting.key not in _EMBEDDING_KEYS
            }
        ),
    )
    validate(settings)
    return settings


def _region() -> str:
    region = pulumi.Config("aws").get("region")
    if not region:
        raise pulumi.RunError(
            "config aws:region: not set. Fix: `pulumi config set aws:region eu-west-1` "
            "(each stack file sets it)"
        )
    return region


def _require(ok: bool, key: str, problem: str, fix: str) -> None:
    if not ok:
        raise SettingsError(key, problem, fix)


def _parse_cidr(key: str, value: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise SettingsError(
            key,
            f"{value!r} is not a valid CIDR ({exc})",
            "write it as a.b.c.d/n, e.g. 198.51.100.7/32",
        ) from None
    _require(
        isinstance(net, ipaddress.IPv4Network), key, f"{value!r} is not IPv4", "use an IPv4 CIDR"
    )
    assert isinstance(net, ipaddress.IPv4Network)
    return net


def validate(s: Settings) -> None:
    """Check values and combinations; raise :class:`SettingsError` on the first problem."""
    _validate_network(s)
    _validate_database(s)
    _validate_production(s)
    _validate_embeddings(s)
    _validate_llm(s)
    _validate_storage_and_secrets(s)
    _validate_monitoring(s)
    _validate_migration(s)


def _validate_network(s: Settings) -> None:
    n = s.network
    vpc = _parse_cidr("vpcCidr", n.vpc_cidr)
    _require(
        16 <= vpc.prefixlen <= 24,
        "vpcCidr",
        f"/{vpc.prefixlen} is outside /16../24",
        "pick a /16 to /24 private range such as 10.20.0.0/16",
    )
    _require(
        vpc.is_private,
        "vpcCidr",
        f"{n.vpc_cidr} is not a private range",
        "use a range inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16",
    )
    for cidr in n.operator_cidrs:
        net = _parse_cidr("operatorCidrs", cidr)
        _require(
            net.prefixlen > 0,
            "operatorCidrs",
            f"{cidr} opens the database to the whole internet",
            "list only your operators' egress addresses, e.g. 198.51.100.7/32",
        )
        _require(
            net.prefixlen >= 16,
            "operatorCidrs",
            f"{cidr} is wider than /16",
            "list narrower ranges (your VPN or office egress)",
        )
        if any(net.subnet_of(doc) for doc in DOCUMENTATION_NETS):
            pulumi.log.warn(
                f"config {PROJECT}:operatorCidrs: {cidr} is a documentation placeholder; "
                "replace it with your operators' egress address or nobody can reach the database"
            )
    if n.db_publicly_accessible:
        _require(
            bool(n.operator_cidrs),
            "operatorCidrs",
            "dbPubliclyAccessible is true but no operator CIDR is listed",
            "add your egress CIDR to operatorCidrs, or set dbPubliclyAccessible to false",
        )
    elif n.operator_cidrs:
        pulumi.log.warn(
            f"config {PROJECT}:operatorCidrs is set but dbPubliclyAccessible is false: "
            "the database stays private and the CIDRs are not used"
        )
    if n.existing_vpc_id:
        _require(
            n.existing_vpc_id.startswith("vpc-"),
            "existingVpcId",
            f"{n.existing_vpc_id!r} is not a VPC id",
            "use an id like vpc-0abc1234",
        )
        _require(
            len(n.existing_private_subnet_ids) >= 2,
            "existingPrivateSubnetIds",
            "an existing VPC needs at least two private subnets (RDS subnet groups span two AZs)",
            "list two or more private subnet ids in different availability zones",
        )
        if n.db_publicly_accessible:
            _require(
                len(n.existing_public_subnet_ids) >= 2,
                "existingPublicSubnetIds",
                "a publicly accessible database needs two public subnets",
                "list two public subnet ids, or set dbPubliclyAccessible to false",
            )
        for key, ids in (
            ("existingPrivateSubnetIds", n.existing_private_subnet_ids),
            ("existingPublicSubnetIds", n.existing_public_subnet_ids),
        ):
            for sid in ids:
                _require(
                    sid.startswith("subnet-"),
                    key,
                    f"{sid!r} is not a subnet id",
                    "use ids like subnet-0abc1234",
                )
    else:
        _require(
            not n.existing_private_subnet_ids and not n.existing_public_subnet_ids,
            "existingVpcId",
            "subnet ids are given without existingVpcId",
            "set existingVpcId to their VPC, or remove the subnet ids",
        )


def _validate_database(s: Settings) -> None:
    d = s.database
    _require(
        d.engine_major == "16" and re.fullmatch(r"16(\.\d+)?", d.engine_version) is not None,
        "dbEngineVersion",
        f"{d.engine_version!r} is not a PostgreSQL 16 version",
        'use "16" or a 16.x minor such as 16.6 (the parameter group family is postgres16)',
    )
    _require(
        d.instance_class.startswith("db."),
        "dbInstanceClass",
        f"{d.instance_class!r} is not an RDS instance class",
        "use a class like db.t4g.medium",
    )
    _require(
        20 <= d.allocated_storage_gb <= 65536,
        "dbAllocatedStorageGb",
        f"{d.allocated_storage_gb} is outside 20..65536",
        "gp3 needs at least 20 GiB",
    )
    _require(
        d.max_allocated_storage_gb > d.allocated_storage_gb,
        "dbMaxAllocatedStorageGb",
        f"{d.max_allocated_storage_gb} is not above dbAllocatedStorageGb "
        f"({d.allocated_storage_gb})",
        "raise it to allow storage autoscaling",
    )
    _require(
        PG_IDENTIFIER.match(d.name) is not None,
        "dbName",
        f"{d.name!r} is not a plain lowercase PostgreSQL identifier",
        "use letters, digits and _ , starting with a letter",
    )
    _require(
        PG_IDENTIFIER.match(d.master_username) is not None
        and d.master_username not in RESERVED_USERNAMES,
        "dbMasterUsername",
        f"{d.master_username!r} is reserved or not a plain identifier",
        "use a lowercase name such as qckstrt_admin",
    )
    _require(
        1 <= d.backup_retention_days <= 35,
        "dbBackupRetentionDays",
        f"{d.backup_retention_days} is outside 1..35",
        "keep automated backups for 1 to 35 days",
    )
    _require(
        64 <= d.maintenance_work_mem_mb <= 2047,
        "dbMaintenanceWorkMemMb",
        f"{d.maintenance_work_mem_mb} is outside 64..2047",
        "pick e.g. 1024",
    )
    _require(
        d.slow_query_ms >= -1,
        "dbSlowQueryMs",
        f"{d.slow_query_ms} is invalid",
        "use -1 (off) or a number of milliseconds",
    )
    pi = d.performance_insights_retention_days
    _require(
        pi in (7, 731) or (pi > 0 and pi % 31 == 0 and pi <= 731),
        "dbPerformanceInsightsRetentionDays",
        f"{pi} is not a retention RDS accepts",
        "use 7, 731, or a multiple of 31",
    )
    _require(
        d.monitoring_interval_seconds in (1, 5, 10, 15, 30, 60),
        "dbMonitoringIntervalSeconds",
        f"{d.monitoring_interval_seconds} is not an enhanced monitoring interval",
        "use 1, 5, 10, 15, 30 or 60",
    )
    _require(
        7 <= d.kms_key_deletion_window_days <= 30,
        "kmsKeyDeletionWindowDays",
        f"{d.kms_key_deletion_window_days} is outside 7..30",
        "AWS accepts 7 to 30 days",
    )


def _validate_production(s: Settings) -> None:
    if not s.production:
        return
    _require(
        s.database.deletion_protection,
        "dbDeletionProtection",
        "a production stack without deletion protection",
        "set it to true",
    )
    _require(
        s.database.multi_az, "dbMultiAz", "a production database without Multi-AZ", "set it to true"
    )
    _require(
        not s.database.skip_final_snapshot,
        "dbSkipFinalSnapshot",
        "a production database would be deleted without a final snapshot",
        "set it to false",
    )
    _require(
        not s.network.db_publicly_accessible,
        "dbPubliclyAccessible",
        "a production database must not be publicly accessible",
        "set it to false and reach the database through an SSM port-forward or a runner "
        "in the VPC (migrationConnectHost)",
    )
    _require(
        s.protect,
        "protectStatefulResources",
        "production stateful resources must be protected from `pulumi destroy`",
        "set it to true",
    )
    _require(
        s.database.backup_retention_days >= 7,
        "dbBackupRetentionDays",
        f"{s.database.backup_retention_days} days is too short for production",
        "use 7 or more",
    )
    _require(
        not s.storage.force_destroy,
        "bucketForceDestroy",
        "production bucket would be deleted with its objects",
        "set it to false",
    )
    _require(
        s.secrets.recovery_window_days >= 7,
        "secretRecoveryWindowDays",
        "production secrets would be deleted without a recovery window",
        "use 7 to 30",
    )


def _declared_values(s: Settings) -> dict[str, Any]:
    """Setting name -> value, for every data-step key (the embedding keys included)."""
    values: dict[str, Any] = {
        f.name: getattr(s.migration, f.name) for f in dataclasses.fields(s.migration)
    }
    values.update(model=s.embeddings.model, dimensions=s.embeddings.dimensions)
    return values


def _validate_declared(values: Mapping[str, Any]) -> None:
    """Judge each value, then the rules between them, as the CLI and the providers do."""
    found = [p for p in (options.check(n, v) for n, v in values.items()) if p is not None]
    found += options.cross_check(values)
    for problem in found[:1]:
        key = options.get(problem.setting).key
        assert key is not None
        raise SettingsError(key, stack_words(problem.text), stack_words(problem.fix))


def _validate_embeddings(s: Settings) -> None:
    _validate_declared({"model": s.embeddings.model, "dimensions": s.embeddings.dimensions})


def _validate_llm(s: Settings) -> None:
    llm = s.llm
    family = llm.instance_type.split(".", 1)[0]
    _require(
        family in GPU_FAMILIES and "." in llm.instance_type,
        "llmInstanceType",
        f"{llm.instance_type!r} is not an NVIDIA GPU instance type",
        f"use one of the families {', '.join(GPU_FAMILIES)} (e.g. g5.xlarge)",
    )
    if llm.ami_id:
        _require(
            re.fullmatch(r"ami-[0-9a-f]{8,17}", llm.ami_id) is not None,
            "llmAmiId",
            f"{llm.ami_id!r} is not an AMI id",
            "use an id like ami-0abc12345def67890, or empty",
        )
    _require(
        100 <= llm.root_volume_gb <= 16384,
        "llmRootVolumeGb",
        f"{llm.root_volume_gb} GiB is too small for the GPU AMI and models",
        "use at least 100",
    )
    _require(
        re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}", llm.model) is not None,
        "llmModel",
        f"{llm.model!r} is not an Ollama model name",
        "use a name like falcon or llama3:8b",
    )
    if llm.ollama_version:
        _require(
            re.fullmatch(r"\d+\.\d+\.\d+(-rc\d+)?", llm.ollama_version) is not None,
            "ollamaVersion",
            f"{llm.ollama_version!r} is not a release number",
            "use a version like 0.12.6, or empty for the latest",
        )


def _validate_storage_source(s: Settings) -> None:
    """The source store's keys belong to an S3 source (the other storage rules are declared)."""
    bucket_key = options.get("storage_source_bucket").key
    _require(
        s.secrets.source_storage_credentials is None or bool(s.migration.storage_source_bucket),
        "storageSourceCredentials",
        f"is set without {bucket_key}",
        f"set {bucket_key} too, or remove it",
    )


def _validate_storage_and_secrets(s: Settings) -> None:
    _validate_storage_source(s)
    days = s.storage.migration_object_expiration_days
    _require(
        days >= 1,
        "migrationObjectExpirationDays",
        f"{days} is not a number of days",
        "use 1 or more",
    )
    w = s.secrets.recovery_window_days
    _require(
        w == 0 or 7 <= w <= 30,
        "secretRecoveryWindowDays",
        f"{w} is not 0 or 7..30",
        "AWS accepts 0 (delete at once) or 7 to 30 days",
    )


def _validate_monitoring(s: Settings) -> None:
    m = s.monitoring
    if m.alert_email:
        _require(
            re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", m.alert_email) is not None,
            "alertEmail",
            f"{m.alert_email!r} is not an email address",
            "use an address like ops@example.com, or empty",
        )
    _require(
        1 <= m.db_cpu_percent <= 100,
        "alarmDbCpuPercent",
        f"{m.db_cpu_percent} is not a percentage",
        "use 1 to 100",
    )
    _require(
        m.db_free_storage_gb >= 1,
        "alarmDbFreeStorageGb",
        f"{m.db_free_storage_gb} is too small",
        "use 1 or more",
    )
    _require(
        m.db_connections >= 1,
        "alarmDbConnections",
        f"{m.db_connections} is too small",
        "use 1 or more",
    )


SSL_MODES = ("require", "verify-ca", "verify-full")


def _validate_migration(s: Settings) -> None:
    """The declared data-step settings, then the rules only a stack has."""
    m = s.migration
    _require(
        not m.enabled or s.secrets.source_database_url is not None,
        "migrationEnabled",
        "the data steps need the source database, but sourceDatabaseUrl is not set",
        "run `pulumi config set --secret sourceDatabaseUrl 'postgresql://...'`, or set "
        "migrationEnabled to false",
    )
    _require(
        m.ssl_mode in SSL_MODES,
        "migrationSslMode",
        f"{m.ssl_mode!r} is not one of {', '.join(SSL_MODES)}",
        "RDS forces SSL: use require, or verify-full with the RDS CA bundle",
    )
    _validate_declared(_declared_values(s))
    _require(
        m.connect_port == 0 or bool(m.connect_host),
        "migrationConnectPort",
        "a port is set without migrationConnectHost",
        "set migrationConnectHost too (for an SSM port-forward: 127.0.0.1), or set the port to 0",
    )
