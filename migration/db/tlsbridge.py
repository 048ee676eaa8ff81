"""SSL for client binaries built without it: a loopback TLS bridge.

The embedded wheel's pg_dump and pg_restore (what ``make install`` provides) are built without
OpenSSL: ``sslmode=require`` makes them stop ("SSL support is not compiled in") and, without
``sslmode``, they cannot reach a server that only accepts SSL (RDS with ``rds.force_ssl``, a
Supabase behind ``hostssl``). psycopg's libpq has SSL, the binaries' has not. So when a binary
must reach a server and cannot speak SSL itself, the engine runs it against a bridge on
``127.0.0.1:<ephemeral port>``: for each connection the bridge opens TCP to the real server, sends
the PostgreSQL SSLRequest, wraps the socket with Python's `ssl` as the URL's ``sslmode`` asks
(``require``: encrypted, no verification, or verify-ca where a root certificate is given, as
libpq does; ``verify-ca``: the chain against ``sslrootcert``; ``verify-full``: the chain and the
host name; ``prefer``/``allow``, libpq's default: TLS when the server offers it, else plain), then
relays bytes both ways. The binary speaks plain protocol to the loopback port
(``sslmode=disable``); the password travels in ``PGPASSWORD`` and inside the tunnel, never in
argv. A binary whose libpq has SSL (a ``pg_dump`` on PATH, ``--pg-dump``) is run directly.
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import socket
import ssl
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from psycopg import conninfo

from migration.db.connection import Endpoint
from migration.errors import ConfigError

SSL_REQUEST = struct.pack("!II", 8, 80877103)
_BRIDGED_MODES = ("allow", "prefer", "require", "verify-ca", "verify-full")


@functools.cache
def supports_ssl(tool: Path) -> bool:
    """Whether a PostgreSQL client binary's libpq was built with SSL.

    Asked of the binary itself: with ``sslmode=require`` towards a closed loopback port, one
    built without SSL refuses the option before connecting; one with SSL tries and is refused.
    """
    try:
        proc = subprocess.run(
            [str(tool), "--dbname", "host=127.0.0.1 port=1 sslmode=require connect_timeout=2"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
            env={**os.environ, "PGPASSWORD": ""},
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "not compiled in" not in proc.stderr


def client_context(params: dict[str, str], host: str) -> tuple[ssl.SSLContext, str]:
    """The TLS context libpq would use for `params`; and the effective sslmode.

    :raises ConfigError: verify-ca/verify-full without a root certificate, or an unreadable
        certificate file (named, with what to give).
    """
    mode = params.get("sslmode") or os.environ.get("PGSSLMODE") or "prefer"
    root = params.get("sslrootcert") or os.environ.get("PGSSLROOTCERT")
    default_root = Path.home() / ".postgresql" / "root.crt"
    if root is None and default_root.exists():
        root = str(default_root)
    if mode == "require" and root and root != "system":
        mode = "verify-ca"  # libpq: require with a root certificate file verifies the chain
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if mode in ("verify-ca", "verify-full"):
        if root is None:
            raise ConfigError(
                f"sslmode={mode} needs sslrootcert=<CA bundle file> in the URL (for RDS, its "
                "global-bundle.pem) or ~/.postgresql/root.crt"
            )
        try:
            if root == "system":
                ctx.load_default_certs()
            else:
                ctx.load_verify_locations(cafile=root)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"sslrootcert {root}: cannot be read ({exc})") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.check_hostname = mode == "verify-full"
    cert, key = params.get("sslcert"), params.get("sslkey")
    if cert and Path(cert).exists():
        try:
            ctx.load_cert_chain(cert, key or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"sslcert {cert}: cannot be loaded ({exc})") from None
    return ctx, mode


def _error_packet(message: str) -> bytes:
    """A FATAL ErrorResponse, which the bridged binary prints as the server's own error."""
    fields = [b"SFATAL", b"VFATAL", b"C08006", b"M" + message.encode()]
    body = b"".join(f + b"\0" for f in fields) + b"\0"
    return b"E" + struct.pack("!I", len(body) + 4) + body


