"""Schema `storage` carried faithfully, as storage-api needs it on the target.

The same machinery as the auth step (`migration.steps.auth.carry_service_schema`): the schema
through the import machinery with its own progress state (``qckstrt_migrate_storage``), so its
functions (including those whose bodies name ``storage.`` only inside string literals), the update
trigger, the foreign keys, row level security and storage-api's ``migrations`` rows arrive; then
every object handed to ``supabase_storage_admin`` (storage-api migrates as that role, with
``search_path`` storage) and the source's grants replayed (``anon``, ``authenticated``,
``service_role``, including what storage-api's migration 0021 revokes and grants on the
``s3_multipart_uploads`` tables). The storage step calls it before copying any bytes.

Its roles come from the auth step when that step runs or ran on the target; otherwise the storage
step makes the ones storage-api needs itself (``STORAGE_ROLES``), with only
``supabase_storage_admin``'s password, kept in its own secret (``storage_password_secret``), so
the step can stand alone. With neither, it stops before anything is written unless
``storage_schema`` is skip (the files only): a schema without its owner and grants would be a
trap for storage-api, not a shortcut.
"""

from __future__ import annotations

from migration.db import state
from migration.db.connection import Endpoint
from migration.db.roles import PasswordStore
from migration.errors import ConfigError
from migration.progress import NullReporter, Reporter
from migration.steps.auth import AUTH, STORAGE, AuthOptions, AuthReport, carry_service_schema


def carry_storage_schema(
    source: Endpoint,
    target: Endpoint,
    store: PasswordStore | None = None,
    options: AuthOptions | None = None,
    reporter: Reporter | None = None,
) -> AuthReport:
    """Carry schema `storage` from `source` to `target`, owned by ``supabase_storage_admin``.

    :param store: the login roles' password store: with it, the roles storage-api needs are
        made or aligned (only ``supabase_storage_admin``'s password is taken from or put into
        it); None: they must exist already (the auth step made them), else a `PreflightError`
        names them before anything changes.
    :param options: the application schemas (whose objects that use `storage` are put back),
        jobs, pg_dump, lock wait, retries.
    :raises PreflightError, ConfigError: before anything is written.
    :raises ImportFailed: while working; a re-run resumes.
    """
    return carry_service_schema(source, target, STORAGE, store, options, reporter)


def storage_schema_plan(
    target: Endpoint | None,
    auth_store: PasswordStore | None,
    storage_store: PasswordStore | None,
    app_schemas: list[str],
    mode: str = "carry",
) -> tuple[bool, PasswordStore | None, str]:
    """How the storage step treats schema `storage`: (carry it, with which store, why).

    Decided before anything is written (`run` asks before its first step), from what is there:

    - no target, `storage` named in `schemas` (the import took it plainly), or `mode` skip:
      not carried; the files only.
    - the auth step runs in this `run` (`auth_store`) or ran on this target (its state schema is
      there): carried, the roles are the auth step's (its store, or none: they exist).
    - `storage_store` (``storage_password_secret``): carried, the step makes the roles
      storage-api needs itself, its admin's password into that store.

    :raises ConfigError: none of these: names the settings that would do (nothing written).
    """
    if target is None:
        return False, None, "no target database: the files only"
    if "storage" in app_schemas:
        return False, None, "schema storage came with the import (`schemas` names it)"
    if mode == "skip":
        return False, None, "schema storage not carried (`storage_schema` skip): the files only"
    if auth_store is not None:
        return True, auth_store, "with the auth step's roles"
    with target.connect() as conn:
        auth_carried = state.read(conn, AUTH.state_schema) is not None
    if auth_carried:
        return True, None, "with the roles the auth step made"
    if storage_store is not None:
        return True, storage_store, "making the roles storage-api needs"
    raise ConfigError(
        "the storage step carries schema storage (owned by supabase_storage_admin, with its "
        "grants) and needs its roles: give `storage_password_secret` (a Secrets Manager secret "
        "ARN for supabase_storage_admin's password), or run the auth step first, or set "
        "`storage_schema` skip to copy the files only; nothing was changed",
        setting="storage_password_secret",
    )


def carry_for_storage_step(
    source: Endpoint,
    target: Endpoint | None,
    store: PasswordStore | None,
    app_schemas: list[str],
    reporter: Reporter | None = None,
    pg_dump: str | None = None,
    storage_store: PasswordStore | None = None,
    mode: str = "carry",
) -> AuthReport | None:
    """The storage step's first part: schema `storage`, before any bytes are copied.

    :param store: the auth step's password store, when the auth step runs in the same `run`.
    :param storage_store: ``supabase_storage_admin``'s password store
        (``storage_password_secret``): the step makes the roles itself without the auth step.
    :param mode: ``storage_schema``: carry, or skip (the files only).
    :returns: the carry's report, or None when it is not carried (`storage_schema_plan` says
        why, in the log).
    :raises ConfigError: the schema is to be carried and nothing makes its roles (before
        anything is written).
    """
    rep = reporter or NullReporter()
    carry, roles_store, why = storage_schema_plan(target, store, storage_store, app_schemas, mode)
    if not carry or target is None:
        rep.info(why)
        return None
    rep.info(f"schema storage: carried {why}")
    options = AuthOptions(app_schemas=[s for s in app_schemas if s != "auth"], pg_dump=pg_dump)
    return carry_storage_schema(source, target, roles_store, options, rep)
