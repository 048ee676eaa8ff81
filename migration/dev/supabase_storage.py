"""Supabase Storage as storage-api v1.11.8 leaves it: schema `storage`, rows, and the file tree.

For the demo's source and the tests' (which bring their own objects): the storage step must
carry the real schema and read the real file-backend layout, so both are reproduced.

`install_storage_schema` replays storage-api's own tenant migrations
(``storage_api_v1_11_8/`` beside this module, byte for byte, shipped as package data) the way
its runner does on a self-hosted stack: as ``supabase_storage_admin`` (so it owns everything),
``search_path`` ``storage, public, extensions``, ``storage.install_roles`` off (the Supabase
image creates the roles), each file in its own transaction recorded in ``storage.migrations``
with postgres-migrations' hash.

`insert_rows` writes buckets and objects as storage-api's upload path does (``metadata`` with
``eTag`` (quoted md5), ``size``, ``mimetype``, ``cacheControl``, ...; a ``version`` uuid, or none
for objects uploaded before migration 0016); `write_files` lays the bytes out as its file
backend does:
``<FILE_STORAGE_BACKEND_PATH>/<GLOBAL_S3_BUCKET>/<TENANT_ID>/<bucket_id>/<name>/<version>``
(``stub``/``stub`` on the self-hosted docker-compose), content type and cache control in the
``user.supabase.content-type`` / ``user.supabase.cache-control`` extended attributes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

MIGRATIONS = Path(__file__).with_name("storage_api_v1_11_8")
#: The owner of objects that name none (storage-api writes the uploader's user id).
DEFAULT_OWNER = "8d0fd2b3-9ca7-4d9e-a95f-9e13dded323e"
STORAGE_ROLES = ("anon", "authenticated", "service_role", "supabase_storage_admin")
#: The self-hosted docker-compose's GLOBAL_S3_BUCKET and TENANT_ID.
STUB = "stub"
XATTR_CONTENT_TYPE = "user.supabase.content-type"
XATTR_CACHE_CONTROL = "user.supabase.cache-control"

Conn = psycopg.Connection[tuple[object, ...]]


@dataclass(frozen=True)
class StoredObject:
    """One object as a test expects to find it after the copy.

    :param in_metadata: whether the row's metadata carries ``mimetype``/``cacheControl`` (rows
        written before storage-api stored them carry ``size`` and ``eTag`` only).
    """

    bucket_id: str
    name: str
    data: bytes
    content_type: str
    cache_control: str = "max-age=3600"
    version: str | None = field(default_factory=lambda: str(uuid.uuid4()))
    in_metadata: bool = True
    owner: str = DEFAULT_OWNER

    @property
    def md5(self) -> str:
        return hashlib.md5(self.data).hexdigest()

    def key(self, tenant: str = STUB) -> str:
        """storage-api's S3 key: ``<tenant>/<bucket>/<name>`` plus ``/<version>`` when set."""
        base = f"{tenant}/{self.bucket_id}/{self.name}"
        return f"{base}/{self.version}" if self.version else base

    def metadata(self) -> dict[str, object]:
        """The row's ``metadata`` as storage-api's upload writes it (file backend's headObject)."""
        meta: dict[str, object] = {
            "eTag": f'"{self.md5}"',
            "size": len(self.data),
            "lastModified": "2024-11-02T10:15:00.000Z",
            "contentLength": len(self.data),
            "httpStatusCode": 200,
        }
        if self.in_metadata:
            meta["mimetype"] = self.content_type
            meta["cacheControl"] = self.cache_control
        return meta


def migration_files() -> list[Path]:
    """The migrations in id order (``00010-...`` is id 10, as postgres-migrations parses it)."""
    files = [p for p in MIGRATIONS.iterdir() if p.suffix == ".sql"]
    return sorted(files, key=lambda p: int(p.name.split("-")[0].split("_")[0]))


def _id_and_name(file: Path) -> tuple[int, str]:
    match = re.match(r"^(-?\d+)[-_]?(.*)\.(sql|js)$", file.name, re.IGNORECASE)
    if match is None:
        raise ValueError(f"{file.name}: not a storage-api migration file name")
    return int(match.group(1)), match.group(2) or file.name


def migration_hash(file: Path) -> str:
    """postgres-migrations' hash: sha1 of the file name followed by its contents."""
    return hashlib.sha1((file.name + file.read_text()).encode()).hexdigest()


