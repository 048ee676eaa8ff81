"""The tests' Supabase Storage objects, on `migration.dev.supabase_storage`'s schema and layout.

The schema replay, the rows and the file-backend tree are the package's (the demo builds its
source with them too); here are the objects the storage tests expect to find after the copy:
odd names, a pre-0016 object without version, an empty placeholder, a legacy row without
``mimetype``, two buckets.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from migration.dev.supabase_storage import (
    STUB,
    Conn,
    StoredObject,
    file_path,
    install_storage_schema,
    storage_shape,
    xattrs_supported,
)
from migration.dev.supabase_storage import insert_rows as _insert_rows
from migration.dev.supabase_storage import write_files as _write_files

__all__ = [
    "BUCKETS",
    "OBJECTS",
    "StoredObject",
    "file_path",
    "insert_rows",
    "install_storage_schema",
    "storage_shape",
    "write_files",
    "xattrs_supported",
]

BUCKETS = (("documents", False), ("avatars", True))
_USER = "8d0fd2b3-9ca7-4d9e-a95f-9e13dded323e"

OBJECTS: tuple[StoredObject, ...] = (
    StoredObject(
        "documents",
        f"{_USER}/report Q3 2024.pdf",
        b"%PDF-1.4\n" + os.urandom(3000),
        "application/pdf",
    ),
    StoredObject(
        "documents",
        f"{_USER}/Résumé \u2013 été 2024.txt",
        "Résumé: grâce à l'été, ça marche.\n".encode(),
        "text/plain;charset=UTF-8",
        cache_control="no-cache",
    ),
    StoredObject(
        "documents",
        f"{_USER}/deep/nested/folder/notes.md",
        b"# notes\n" * 200,
        "text/markdown",
        version=None,
    ),
    StoredObject(
        "documents", f"{_USER}/deep/.emptyFolderPlaceholder", b"", "application/octet-stream"
    ),
    StoredObject(
        "documents",
        "legacy/old scan.png",
        b"\x89PNG\r\n\x1a\n" + os.urandom(500),
        "image/png",
        in_metadata=False,
    ),
    StoredObject(
        "avatars",
        "user 2/avatar.jpg",
        b"\xff\xd8\xff" + os.urandom(800),
        "image/jpeg",
        cache_control="max-age=86400",
    ),
)


def write_files(
    root: Path,
    objects: Sequence[StoredObject] = OBJECTS,
    *,
    global_bucket: str = STUB,
    tenant: str = STUB,
    xattrs: bool = True,
) -> None:
    """The package's `write_files`, with the tests' objects by default."""
    _write_files(root, objects, global_bucket=global_bucket, tenant=tenant, xattrs=xattrs)


def insert_rows(conn: Conn, objects: Sequence[StoredObject] = OBJECTS) -> None:
    """The package's `insert_rows`, with the tests' buckets and objects."""
    _insert_rows(conn, objects, BUCKETS, _USER)