class TlsBridge:
    """Listen on 127.0.0.1:0; relay each connection to (host, port) over TLS per `mode`."""

    def __init__(
        self,
        host: str,
        port: int,
        ctx: ssl.SSLContext,
        mode: str,
        timeout: float,
        server_name: str | None = None,
    ) -> None:
        self.host, self.remote_port, self._ctx, self.mode = host, port, ctx, mode
        self._server_name = server_name or host
        self._timeout = timeout
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self.port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        threading.Thread(target=self._serve, daemon=True, name="tls-bridge").start()

    def __enter__(self) -> TlsBridge:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _open(self) -> socket.socket:
        """TCP to the server, SSLRequest, TLS (or plain where the mode allows it)."""
        raw = socket.create_connection((self.host, self.remote_port), timeout=self._timeout)
        raw.sendall(SSL_REQUEST)
        answer = raw.recv(1)
        if answer == b"S":
            hostname = self._server_name if self._ctx.check_hostname else None
            tls = self._ctx.wrap_socket(raw, server_hostname=hostname)
            tls.settimeout(None)
            return tls
        if answer == b"N" and self.mode in ("allow", "prefer"):
            # The server declined SSL; a fresh connection speaks plain protocol.
            raw.close()
            plain = socket.create_connection((self.host, self.remote_port), timeout=self._timeout)
            plain.settimeout(None)
            return plain
        raw.close()
        raise ssl.SSLError(f"the server does not accept SSL but sslmode is {self.mode}")

    def _handle(self, client: socket.socket) -> None:
        try:
            upstream = self._open()
        except (OSError, ssl.SSLError) as exc:
            with contextlib.suppress(OSError):
                client.sendall(
                    _error_packet(
                        f"TLS bridge to {self.host}:{self.remote_port} (sslmode={self.mode}) "
                        f"failed: {exc}"
                    )
                )
                client.close()
            return
        _relay(client, upstream)


def _relay(client: socket.socket, upstream: socket.socket) -> None:
    """Copy bytes both ways until either side ends, in one thread.

    One thread, not one per direction: an SSL object must not be read and written from two
    threads at once. The upstream side is non-blocking: a readable TLS socket may hold no
    application data (a TLS 1.3 session ticket), and a blocking read there would wait for the
    server while the server waits for the client's bytes this thread has not relayed yet.
    """
    upstream.setblocking(False)
    tls = upstream if isinstance(upstream, ssl.SSLSocket) else None
    try:
        while True:
            ready: list[socket.socket] = [upstream] if tls is not None and tls.pending() else []
            if not ready:
                ready, _, _ = select.select([client, upstream], [], [])
            if upstream in ready:
                try:
                    data = upstream.recv(262144)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    data = None
                if data == b"":
                    return
                if data:
                    client.sendall(data)
            if client in ready:
                data = client.recv(262144)
                if not data:
                    return
                _send_all(upstream, data)
    except OSError:
        return
    finally:
        for s in (client, upstream):
            with contextlib.suppress(OSError):
                s.close()


def _send_all(sock: socket.socket, data: bytes) -> None:
    """`sendall` for a non-blocking (TLS) socket: wait until it can take more."""
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view) :]
        except (ssl.SSLWantWriteError, BlockingIOError):
            select.select([], [sock], [])
        except ssl.SSLWantReadError:
            select.select([sock], [], [])


@contextlib.contextmanager
def tool_connection(endpoint: Endpoint, tool: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A password-free conninfo and an environment with which `tool` reaches `endpoint`.

    Direct when no SSL is involved or the tool has SSL; through a `TlsBridge` otherwise.

    :raises ConfigError: the URL's SSL settings cannot be honoured (see `client_context`).
    """
    info, env = endpoint.libpq_env()
    params = {k: str(v) for k, v in conninfo.conninfo_to_dict(info).items()}
    host = params.get("host") or env.get("PGHOST") or ""
    mode = params.get("sslmode") or env.get("PGSSLMODE") or "prefer"
    if mode not in _BRIDGED_MODES or not host or host.startswith("/") or supports_ssl(tool):
        yield info, env
        return
    if "," in host:
        raise ConfigError(
            f"{endpoint.name} URL names several hosts ({host}): {tool.name} has no SSL and the "
            "bridge that gives it SSL takes one host; name one, or install an SSL-capable "
            "pg_dump (e.g. apt install postgresql-client-16) and name it in `pg_dump`"
        )
    ctx, effective = client_context(params, host)
    port = int(params.get("port") or env.get("PGPORT") or 5432)
    timeout = float(params.get("connect_timeout") or 10)
    remote = params.get("hostaddr") or host
    with TlsBridge(remote, port, ctx, effective, timeout, host) as bridge:
        bridged = {k: v for k, v in params.items() if not k.startswith("ssl") and k != "hostaddr"}
        bridged.update(host="127.0.0.1", port=str(bridge.port), sslmode="disable")
        for name in ("PGSSLMODE", "PGSSLROOTCERT", "PGHOST", "PGPORT", "PGHOSTADDR", "PGSSLCERT"):
            env.pop(name, None)
        yield conninfo.make_conninfo(**bridged), env
