"""Schema `storage` carried faithfully, as storage-api needs it on the target.

The same machinery as the auth step (`migration.steps.auth.carry_service_schema`): the schema
through the import machinery with its own progress state (``qckstrt_migrate_storage``), so its
functions (including those whose bodies name ``storage.`` only inside string literals), the update
trigger, the foreign keys, row level security and storage-api's ``migrations`` rows arrive; then
every object handed to ``supabase_storage_admin`` (storage-api migrates as that role, with
``search_path`` storage) and the source's grants replayed (``anon``, ``authenticated``,
``service_role``, including what storage-api's migration 0021 revokes and grants on the
``s3_multipart_uploads`` tables). The storage step calls it before copying any bytes.
"""

from __future__ import annotations

from migration.db import state
from migration.db.connection import Endpoint
from migration.db.roles import PasswordStore
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

    :param store: the login roles' password store; None: the service roles must exist already
        (the auth step made them), else a `PreflightError` names them before anything changes.
    :param options: the application schemas (whose objects that use `storage` are put back),
        jobs, pg_dump, lock wait, retries.
    :raises PreflightError, ConfigError: before anything is written.
    :raises ImportFailed: while working; a re-run resumes.
    """
    return carry_service_schema(source, target, STORAGE, store, options, reporter)


def carry_for_storage_step(
    source: Endpoint,
    target: Endpoint | None,
    store: PasswordStore | None,
    app_schemas: list[str],
    reporter: Reporter | None = None,
    pg_dump: str | None = None,
) -> AuthReport | None:
    """The storage step's first part: schema `storage`, before any bytes are copied.

    Carried when the auth step runs or ran on this target database (a password store is given,
    or the auth step's state is there): it made the service roles that own and use the schema.
    Otherwise, and when the import took `storage` itself (named in `schemas`) or there is no
    target, it says why it is not carried here and returns None: copying the bytes does not
    need it.
    """
    rep = reporter or NullReporter()
    if target is None:
        return None
    if "storage" in app_schemas:
        rep.info("schema storage came with the import (`schemas` names it): not carried again")
        return None
    if store is None:
        with target.connect() as conn:
            auth_carried = state.read(conn, AUTH.state_schema) is not None
        if not auth_carried:
            rep.info(
                "schema storage not carried: the auth step has not run on this target (it makes "
                "the roles that own and use it); run it, then this step again"
            )
            return None
    options = AuthOptions(app_schemas=[s for s in app_schemas if s != "auth"], pg_dump=pg_dump)
    return carry_storage_schema(source, target, store, options, rep)
