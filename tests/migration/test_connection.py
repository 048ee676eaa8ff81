"""Connections fail fast and say why, without passwords."""

from __future__ import annotations

import time

import pytest

from migration.db.connection import Endpoint, mask_url
from migration.dev.local import free_port
from migration.errors import ConfigError, ConnectionFailed
from tests.migration.conftest import Servers
from tests.migration.tlsproxy import Blackhole


def test_mask_url_hides_passwords() -> None:
    assert mask_url("postgresql://u:s3cret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert "s3cret" not in mask_url("host=h user=u password=s3cret dbname=d")
    assert "s3cret" not in mask_url("postgresql://u@h/db?password=s3cret")


@pytest.mark.parametrize("password", ["p@ss/w0rd:#?%&=", "a/b", "x?y@z", "s#3@c/r"])
def test_an_unencoded_password_is_refused_without_showing_any_of_it(password: str) -> None:
    """A password typed raw into a URL: / ? or # end the authority early, so the URL's own
    parser would take part of the password for the host (and print it)."""
    url = f"postgresql://admin2:{password}@db.example:5432/postgres?sslmode=require"
    masked = mask_url(url)
    assert masked == "postgresql://admin2:***@db.example:5432/postgres?sslmode=require"
    with pytest.raises(ConfigError, match="percent-encode") as info:
        Endpoint(url, "source")
    message = str(info.value)
    for piece in {password[i : i + 3] for i in range(len(password) - 2)}:
        assert piece not in message.replace("%40", "").replace("%2F", "").replace("%3A", "")


def test_valid_urls_with_an_at_sign_or_a_port_are_not_taken_for_a_raw_password() -> None:
    for url in (
        "postgresql://u:s3cret@h:5432/db?application_name=a@b",
        "postgresql://h:5432/db?user=me@corp&sslmode=require",
        "postgresql://[::1]:5432/db?user=me@corp",
    ):
        Endpoint(url, "source")  # accepted
        assert "s3cret" not in mask_url(url)
    assert mask_url("postgresql://h:5432/db?user=me@corp") == "postgresql://h:5432/db?user=me@corp"
    assert (
        mask_url("postgresql://u:s3cret@h:5432/db?application_name=a@b")
        == "postgresql://u:***@h:5432/db?application_name=a@b"
    )


def test_wrong_password_is_not_retried_and_not_printed(
    servers: Servers, target: tuple[str, str]
) -> None:
    name, _ = target
    url = servers.target_url(name, password="wrong-pw-123")
    started = time.monotonic()
    with pytest.raises(ConnectionFailed, match="password") as info:
        Endpoint(url, "target").connect()
    assert time.monotonic() - started < 5
    assert "wrong-pw-123" not in str(info.value)


def test_non_ssl_client_is_refused_by_the_ssl_only_target(
    servers: Servers, target: tuple[str, str]
) -> None:
    name, _ = target
    with pytest.raises(ConnectionFailed, match="sslmode=require"):
        Endpoint(servers.target_url(name, sslmode="disable"), "target").connect()


def test_closed_port_and_blackhole_fail_within_bounded_time() -> None:
    port = free_port()
    with pytest.raises(ConnectionFailed, match="refused"):
        Endpoint(f"postgresql://u:p@127.0.0.1:{port}/db", "target", attempts=2).connect()
    hole = Blackhole()
    try:
        started = time.monotonic()
        with pytest.raises(ConnectionFailed, match="2s"):
            Endpoint(
                f"postgresql://u:p@127.0.0.1:{hole.port}/db",
                "target",
                connect_timeout=2,
                attempts=2,
            ).connect()
        assert time.monotonic() - started < 2 * 2 + 3
    finally:
        hole.close()
