"""Fast tier: which Supabase schema a piece of SQL refers to, given what is carried."""

from __future__ import annotations

from migration.db.supabase import supabase_reference


def test_references_to_a_carried_schema_are_not_reasons() -> None:
    fk = "FOREIGN KEY (user_id) REFERENCES auth.users(id) ON DELETE CASCADE"
    assert supabase_reference(fk) == "auth"
    assert supabase_reference(fk, {"auth"}) is None
    both = "SELECT auth.uid() = owner AND storage.foldername(name) IS NOT NULL"
    assert supabase_reference(both, {"auth"}) == "storage"
    assert supabase_reference(both, {"auth", "storage"}) is None
    assert supabase_reference("nextval('auth.refresh_tokens_id_seq'::regclass)", {"auth"}) is None
    assert supabase_reference("current_setting('request.jwt.claim.sub', true)") is None
    assert supabase_reference('SELECT "vault".decrypted_secrets') == "vault"
