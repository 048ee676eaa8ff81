"""Schema `storage` carried by the import: what storage-api needs to start on the target.

The source's schema is storage-api v1.11.8's own (its migrations replayed); the target must end
with the same functions, trigger, foreign keys, row level security and migrations rows, so that
storage-api of that version starts there without migrating.
"""

from __future__ import annotations

import itertools

import psycopg

from migration.connection import Endpoint
from migration.extension import setup_extension
from migration.transfer import ImportOptions, import_database
from tests.databases import TEMPLATE, Servers
from tests.migration.supabase_storage import (
    OBJECTS,
    insert_rows,
    install_storage_schema,
    storage_shape,
)

_counter = itertools.count()


def test_import_of_schema_storage_keeps_what_storage_api_needs(servers: Servers) -> None:
    name = f"storage_src_{next(_counter)}"
    servers.source.create_database(name, template=TEMPLATE)
    with servers.source.superuser(name) as conn:
        conn.execute("DROP SCHEMA storage CASCADE")  # the template's sketch of it
        install_storage_schema(conn)
        insert_rows(conn, OBJECTS)
        expected = storage_shape(conn)
    _, target_url = servers.target_db()
    source, target = Endpoint(servers.source.url(name), "source"), Endpoint(target_url, "target")
    setup_extension(target, source)
    import_database(source, target, ImportOptions(schemas=["public", "storage"]))
    with psycopg.connect(target_url) as conn:
        assert storage_shape(conn) == expected
        assert conn.execute("SELECT count(*) FROM storage.objects").fetchone() == (len(OBJECTS),)
