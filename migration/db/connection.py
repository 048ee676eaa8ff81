"""Connections: libpq URLs, masking, bounded timeouts and bounded retries.

Everything that talks to the target goes through psycopg (which has SSL), never through the
PostgreSQL client binaries of the embedded wheel (which have none).
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import conninfo, sql
from tenacity import (
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from migration.errors import ConfigError, ConnectionFailed

Conn = psycopg.Connection[tuple[Any, ...]]

DEFAULT_CONNECT_TIMEOUT = 10
DEFAULT_ATTEMPTS = 3

# libpq reports connection failures as text only (psycopg gives no SQLSTATE before the session
# exists), so these few phrases are the only way to tell a refusal from a transient failure.
_PERMANENT = (
    "password authentication failed",
    "no pg_hba.conf entry",
    "does not exist",
    "SSL is not enabled",
    "server does not support SSL",
    "SSL off",
    "no encryption",
    "sslmode value",
    "invalid connection option",
    "too many connections",
)
_SSL_REFUSED = ("no pg_hba.conf entry", "SSL off", "no encryption")


#: What a user name and password must percent-encode in a URL (a malformed URL's fix).
URL_ENCODING_HINT = (
    "percent-encode special characters in the user name and password "
    "(@ as %40, / as %2F, : as %3A, # as %23, ? as %3F, % as %25), "
    "e.g. urllib.parse.quote(password, safe='')"
)


def _raw_password_end(url: str, *, strict: bool = True) -> int | None:
    """Where the userinfo of `url` ends (its last ``@``) when its password holds an unencoded
    ``/``, ``?`` or ``#``; None otherwise.

    Such a character ends a URL's authority early: libpq and urlsplit then take part of the
    password for the host, port or database (and would print it in messages). `strict`: only
    when no ``@`` comes before it (else ``u:pw@host/db?application_name=a@b``, a valid URL,
    reads the same as ``u:p@ss/word@host``; libpq refuses the latter, and then its mask hides
    all up to the last ``@``).
    """
    scheme_end = url.find("://")
    if scheme_end < 0:
        return None
    start = scheme_end + 3
    user = re.match(r"[^:/@?#\[]*:", url[start:])
    at = url.rfind("@")
    if user is None or at < start:
        return None
    after = start + user.end()
    first_stop = re.search(r"[/?#]", url[after:at])
    if first_stop is None:
        return None
    port = url[after : after + first_stop.start()]
    if re.fullmatch(r"\d*", port) or (strict and "@" in port):
        return None
    return at


def _parses(url: str) -> bool:
    try:
        conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return False
    return True


def mask_url(url: str) -> str:
    """Return `url` with any password replaced by ``***`` (URL or key=value form)."""
    raw_end = _raw_password_end(url, strict=False)
    if raw_end is not None and (_raw_password_end(url) is not None or not _parses(url)):
        user = url[: url.index(":", url.index("://") + 3)]
        return re.sub(r"password=[^&\s]*", "password=***", f"{user}:***{url[raw_end:]}")
    if "://" in url:
        try:
            parts = urlsplit(url)
        except ValueError:  # malformed (an unclosed IPv6 bracket, ...): mask what looks like one
            return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)
        if parts.password is None:
            return re.sub(r"password=[^&\s]*", "password=***", url)
        netloc = parts.netloc.rsplit("@", 1)
        user = netloc[0].split(":", 1)[0]
        masked = urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))
        return re.sub(r"password=[^&\s]*", "password=***", masked)
    return re.sub(r"password\s*=\s*('[^']*'|\S+)", "password=***", url)


def _scrub(message: str, url: str) -> str:
    """Remove the password of `url` from a driver message (belt and braces)."""
    try:
        password = conninfo.conninfo_to_dict(url).get("password")
    except psycopg.ProgrammingError:
        password = None
    if password:
        message = message.replace(str(password), "***")
    return " ".join(message.split())


@dataclass(frozen=True)
class Endpoint:
    """A database to connect to.

    :param url: libpq URL or key=value string; may carry a password (never printed).
    :param name: ``source`` or ``target``, used in messages.
    :param connect_timeout: seconds libpq waits for one connection attempt.
    :param attempts: connection attempts for transient failures (exponential backoff).
    """

    url: str
    name: str = "database"
    connect_timeout: int = DEFAULT_CONNECT_TIMEOUT
    attempts: int = DEFAULT_ATTEMPTS

    def __post_init__(self) -> None:
        if not self.url:
            raise ConfigError(f"{self.name} database URL is empty")
        if _raw_password_end(self.url) is not None:
            raise ConfigError(
                f"{self.name} database URL's password holds an unencoded /, ? or #: "
                f"{mask_url(self.url)} ({URL_ENCODING_HINT})"
            )
        try:
            conninfo.conninfo_to_dict(self.url)
        except psycopg.ProgrammingError as exc:
            raise ConfigError(
                f"{self.name} database URL is not a valid libpq URL: {mask_url(self.url)} "
                f"({URL_ENCODING_HINT})"
            ) from exc

    @property
    def masked(self) -> str:
        return mask_url(self.url)

    def params(self) -> dict[str, Any]:
        """The URL's parameters, with a connect timeout unless the URL sets one, and the
        session settings every engine session has (`SESSION_OPTIONS`, UTF8)."""
        params = dict(conninfo.conninfo_to_dict(self.url))
        params.setdefault("connect_timeout", str(self.connect_timeout))
        params.setdefault("application_name", "qckstrt-migrate")
        options = params.get("options")
        params["options"] = _with_session_options(str(options) if options else None)
        params["client_encoding"] = "UTF8"
        return params

    def identity(self) -> str:
        """``host:port/dbname`` without user or password: what a run's fingerprint records."""
        p = conninfo.conninfo_to_dict(self.url)
        return f"{p.get('host', 'localhost')}:{p.get('port', '5432')}/{p.get('dbname', '')}"

    def connect(self, autocommit: bool = False) -> Conn:
        """Open a connection, retrying transient failures a bounded number of times.

        :raises ConnectionFailed: with a one-line cause (no password) and what to check.
        """
        return connect(self, autocommit=autocommit)

    def libpq_env(self) -> tuple[str, dict[str, str]]:
        """A password-free conninfo for client binaries, and an environment carrying the rest.

        Passwords go through ``PGPASSWORD``, never argv, which other users can read.
        """
        params = {k: str(v) for k, v in conninfo.conninfo_to_dict(self.url).items()}
        password = params.pop("password", None)
        params.setdefault("connect_timeout", str(self.connect_timeout))
        env = dict(os.environ)
        if password is not None:
            env["PGPASSWORD"] = password
        env["PGOPTIONS"] = _with_session_options(params.pop("options", env.get("PGOPTIONS")))
        env["PGCLIENTENCODING"] = "UTF8"
        return conninfo.make_conninfo(**params), env


