"""What the demo shows after the migration: a GoTrue sign-in and a file, both on the target side.

Why these two: the auth and storage steps' own checks compare rows and bytes; a user notices
something else, that signing in still works and that a document's file still downloads. So:

- `sign_in` does what GoTrue does for ``POST /token?grant_type=password``, on the TARGET and as
  ``supabase_auth_admin`` with the password the auth step put in the (local) Secrets Manager:
  look the user up, compare the password with bcrypt against ``encrypted_password``, then
  insert a session, its AMR claim and a refresh token and stamp ``last_sign_in_at``. Those
  statements run in a transaction that is rolled back, so the target stays equal to the source
  and the next run's checks still compare like with like.
- `fetch_file` follows the document behind the RAG retrieval's top answer from
  ``public.documents`` to its ``storage.objects`` row on the target, builds storage-api's key
  from it, and downloads the bytes from the (local) bucket: equal to the source's file,
  content type as uploaded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo

from migration.backends.storage_sources import (
    FileBackendSource,
    SourceObject,
    list_objects,
    storage_key,
)
from migration.db.connection import Endpoint
from migration.db.roles import PasswordStore
from migration.dev.supabase_auth import INSTANCE_ID
from migration.errors import MigrationError

AUTH_ROLE = "supabase_auth_admin"


@dataclass
class SignInCheck:
    """The known user's sign-in on the target, as GoTrue would make it."""

    email: str
    password: str
    role: str
    password_ok: bool
    wrong_password_refused: bool
    session_id: str
    refresh_token_id: int

    @property
    def ok(self) -> bool:
        return self.password_ok and self.wrong_password_refused


@dataclass
class FetchedFile:
    """A document's file, downloaded from the bucket at storage-api's key."""

    document: str
    bucket: str
    key: str
    content_type: str
    size: int
    sha256: str
    equal_to_source: bool


def sign_in(target: Endpoint, store: PasswordStore, email: str, password: str) -> SignInCheck:
    """Check `password` and make a sign-in's rows as GoTrue does, then roll them back.

    :raises MigrationError: the role's password is not in the store, the user is missing, or
        the password does not match (GoTrue would answer "Invalid login credentials").
    """
    import bcrypt

    role_password = store.read(AUTH_ROLE)
    if role_password is None:
        raise MigrationError(f"no password of {AUTH_ROLE} in the demo's Secrets Manager")
    url = conninfo.make_conninfo(target.url, user=AUTH_ROLE, password=role_password)
    with psycopg.connect(url, connect_timeout=10) as conn:
        row = conn.execute(
            "SELECT id::text, encrypted_password FROM auth.users "
            "WHERE email = %s AND deleted_at IS NULL",
            (email,),
        ).fetchone()
        if row is None:
            raise MigrationError(f"sign-in check: no user {email} in the target's auth.users")
        user_id, hashed = str(row[0]), str(row[1]).encode()
        ok = bcrypt.checkpw(password.encode(), hashed)
        refused = not bcrypt.checkpw(password.encode() + b"!", hashed)
        session, token = _sign_in_rows(conn, user_id)
        conn.rollback()
    check = SignInCheck(email, password, AUTH_ROLE, ok, refused, session, token)
    if not check.ok:
        raise MigrationError(
            f"sign-in check failed for {email}: the password does not match the target's "
            "auth.users.encrypted_password"
        )
    return check


def _sign_in_rows(conn: psycopg.Connection[Any], user_id: str) -> tuple[str, int]:
    """A session, its AMR claim, a refresh token and ``last_sign_in_at``: GoTrue's sign-in."""
    session = conn.execute(
        "INSERT INTO auth.sessions (id, user_id, created_at, updated_at, aal, user_agent, ip) "
        "VALUES (gen_random_uuid(), %s, now(), now(), 'aal1', 'qckstrt-migrate demo', "
        "'127.0.0.1') RETURNING id::text",
        (user_id,),
    ).fetchone()
    assert session is not None
    conn.execute(
        "INSERT INTO auth.mfa_amr_claims (id, session_id, created_at, updated_at, "
        "authentication_method) VALUES (gen_random_uuid(), %s, now(), now(), 'password')",
        (session[0],),
    )
    token = conn.execute(
        "INSERT INTO auth.refresh_tokens (instance_id, token, user_id, revoked, created_at, "
        "updated_at, session_id) VALUES (%s, %s, %s, false, now(), now(), %s) RETURNING id",
        (INSTANCE_ID, hashlib.sha256(session[0].encode()).hexdigest()[:12], user_id, session[0]),
    ).fetchone()
    assert token is not None
    conn.execute("UPDATE auth.users SET last_sign_in_at = now() WHERE id = %s", (user_id,))
    return str(session[0]), int(str(token[0]))


def fetch_file(
    target: Endpoint,
    s3: Any,
    bucket: str,
    tenant: str,
    source: FileBackendSource,
    document_id: str,
) -> FetchedFile:
    """Download the file of document `document_id` from `bucket`; compare it with the source's.

    :raises MigrationError: the document or its object row is missing, or the bytes differ.
    """
    with target.connect() as conn:
        row = conn.execute(
            "SELECT key, location FROM public.documents WHERE id::text = %s", (document_id,)
        ).fetchone()
        if row is None:
            raise MigrationError(f"file check: no document {document_id} on the target")
        objects = {f"s3://{o.bucket_id}/{o.name}": o for o in list_objects(conn)}
    obj = objects.get(str(row[1]))
    if obj is None:
        raise MigrationError(f"file check: no storage.objects row for {row[1]} on the target")
    key = storage_key(tenant, obj.bucket_id, obj.name, obj.version)
    got = s3.get_object(Bucket=bucket, Key=key)
    data = got["Body"].read()
    fetched = FetchedFile(
        str(row[0]),
        bucket,
        key,
        str(got.get("ContentType")),
        len(data),
        hashlib.sha256(data).hexdigest(),
        data == _source_bytes(source, obj),
    )
    if not fetched.equal_to_source:
        raise MigrationError(f"file check: s3://{bucket}/{key} differs from the source's file")
    return fetched


def _source_bytes(source: FileBackendSource, obj: SourceObject) -> bytes:
    return Path(source.path(obj)).read_bytes()