def install_storage_schema(conn: Conn) -> None:
    """Build schema `storage` in `conn`'s database from the migrations.

    `conn` is a superuser's, autocommit (each migration commits alone) or inside the caller's
    transaction (the demo seeds its source in one). Roles are cluster-wide and created only
    when missing, so this can run on any database.
    """
    for role in STORAGE_ROLES:
        login = "LOGIN NOINHERIT CREATEROLE" if role == "supabase_storage_admin" else "NOLOGIN"
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE ROLE {} " + login).format(sql.Identifier(role)))
    conn.execute("ALTER ROLE supabase_storage_admin SET search_path = storage")
    # What the Supabase image's init scripts do before storage-api first connects.
    conn.execute(
        "CREATE SCHEMA storage AUTHORIZATION supabase_admin;"
        "GRANT USAGE ON SCHEMA storage TO anon, authenticated, service_role;"
        "GRANT ALL ON SCHEMA storage TO supabase_storage_admin;"
        "ALTER DEFAULT PRIVILEGES FOR ROLE supabase_storage_admin IN SCHEMA storage "
        "  GRANT ALL ON TABLES TO anon, authenticated, service_role;"
        "ALTER DEFAULT PRIVILEGES FOR ROLE supabase_storage_admin IN SCHEMA storage "
        "  GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;"
        "ALTER DEFAULT PRIVILEGES FOR ROLE supabase_storage_admin IN SCHEMA storage "
        "  GRANT ALL ON SEQUENCES TO anon, authenticated, service_role"
    )
    conn.execute("SET ROLE supabase_storage_admin")
    conn.execute("SET search_path TO storage, public, extensions")
    conn.execute(
        "SELECT set_config('storage.install_roles', 'false', false),"
        " set_config('storage.anon_role', 'anon', false),"
        " set_config('storage.authenticated_role', 'authenticated', false),"
        " set_config('storage.service_role', 'service_role', false),"
        " set_config('storage.super_user', 'supabase_storage_admin', false)"
    )
    for file in migration_files():
        ident, name = _id_and_name(file)
        with conn.transaction():
            conn.execute(file.read_text().encode())
            conn.execute(
                "INSERT INTO migrations (id, name, hash) VALUES (%s, %s, %s)",
                (ident, name, migration_hash(file)),
            )
    conn.execute("RESET ROLE")
    conn.execute("RESET search_path")


def file_path(root: Path, obj: StoredObject, global_bucket: str = STUB, tenant: str = STUB) -> Path:
    """Where storage-api's file backend keeps `obj`'s bytes under `root`."""
    return root / global_bucket / obj.key(tenant)


def xattrs_supported(directory: Path) -> bool:
    """Whether `directory`'s filesystem takes ``user.*`` extended attributes (tmpfs may not)."""
    probe = directory / ".xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, XATTR_CONTENT_TYPE, b"text/plain")
        return True
    except OSError:
        return False
    finally:
        probe.unlink()


def write_files(
    root: Path,
    objects: Sequence[StoredObject],
    *,
    global_bucket: str = STUB,
    tenant: str = STUB,
    xattrs: bool = True,
) -> None:
    """Lay `objects` out as the file backend does, with its extended attributes when `xattrs`."""
    for obj in objects:
        path = file_path(root, obj, global_bucket, tenant)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(obj.data)
        if xattrs:
            os.setxattr(path, XATTR_CONTENT_TYPE, obj.content_type.encode())
            os.setxattr(path, XATTR_CACHE_CONTROL, obj.cache_control.encode())


def insert_rows(
    conn: Conn,
    objects: Sequence[StoredObject],
    buckets: Sequence[tuple[str, bool]],
    owner: str = DEFAULT_OWNER,
) -> None:
    """Buckets ((id, public) each, owned by `owner`) and object rows, as storage-api's API
    inserts them."""
    with conn.transaction():
        for bucket, public in buckets:
            conn.execute(
                "INSERT INTO storage.buckets (id, name, public, owner_id) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                (bucket, bucket, public, owner),
            )
        for obj in objects:
            conn.execute(
                "INSERT INTO storage.objects (bucket_id, name, owner, owner_id, metadata, version,"
                " user_metadata) VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s::jsonb)",
                (
                    obj.bucket_id,
                    obj.name,
                    obj.owner,
                    obj.owner,
                    json.dumps(obj.metadata()),
                    obj.version,
                    json.dumps({}),
                ),
            )


def storage_shape(conn: Conn) -> dict[str, object]:
    """What storage-api relies on in schema `storage`, comparable between source and target:
    its functions, triggers, foreign keys, row level security, and migrations bookkeeping."""

    def rows(query: str) -> list[tuple[object, ...]]:
        return sorted(conn.execute(query).fetchall(), key=repr)

    return {
        "functions": rows(
            "SELECT proname, pg_get_function_identity_arguments(oid) FROM pg_proc "
            "WHERE pronamespace = 'storage'::regnamespace"
        ),
        "triggers": rows(
            "SELECT tgrelid::regclass::text, tgname, tgfoid::regproc::text FROM pg_trigger "
            "WHERE NOT tgisinternal AND tgrelid IN "
            "(SELECT oid FROM pg_class WHERE relnamespace = 'storage'::regnamespace)"
        ),
        "foreign keys": rows(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
            "FROM pg_constraint WHERE contype = 'f' AND connamespace = 'storage'::regnamespace"
        ),
        "row security": rows(
            "SELECT relname, relrowsecurity FROM pg_class "
            "WHERE relnamespace = 'storage'::regnamespace AND relkind = 'r'"
        ),
        "migrations": rows("SELECT id, name, hash FROM storage.migrations"),
    }
