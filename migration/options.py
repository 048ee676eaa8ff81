"""Every data-step setting, declared once; the CLI, the providers and the stack derive from it.

A `Setting` holds what each skin needs: the neutral name the library uses (``on_existing``), its
type, default, bounds or choices, help text, command-line flag, environment variable, Pulumi
config key, provider input, and which steps re-run when it changes. The skins do not spell a
setting again: ``migration.cli`` builds its arguments from `for_command`, ``migration.providers``
its ``check``/``diff``/``TRIGGERS`` from `for_step`, ``infra.settings`` its data-step keys from
`keyed`, and the library's option dataclasses take their defaults and validation from `option`.

Why plain frozen dataclasses in a table, and not pydantic or attrs: no new dependency, nothing
heavy to import (the Pulumi provider host imports this on every preview), and one setting is
shared by several steps' option classes (``schemas`` by import, verify and run), so a table
rather than a field of one class is the single place. The library's dataclasses point at the
table through field metadata (`option`), so their fields validate the same way.

Messages are neutral: they name a setting in backticks (```on_existing```), and each skin says
it in its own words with `render` (``--on-existing`` on the command line, ``migrationOnExisting``
under Pulumi, the input name in a provider's ``check``). `check` here validates one value and
`cross_check` the rules between settings; no I/O anywhere (``check`` runs in every preview).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from migration.backends.models import DEFAULT_MODEL, known_dimensions
from migration.errors import ConfigError

SettingType = Literal["string", "integer", "number", "boolean", "array"]
Rule = Literal[
    "", "identifier", "identifiers", "device", "model", "backup", "bucket", "tenant", "url"
]

#: Steps, by the id the providers and the CLI share. ``run`` composes the first four.
STEPS = ("extension", "import", "auth", "storage", "reindex", "verify", "restore")
#: CLI subcommands that take step settings (``demo`` is a development helper with its own flags).
COMMANDS = ("run", "extension", "import", "auth", "storage", "reindex", "verify", "restore")
CONNECTING = ("run", "extension", "import", "auth", "storage", "reindex", "verify", "restore")
DEFAULT_TABLE = "qckstrt_embeddings_vectors"
#: What torch accepts as a device for the re-index (``auto`` picks a GPU when there is one).
DEVICE = re.compile(r"cpu|auto|mps|cuda(:\d+)?")
DEVICE_HELP = "cpu, cuda or auto (also cuda:N for GPU number N, or mps on Apple silicon)"
IDENTIFIER_MAX = 63
REVISION_MAX = 2**31 - 1
#: An S3 bucket name; an S3-compatible store (MinIO, R2) accepts the same.
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
#: storage-api's ``TENANT_ID``: one segment of the object keys.
TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
#: The prefix of the stack's bucket that holds the migration's (expiring) dumps.
RESERVED_PREFIX = "migration"
STORAGE = ("run", "storage")


@dataclass(frozen=True)
class Setting:
    """One setting of the data steps, as every skin sees it.

    :param name: neutral name; the library's parameter and the name in messages.
    :param commands: CLI subcommands that take it (with `flag`).
    :param steps: providers (by step id) that take it as the input `input`.
    :param triggers: steps whose resource runs again when it changes (a subset of `steps`).
    :param key: Pulumi config key (flat camelCase, project namespace); None: not in the stack.
    :param what: what a valid value is, for messages ("a TCP port"); default: its range.
    """

    name: str
    type: SettingType
    default: Any
    help: str
    commands: tuple[str, ...] = ()
    flag: str | None = None
    aliases: tuple[str, ...] = ()
    env: str | None = None
    key: str | None = None
    steps: tuple[str, ...] = ()
    input_name: str = ""
    triggers: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    rule: Rule = ""
    what: str = ""
    metavar: str | None = None

    @property
    def input(self) -> str:
        """The provider input that carries it (the stack state's name: never renamed)."""
        return self.input_name or self.name

    @property
    def label(self) -> str:
        """Words for the setting in a sentence: ``batch size``."""
        return self.name.replace("_", " ")


def _revision(name: str, step: str, key: str | None, what: str) -> Setting:
    return Setting(
        name,
        "integer",
        0,
        f"Bump to run {what} again.",
        key=key,
        steps=(step,),
        input_name="revision",
        triggers=(step,),
        low=0,
        high=REVISION_MAX,
    )


SETTINGS: tuple[Setting, ...] = (
    # -- how to reach the databases -----------------------------------------------------------
    Setting(
        "enabled",
        "boolean",
        False,
        "Run the data steps (pgvector, import, re-index, check) in `pulumi up`. Needs "
        "`sourceDatabaseUrl` and a network path to the database. Setting it back to false "
        "removes the steps from the stack and keeps the data.",
        key="migrationEnabled",
    ),
    Setting(
        "connect_host",
        "string",
        "",
        "Host the data steps dial instead of the RDS endpoint (an SSM port-forward such as "
        "127.0.0.1, or another tunnel); empty dials the endpoint.",
        key="migrationConnectHost",
    ),
    Setting(
        "connect_port",
        "integer",
        0,
        "Port the data steps dial with `connect_host`; 0 uses the database's port.",
        key="migrationConnectPort",
        low=0,
        high=65535,
        what="a TCP port",
    ),
    Setting(
        "ssl_mode",
        "string",
        "require",
        "libpq sslmode of the data steps' connections (RDS forces SSL): require, verify-ca or "
        "verify-full (the last two need `PGSSLROOTCERT` pointing at the RDS CA bundle).",
        key="migrationSslMode",
        steps=("extension", "import", "auth", "storage", "reindex", "verify"),
        choices=("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    ),
    Setting(
        "connect_timeout",
        "integer",
        10,
        "Seconds per connection attempt.",
        commands=CONNECTING,
        flag="--connect-timeout",
        env="QCKSTRT_CONNECT_TIMEOUT",
        steps=("extension", "import", "auth", "storage", "reindex", "verify"),
        low=1,
        high=300,
    ),
    Setting(
        "attempts",
        "integer",
        3,
        "Connection attempts on transient errors.",
        commands=CONNECTING,
        flag="--attempts",
        env="QCKSTRT_CONNECT_ATTEMPTS",
        low=1,
        high=20,
    ),
    Setting(
        "lock_wait_seconds",
        "number",
        0.0,
        "Seconds to wait for another run's lock on the target.",
        commands=("run", "import", "reindex", "restore", "auth"),
        flag="--lock-wait",
        env="QCKSTRT_LOCK_WAIT",
        steps=("reindex",),
        low=0,
        high=3600,
        metavar="SECONDS",
    ),
    # -- step 1: pgvector -------------------------------------------------------------------------
    Setting(
        "vector_schema",
        "string",
        None,
        "Schema of the `vector` extension; default: the source's (Supabase: extensions), else "
        "public. Not the vector table's schema (that is `table_schema`).",
        commands=("run", "extension"),
        flag="--vector-schema",
        env="QCKSTRT_VECTOR_SCHEMA",
        steps=("extension",),
        triggers=("extension",),
        rule="identifier",
    ),
    _revision("extension_revision", "extension", None, "the pgvector step"),
    # -- step 2: import ---------------------------------------------------------------------------
    Setting(
        "schemas",
        "array",
        ["public"],
        "Application schemas the import copies and the check compares.",
        commands=("run", "import", "verify", "auth", "storage"),
        flag="--schemas",
        env="QCKSTRT_SCHEMAS",
        key="migrationSchemas",
        steps=("import", "verify", "auth", "storage"),
        triggers=("import", "verify", "auth", "storage"),
        rule="identifiers",
        metavar="A,B",
    ),
    Setting(
        "jobs",
        "integer",
        2,
        "Tables the import copies (and indexes it builds) at once (1 to 16).",
        commands=("run", "import", "auth"),
        flag="--jobs",
        env="QCKSTRT_JOBS",
        key="migrationJobs",
        steps=("import", "auth"),
        low=1,
        high=16,
    ),
    Setting(
        "backup",
        "string",
        None,
        "s3://bucket/prefix or a directory for pg_dump -Fc of the source, and of the target's "
        "tables before `on_existing` replace (under Pulumi: the stack's bucket).",
        commands=("run", "import", "restore"),
        flag="--backup",
        env="QCKSTRT_BACKUP",
        steps=("import",),
        rule="backup",
    ),
    Setting(
        "on_existing",
        "string",
        "fail",
        "What the import does with a target that already holds the tables: fail, or replace "
        "(after a backup of them). Needed when `import_revision` is bumped.",
        commands=("run", "import", "restore"),
        flag="--on-existing",
        env="QCKSTRT_ON_EXISTING",
        key="migrationOnExisting",
        steps=("import",),
        choices=("fail", "replace"),
    ),
    _revision(
        "import_revision",
        "import",
        "migrationRevision",
        "the import from the source (with `on_existing` replace)",
    ),
    Setting(
        "restart",
        "boolean",
        False,
        "Discard an interrupted import's progress and start again.",
        commands=("import",),
        flag="--restart",
    ),
    Setting(
        "dry_run",
        "boolean",
        False,
        "Prove the import would work and change nothing: apply the whole schema on the "
        "target inside a transaction that is rolled back, and report the tables it would copy "
        "and what it would leave out (no data, no backup).",
        commands=("import",),
        flag="--dry-run",
    ),
    Setting(
        "pg_dump",
        "string",
        None,
        "The pg_dump to use (its directory must hold pg_restore too); default: the newest "
        "whose major is at least the source's.",
        commands=("run", "import", "auth"),
        flag="--pg-dump",
        env="QCKSTRT_PG_DUMP",
        metavar="PATH",
    ),
    Setting(
        "retries",
        "integer",
        3,
        "Retries of a table copy after a lost connection.",
        commands=("run", "import", "auth"),
        flag="--retries",
        env="QCKSTRT_RETRIES",
        low=0,
        high=100,
    ),
    # -- the auth step (opt-in, after the import) ------------------------------------------------
    Setting(
        "auth_password_secrets",
        "string",
        None,
        "Secrets Manager secret ARN of each login role's password, as role=ARN pairs "
        "(supabase_auth_admin, supabase_storage_admin, authenticator); given to `run`, the auth "
        "step runs after the import.",
        commands=("run", "auth"),
        flag="--auth-password-secrets",
        env="QCKSTRT_AUTH_PASSWORD_SECRETS",
        metavar="ROLE=ARN,...",
    ),
    Setting(
        "auth_enabled",
        "boolean",
        False,
        "Carry Supabase Auth in `pulumi up`: the stack declares one password secret per login "
        "role (supabase_auth_admin, supabase_storage_admin, authenticator; filled by the step, "
        "never in state) and the AuthStep after the import, before the storage step. The "
        "app-config secret names the roles' secrets.",
        key="migrationAuth",
    ),
    _revision("auth_revision", "auth", None, "the auth step"),
    # -- the storage step: storage-api's files into the stack's bucket -----------------------------
    Setting(
        "storage_source_path",
        "string",
        "",
        "The file backend's directory (storage-api's FILE_STORAGE_BACKEND_PATH, e.g. "
        "supabase/docker/volumes/storage) as readable where the step runs; naming it, or "
        "`storage_source_bucket`, turns the storage step on.",
        commands=STORAGE,
        flag="--from-dir",
        env="QCKSTRT_STORAGE_FILE_PATH",
        key="storageSourcePath",
        steps=("storage",),
        input_name="source_path",
        triggers=("storage",),
        metavar="DIR",
    ),
    Setting(
        "storage_source_bucket",
        "string",
        "",
        "Instead of `storage_source_path`: the source storage-api's S3 bucket "
        "(its GLOBAL_S3_BUCKET).",
        commands=STORAGE,
        flag="--from-s3",
        env="QCKSTRT_STORAGE_SOURCE_BUCKET",
        key="storageSourceBucket",
        steps=("storage",),
        input_name="source_bucket",
        triggers=("storage",),
        rule="bucket",
        metavar="BUCKET",
    ),
    Setting(
        "storage_source_endpoint",
        "string",
        "",
        "Endpoint URL of an S3-compatible source store (MinIO, R2, ...); empty for AWS S3.",
        commands=STORAGE,
        flag="--source-s3-endpoint",
        env="QCKSTRT_STORAGE_SOURCE_ENDPOINT",
        key="storageSourceEndpoint",
        steps=("storage",),
        input_name="source_endpoint",
        triggers=("storage",),
        rule="url",
        metavar="URL",
    ),
    Setting(
        "storage_source_region",
        "string",
        "",
        "Region of the source store; default: the stack's region, else us-east-1.",
        commands=STORAGE,
        flag="--source-s3-region",
        env="QCKSTRT_STORAGE_SOURCE_REGION",
        steps=("storage",),
        input_name="source_region",
        metavar="REGION",
    ),
    Setting(
        "storage_source_secret_arn",
        "string",
        "",
        "ARN of a secret holding {accessKeyId, secretAccessKey} of the source store (else the "
        "environment's SOURCE_S3_ACCESS_KEY_ID and SOURCE_S3_SECRET_ACCESS_KEY; under "
        "`pulumi up` the stack keeps them as a secret of its own).",
        commands=STORAGE,
        flag="--source-s3-secret-arn",
        env="QCKSTRT_STORAGE_SOURCE_SECRET_ARN",
        metavar="ARN",
    ),
    Setting(
        "storage_source_global_bucket",
        "string",
        "stub",
        "The file backend's GLOBAL_S3_BUCKET: the first directory under `storage_source_path`.",
        commands=STORAGE,
        flag="--source-global-bucket",
        env="QCKSTRT_STORAGE_SOURCE_GLOBAL_BUCKET",
        steps=("storage",),
        input_name="source_global_bucket",
        triggers=("storage",),
        rule="tenant",
        metavar="NAME",
    ),
    Setting(
        "storage_source_tenant",
        "string",
        "",
        "The source storage-api's TENANT_ID; default: `storage_tenant`.",
        commands=STORAGE,
        flag="--source-tenant",
        env="QCKSTRT_STORAGE_SOURCE_TENANT",
        steps=("storage",),
        input_name="source_tenant",
        triggers=("storage",),
        rule="tenant",
        metavar="TENANT",
    ),
    Setting(
        "storage_bucket",
        "string",
        "",
        "The bucket that receives storage-api's files (the stack output bucketName; under "
        "`pulumi up`, the stack's bucket).",
        commands=STORAGE,
        flag="--storage-bucket",
        env="QCKSTRT_STORAGE_BUCKET",
        steps=("storage", "verify"),
        input_name="bucket",
        triggers=("storage",),
        rule="bucket",
        metavar="BUCKET",
    ),
    Setting(
        "storage_tenant",
        "string",
        "stub",
        "storage-api's TENANT_ID on AWS: the first segment of each file's key "
        "(`<tenant>/<bucket>/<name>/<version>`); keep the source's (stub when self-hosted).",
        commands=STORAGE,
        flag="--storage-tenant",
        env="QCKSTRT_STORAGE_TENANT",
        key="storageTenantId",
        steps=("storage", "verify"),
        input_name="tenant",
        triggers=("storage",),
        rule="tenant",
        metavar="TENANT",
    ),
    Setting(
        "storage_workers",
        "integer",
        4,
        "Objects the storage step copies (and checks) at once.",
        commands=STORAGE,
        flag="--storage-workers",
        env="QCKSTRT_STORAGE_WORKERS",
        steps=("storage",),
        input_name="workers",
        low=1,
        high=64,
    ),
    Setting(
        "allow_missing_objects",
        "boolean",
        False,
        "Copy the other files when some objects' bytes are missing at the source (listed in "
        "the report and the step's outputs) instead of failing the step.",
        commands=STORAGE,
        flag="--allow-missing-objects",
        env="QCKSTRT_STORAGE_ALLOW_MISSING",
        key="storageAllowMissing",
        steps=("storage", "verify"),
        input_name="allow_missing",
        triggers=("storage",),
    ),
    Setting(
        "file_version_separator",
        "boolean",
        False,
        "storage-api runs with TUS_USE_FILE_VERSION_SEPARATOR=true: its keys put -$v- between "
        "an object's name and version, not /.",
        commands=STORAGE,
        flag="--file-version-separator",
        env="QCKSTRT_STORAGE_FILE_VERSION_SEPARATOR",
        steps=("storage", "verify"),
        triggers=("storage",),
    ),
    Setting(
        "storage_schema",
        "string",
        "carry",
        "What the storage step does with schema storage before copying the files: carry it "
        "(owned by supabase_storage_admin, with its grants; the roles storage-api needs come "
        "from the auth step, or the storage step makes them with its admin's password in a "
        "Secrets Manager secret), or skip it (the files only).",
        commands=STORAGE,
        flag="--storage-schema",
        env="QCKSTRT_STORAGE_SCHEMA",
        key="storageSchema",
        steps=("storage",),
        triggers=("storage",),
        choices=("carry", "skip"),
    ),
    Setting(
        "storage_password_secret",
        "string",
        None,
        "Secrets Manager secret ARN for supabase_storage_admin's password: with it the storage "
        "step makes the roles storage-api needs (supabase_storage_admin, anon, authenticated, "
        "service_role, authenticator) without the auth step, and writes the generated password "
        "there (under `pulumi up`, the stack's qckstrt/<stack>/db-role-supabase-storage-admin).",
        commands=STORAGE,
        flag="--storage-password-secret",
        env="QCKSTRT_STORAGE_PASSWORD_SECRET",
        metavar="ARN",
    ),
    _revision("storage_revision", "storage", None, "the storage copy"),
    Setting(
        "storage_check",
        "boolean",
        False,
        "Copy nothing: check that every row's bytes are at its key in `storage_bucket` (and, "
        "given a target, that its storage.objects matches the source's).",
        commands=("storage",),
        flag="--check",
    ),
    # -- step 3: re-index -------------------------------------------------------------------------
    Setting(
        "model",
        "string",
        DEFAULT_MODEL,
        "sentence-transformers model the re-index uses (name, name@revision or local path).",
        commands=("run", "reindex"),
        flag="--model",
        env="QCKSTRT_MODEL",
        key="embeddingModel",
        steps=("reindex",),
        triggers=("reindex",),
        rule="model",
    ),
    Setting(
        "dimensions",
        "integer",
        384,
        "Dimension of `vector(N)` columns; must equal the embedding model's output.",
        commands=("run", "reindex"),
        flag="--dimensions",
        env="QCKSTRT_VECTOR_DIMENSIONS",
        key="vectorDimensions",
        steps=("reindex",),
        triggers=("reindex",),
        low=1,
        high=16000,
    ),
    Setting(
        "allow_dimension_change",
        "boolean",
        False,
        "Rewrite vector(N) to the model's dimension and re-embed every row.",
        commands=("run", "reindex"),
        flag="--allow-dimension-change",
        steps=("reindex",),
    ),
    Setting(
        "table_schema",
        "string",
        "public",
        "Schema of the vector table (Supabase: public; not the `vector` extension's schema).",
        commands=("run", "reindex"),
        flag="--table-schema",
        aliases=("--schema",),
        env="QCKSTRT_VECTOR_TABLE_SCHEMA",
        steps=("reindex",),
        input_name="schema",
        triggers=("reindex",),
        rule="identifier",
    ),
    Setting(
        "vector_table",
        "string",
        DEFAULT_TABLE,
        "Table whose `content` the re-index embeds into `embedding`, and whose embedding the "
        "check leaves out of its checksum.",
        commands=("run", "reindex", "verify"),
        flag="--table",
        env="QCKSTRT_VECTOR_TABLE",
        key="vectorTable",
        steps=("reindex", "verify"),
        input_name="table",
        triggers=("reindex",),
        rule="identifier",
    ),
    Setting(
        "text_column",
        "string",
        "content",
        "Column of the vector table holding each chunk's text.",
        commands=("run", "reindex"),
        flag="--text-column",
        env="QCKSTRT_TEXT_COLUMN",
        steps=("reindex",),
        triggers=("reindex",),
        rule="identifier",
    ),
    Setting(
        "vector_column",
        "string",
        "embedding",
        "Column of the vector table holding each chunk's vector.",
        commands=("run", "reindex"),
        flag="--vector-column",
        env="QCKSTRT_VECTOR_COLUMN",
        steps=("reindex",),
        triggers=("reindex",),
        rule="identifier",
    ),
    Setting(
        "batch_size",
        "integer",
        128,
        "Chunks embedded per batch by the re-index (32 to 512 on a CPU, more on a GPU).",
        commands=("run", "reindex"),
        flag="--batch-size",
        env="QCKSTRT_BATCH_SIZE",
        key="reindexBatchSize",
        steps=("reindex",),
        low=1,
        high=10000,
    ),
    Setting(
        "device",
        "string",
        "cpu",
        f"Where the re-index runs the model: {DEVICE_HELP}; where `pulumi up` runs.",
        commands=("run", "reindex"),
        flag="--device",
        env="QCKSTRT_DEVICE",
        key="reindexDevice",
        steps=("reindex",),
        rule="device",
    ),
    _revision("reindex_revision", "reindex", "reindexRevision", "the re-index (incremental)"),
    Setting(
        "hnsw_m",
        "integer",
        16,
        "HNSW `m` of the vector index (2 to 100).",
        commands=("run", "reindex"),
        flag="--hnsw-m",
        env="QCKSTRT_HNSW_M",
        key="hnswM",
        steps=("reindex",),
        triggers=("reindex",),
        low=2,
        high=100,
    ),
    Setting(
        "hnsw_ef_construction",
        "integer",
        64,
        "HNSW `ef_construction` of the vector index (4 to 1000, at least 2 x `hnsw_m`).",
        commands=("run", "reindex"),
        flag="--hnsw-ef-construction",
        env="QCKSTRT_HNSW_EF_CONSTRUCTION",
        key="hnswEfConstruction",
        steps=("reindex",),
        triggers=("reindex",),
        low=4,
        high=1000,
    ),
    Setting(
        "index_name",
        "string",
        "",
        "Name of the HNSW index; default: <table>_<vector column>_idx (the app's own name, "
        "so the app builds no ivfflat index of its own).",
        commands=("run", "reindex"),
        flag="--index-name",
        env="QCKSTRT_INDEX_NAME",
    ),
    # -- search settings the re-index sets on the database for the app's sessions ---------------
    Setting(
        "ef_search",
        "integer",
        100,
        "`hnsw.ef_search` the re-index sets on the database, which the app's sessions inherit: "
        "candidates an HNSW scan keeps before the app's user filter (1 to 1000; 40, pgvector's "
        "default, removes the setting).",
        commands=("run", "reindex"),
        flag="--ef-search",
        env="QCKSTRT_EF_SEARCH",
        key="hnswEfSearch",
        steps=("reindex",),
        triggers=("reindex",),
        low=1,
        high=1000,
    ),
    Setting(
        "iterative_scan",
        "string",
        "strict_order",
        "`hnsw.iterative_scan` the re-index sets on the database: off, relaxed_order or "
        "strict_order (the scan goes on past `ef_search` candidates until the app's LIMIT is "
        "met; off, pgvector's default, removes the setting).",
        commands=("run", "reindex"),
        flag="--iterative-scan",
        env="QCKSTRT_ITERATIVE_SCAN",
        key="hnswIterativeScan",
        steps=("reindex",),
        triggers=("reindex",),
        choices=("off", "relaxed_order", "strict_order"),
    ),
    Setting(
        "max_scan_tuples",
        "integer",
        20000,
        "`hnsw.max_scan_tuples` the re-index sets on the database: the most tuples an iterative "
        "scan visits (20000, pgvector's default, removes the setting).",
        commands=("run", "reindex"),
        flag="--max-scan-tuples",
        env="QCKSTRT_MAX_SCAN_TUPLES",
        key="hnswMaxScanTuples",
        steps=("reindex",),
        triggers=("reindex",),
        low=1,
        high=REVISION_MAX,
    ),
    # -- step 4: verification ---------------------------------------------------------------------
    _revision("check_revision", "verify", None, "the check"),
    Setting(
        "retrieval_sample",
        "integer",
        500,
        "Chunks whose own vector the check queries the app's vector search with (all of them "
        "when the table holds fewer).",
        commands=("run", "verify"),
        flag="--retrieval-sample",
        env="QCKSTRT_RETRIEVAL_SAMPLE",
        key="retrievalSample",
        steps=("verify",),
        triggers=("verify",),
        low=1,
        high=100_000,
    ),
    Setting(
        "min_recall_at_5",
        "number",
        0.99,
        "The check fails when recall@5 of the app's vector query, against exact search, is "
        "below this (0 to 1; a provider input, not a stack key: Pulumi.yaml has no decimals).",
        commands=("run", "verify"),
        flag="--min-recall-at-5",
        env="QCKSTRT_MIN_RECALL_AT_5",
        steps=("verify",),
        triggers=("verify",),
        low=0,
        high=1,
    ),
    Setting(
        "max_short_results",
        "integer",
        0,
        "The check fails when more of the app's vector queries than this return fewer than k "
        "rows while the user owns at least k chunks.",
        commands=("run", "verify"),
        flag="--max-short-results",
        env="QCKSTRT_MAX_SHORT_RESULTS",
        key="retrievalMaxShortResults",
        steps=("verify",),
        triggers=("verify",),
        low=0,
        high=REVISION_MAX,
    ),
    # -- rollback ---------------------------------------------------------------------------------
    Setting(
        "restore_from",
        "string",
        None,
        "The import's backup: s3://bucket/prefix-or-key or a directory/file.",
        commands=("restore",),
        flag="--from",
        env="QCKSTRT_RESTORE_FROM",
        metavar="LOCATION",
    ),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def get(name: str) -> Setting:
    """The declaration of `name`; a KeyError names a setting nobody declared."""
    return BY_NAME[name]


def for_command(command: str) -> tuple[Setting, ...]:
    """The settings a CLI subcommand takes, in declaration order."""
    return tuple(s for s in SETTINGS if command in s.commands)


def for_step(step: str) -> tuple[Setting, ...]:
    """The settings a step's provider takes as inputs, in declaration order."""
    return tuple(s for s in SETTINGS if step in s.steps)


def triggers(step: str) -> tuple[str, ...]:
    """The provider inputs of `step` whose change runs the step again."""
    return tuple(s.input for s in SETTINGS if step in s.triggers)


def input_defaults(step: str) -> dict[str, Any]:
    """Provider input -> default (absent values are sent as "": the wire has no None)."""
    out: dict[str, Any] = {}
    for s in for_step(step):
        default = "" if s.default is None else s.default
        out[s.input] = list(default) if isinstance(default, list) else default
    return out


def keyed() -> tuple[Setting, ...]:
    """The settings with a Pulumi config key."""
    return tuple(s for s in SETTINGS if s.key)


def by_key(key: str) -> Setting:
    """The setting behind Pulumi config key `key`."""
    return next(s for s in SETTINGS if s.key == key)


# ---------------------------------------------------------------------------------------------
# Field metadata: the library's option dataclasses point at their declaration


def option(name: str) -> Any:
    """A dataclass field whose default and validation come from setting `name`."""
    setting = get(name)
    metadata = {"setting": name}
    if isinstance(setting.default, list):
        default = list(setting.default)
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=setting.default, metadata=metadata)


def declared_fields(cls_or_obj: Any) -> dict[str, str]:
    """Field name -> setting name, for the fields declared with `option`."""
    return {
        f.name: str(f.metadata["setting"])
        for f in dataclasses.fields(cls_or_obj)
        if "setting" in f.metadata
    }


def validate(obj: Any) -> None:
    """Check every declared field of a dataclass instance, then the rules between them.

    :raises ConfigError: naming the first bad setting (neutral words; skins translate).
    """
    values = {name: getattr(obj, field) for field, name in declared_fields(obj).items()}
    for name, value in values.items():
        if (found := check(name, value)) is not None:
            raise ConfigError(str(found), setting=name)
    for found in cross_check(values):
        raise ConfigError(str(found), setting=found.setting)


# ---------------------------------------------------------------------------------------------
# Validation: one judgement of a value, whichever skin it came through


@dataclass(frozen=True)
class Problem:
    """A bad value: what is wrong (`text`) and what to do (`fix`), in neutral words."""

    setting: str
    text: str
    fix: str

    def __str__(self) -> str:
        return f"{self.text}; {self.fix}"


def _whole(value: Any) -> int | None:
    """`value` as an int when it is a whole number (the Pulumi wire sends 5.0 for 5)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if float(value).is_integer() else None


def _valid_identifier(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= IDENTIFIER_MAX and "\x00" not in value


def _range_fix(s: Setting) -> str:
    if s.high is None:
        return f"use {_num(s.low)} or more"
    return f"use {_num(s.low)}..{_num(s.high)}"


def _num(value: float | None) -> str:
    return str(int(value)) if value is not None and float(value).is_integer() else str(value)


def _check_number(s: Setting, value: Any) -> Problem | None:
    if s.type == "integer":
        number: float | None = _whole(value)
        kind = "a whole number"
    else:
        number = None if isinstance(value, bool) or not isinstance(value, int | float) else value
        kind = "a number"
    if number is None:
        return Problem(s.name, f"{s.label} {value!r} is not {kind}", _range_fix(s))
    low, high = s.low, s.high
    if (low is not None and number < low) or (high is not None and number > high):
        if s.what:
            return Problem(s.name, f"{s.label} {value} is not {s.what}", _range_fix(s))
        if low is not None and number < low:
            word = "negative" if low == 0 else "too small"
            return Problem(
                s.name,
                f"{s.label} {_num(number)} is {word}: `{s.name}` must be at least {_num(low)}",
                _range_fix(s),
            )
        return Problem(
            s.name,
            f"{s.label} {_num(number)} is too large: `{s.name}` must be at most {_num(high)}",
            _range_fix(s),
        )
    return None


def _check_string(s: Setting, value: Any) -> Problem | None:
    if not isinstance(value, str):
        return Problem(s.name, f"{s.label} {value!r} is not a string", "give a text value")
    if s.choices and value not in s.choices:
        listed = ", ".join(s.choices[:-1]) + f" or {s.choices[-1]}"
        return Problem(s.name, f"`{s.name}` {value!r} is not {listed}", f"use {listed}")
    if s.rule == "identifier" and not _valid_identifier(value):
        return Problem(
            s.name,
            f"`{s.name}` {value!r} is not a valid PostgreSQL name",
            f"use a name of 1 to {IDENTIFIER_MAX} characters",
        )
    if s.rule == "device" and not DEVICE.fullmatch(value):
        return Problem(
            s.name, f"`{s.name}` {value!r} is not a device torch accepts", f"use {DEVICE_HELP}"
        )
    if s.rule == "model" and not value.strip():
        return Problem(s.name, f"`{s.name}` is empty", "name a sentence-transformers model")
    if s.rule == "backup" and "://" in value and not value.startswith("s3://"):
        return Problem(
            s.name, f"`{s.name}` {value!r} is neither S3 nor a path", "use s3://bucket/prefix"
        )
    if s.rule in ("bucket", "tenant", "url") and value:
        return _check_storage_name(s, value)
    if s.rule in ("bucket", "tenant") and s.default:
        return Problem(s.name, f"`{s.name}` is empty", f"use {s.default!r} or another name")
    if s.name == "index_name" and len(value) > IDENTIFIER_MAX:
        return Problem(
            s.name, f"`{s.name}` {value!r} is longer than {IDENTIFIER_MAX} characters", "shorten it"
        )
    return None


def _check_storage_name(s: Setting, value: str) -> Problem | None:
    """A bucket, a tenant id (one key segment, not the dumps' prefix) or an endpoint URL."""
    if s.rule == "bucket" and not BUCKET.fullmatch(value):
        return Problem(
            s.name,
            f"`{s.name}` {value!r} is not an S3 bucket name",
            "use 3 to 63 lowercase letters, digits, dots and hyphens",
        )
    if s.rule == "tenant" and (not TENANT.fullmatch(value) or value == RESERVED_PREFIX):
        return Problem(
            s.name,
            f"`{s.name}` {value!r} is not one key segment other than {RESERVED_PREFIX} (the "
            "prefix of the bucket's expiring dumps)",
            "use the source's TENANT_ID (stub on self-hosted Supabase)",
        )
    if s.rule == "url" and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        return Problem(
            s.name, f"`{s.name}` {value!r} is not an http(s) URL", "use e.g. http://minio:9000"
        )
    return None


def check(name: str, value: Any) -> Problem | None:
    """Judge one value of setting `name`; None when it is acceptable (None is "not set")."""
    s = get(name)
    if value is None:
        return None
    if s.type in ("integer", "number"):
        return _check_number(s, value)
    if s.type == "boolean":
        if not isinstance(value, bool):
            return Problem(s.name, f"{s.label} {value!r} is not true or false", "use true or false")
        return None
    if s.type == "array":
        if not isinstance(value, list | tuple) or not value:
            return Problem(s.name, f"no schema is listed in `{s.name}`", "list at least public")
        bad = [v for v in value if not _valid_identifier(v)]
        if bad:
            return Problem(
                s.name,
                f"`{s.name}` {list(value)!r} must be a list of names; {bad[0]!r} is not one",
                f"use names of 1 to {IDENTIFIER_MAX} characters",
            )
        return None
    return _check_string(s, value)


def cross_check(values: Mapping[str, Any]) -> list[Problem]:
    """The rules between settings, for the values present (absent or unknown ones are skipped)."""
    found: list[Problem] = []
    m, ef = _whole(values.get("hnsw_m")), _whole(values.get("hnsw_ef_construction"))
    if m is not None and ef is not None and ef < 2 * m:
        found.append(
            Problem(
                "hnsw_ef_construction",
                f"`hnsw_ef_construction` {ef} must be at least 2 x `hnsw_m` ({2 * m})",
                "raise it, or lower hnsw m (64 and 16 are pgvector's defaults)",
            )
        )
    found += _cross_check_storage(values)
    model, dims = values.get("model"), _whole(values.get("dimensions"))
    if isinstance(model, str) and dims is not None:
        expected = known_dimensions(model)
        if expected is not None and expected != dims:
            found.append(
                Problem(
                    "dimensions",
                    f"`dimensions` {dims} does not match model {model} ({expected})",
                    f"set `dimensions` to {expected} or choose a {dims}-dimension model",
                )
            )
    return found


def _cross_check_storage(values: Mapping[str, Any]) -> list[Problem]:
    """One source backend for the storage step; an endpoint only for an S3 one."""
    path, bucket = values.get("storage_source_path"), values.get("storage_source_bucket")
    endpoint = values.get("storage_source_endpoint")
    if path and bucket:
        return [
            Problem(
                "storage_source_path",
                "both `storage_source_path` and `storage_source_bucket` are set",
                "name one source backend: the file backend's directory or its S3 bucket",
            )
        ]
    if endpoint and "storage_source_bucket" in values and not bucket:
        return [
            Problem(
                "storage_source_endpoint",
                "`storage_source_endpoint` is set without `storage_source_bucket`",
                "name the source bucket too, or leave the endpoint empty",
            )
        ]
    return []


# ---------------------------------------------------------------------------------------------
# Text values (flags, environment variables) into typed values


class ParseError(ValueError):
    """A text value that is not of the setting's type; the message is neutral."""


def parse(name: str, raw: str) -> Any:
    """`raw` (a flag's or environment variable's text) as setting `name`'s type.

    :raises ParseError: the text is not of that type.
    """
    s = get(name)
    text = raw.strip()
    if s.type == "integer":
        try:
            return int(text)
        except ValueError:
            raise ParseError(f"{s.label} {raw!r} is not a whole number") from None
    if s.type == "number":
        try:
            return float(text)
        except ValueError:
            raise ParseError(f"{s.label} {raw!r} is not a number") from None
    if s.type == "boolean":
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
        raise ParseError(f"{s.label} {raw!r} is not true or false")
    if s.type == "array":
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


# ---------------------------------------------------------------------------------------------
# Each skin's words for a setting

_MENTION = re.compile(r"`([a-z][a-z0-9_]*)`")
Namer = Callable[[Setting], str]


def render(message: str, namer: Namer) -> str:
    """Replace every ```setting``` in `message` by the skin's name for it.

    Backticked words that are not settings (```vector```) keep their backticks.
    """

    def swap(match: re.Match[str]) -> str:
        s = BY_NAME.get(match.group(1))
        return namer(s) if s is not None else match.group(0)

    return _MENTION.sub(swap, message)


def cli_name(s: Setting) -> str:
    """On the command line: the flag, else the environment variable, else the plain name."""
    return s.flag or s.env or s.label


def input_label(s: Setting) -> str:
    """In a provider's ``check``: the resource input."""
    return s.input if s.steps else s.label


def pulumi_name(s: Setting) -> str:
    """Under ``pulumi up``: the config key; else the input; else where it can be set."""
    if s.key:
        return s.key
    if s.steps:
        return s.input
    where = f"`qckstrt-migrate {s.flag}`" if s.flag else "the command line"
    return f"{s.label} (not a stack setting; {where})"


def mentions(messages: Iterable[str]) -> set[str]:
    """The setting names mentioned in `messages` (for tests of the neutral wording)."""
    return {m for text in messages for m in _MENTION.findall(text) if m in BY_NAME}