#: Set on every session the engine opens (psycopg's, and the client binaries' via PGOPTIONS):
#: a source configured with ``extra_float_digits = 0`` (Supabase's server configuration) would
#: otherwise round ``real``/``double precision`` in any text COPY and text checksum; 3 gives the
#: exact shortest representation, as pg_dump and pgcopydb use.
SESSION_OPTIONS = "-c extra_float_digits=3"


def _with_session_options(options: str | None) -> str:
    return f"{options} {SESSION_OPTIONS}" if options else SESSION_OPTIONS


def _transient(exc: BaseException) -> bool:
    if not isinstance(exc, psycopg.OperationalError):
        return False
    text = str(exc)
    return not any(p in text for p in _PERMANENT)


def _explain(endpoint: Endpoint, exc: psycopg.Error) -> ConnectionFailed:
    text = _scrub(str(exc), endpoint.url)
    hint = ""
    if "password authentication failed" in text:
        hint = "check the user and password"
    elif any(p in text for p in _SSL_REFUSED):
        hint = "the server requires SSL (RDS forces it): use sslmode=require"
    elif "timeout" in text or "timed out" in text:
        hint = (
            f"nothing answered within {endpoint.connect_timeout}s: check host, port, "
            "security groups or the tunnel"
        )
    elif "Connection refused" in text:
        hint = "nothing listens there: check host and port"
    elif "does not exist" in text:
        hint = "check the database name"
    suffix = f" ({hint})" if hint else ""
    return ConnectionFailed(f"cannot connect to {endpoint.name} {endpoint.masked}: {text}{suffix}")


def connect(endpoint: Endpoint, autocommit: bool = False) -> Conn:
    """Connect to `endpoint`; see `Endpoint.connect`."""
    params = endpoint.params()

    @retry(
        retry=retry_if_exception(_transient),
        stop=stop_after_attempt(max(1, endpoint.attempts)),
        wait=wait_exponential(multiplier=0.5, max=5),
        reraise=True,
    )
    def attempt() -> Conn:
        return psycopg.connect(autocommit=autocommit, **params)

    try:
        return attempt()
    except psycopg.Error as exc:
        raise _explain(endpoint, exc) from exc


def server_major(conn: Conn) -> int:
    """The server's major version (16 for 16.4)."""
    return conn.info.server_version // 10000


def database_identity(conn: Conn) -> tuple[str, str]:
    """What tells two databases apart whatever the URL: the server's start time and the name.

    Two URLs can name one database (a hostname and an IP, a proxy, a tunnel), so URLs are not
    compared. The postmaster's start time (microseconds) differs between any two servers in
    practice, and any role may read it, unlike the cluster's system identifier.
    """
    row = conn.execute("SELECT pg_postmaster_start_time()::text, current_database()").fetchone()
    assert row is not None
    return str(row[0]), str(row[1])


def refuse_same_database(source: Conn, target: Conn) -> None:
    """Stop before anything is written when the target is the source itself.

    :raises ConfigError: both connections reach one database.
    """
    if database_identity(source) == database_identity(target):
        raise ConfigError(
            "the target is the source database itself (same server and database): point "
            "TARGET_DATABASE_URL at the new RDS database; nothing was changed"
        )


#: Let the server abandon a statement soon after our client dies (PostgreSQL 14+): otherwise a
#: killed run's long statement (an index build) goes on for its full duration, holding locks
#: the re-run then waits on.
CLIENT_CHECK_INTERVAL = "2s"


def watch_client(conn: Conn) -> None:
    """Ask the server to end this session's statement once our process is gone.

    Only a statement in progress needs it: an idle session ends when its connection drops. A
    server before 14 has no such setting; the run proceeds without it.
    """
    with contextlib.suppress(psycopg.Error), conn.transaction():
        conn.execute(
            sql.SQL("SET client_connection_check_interval = {}").format(
                sql.Literal(CLIENT_CHECK_INTERVAL)
            )
        )
