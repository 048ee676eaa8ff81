"""A PostgreSQL-protocol-aware TLS terminator: makes the embedded server SSL-only, as RDS is.

The embedded server has no OpenSSL. A client that opens with an SSLRequest gets ``S``, a TLS
handshake with a self-signed certificate made here, and then a byte relay to the server. A
client that does not ask for SSL gets the same FATAL error RDS gives with ``rds.force_ssl=1``
(SQLSTATE 28000, "no pg_hba.conf entry ... no encryption"). GSSENCRequest is declined with ``N``.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import select
import socket
import ssl
import struct
import tempfile
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """Write a CA (``ca.crt``) and a certificate it signed for 127.0.0.1/localhost; return
    (cert, key) paths. ``sslrootcert=<directory>/ca.crt`` makes verify-ca/verify-full pass."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qckstrt test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("client closed")
        data += chunk
    return data


def _error_response(user: str, database: str) -> bytes:
    fields = [
        b"SFATAL",
        b"VFATAL",
        b"C28000",
        (
            f'Mno pg_hba.conf entry for host "127.0.0.1", user "{user}", '
            f'database "{database}", no encryption'
        ).encode(),
    ]
    body = b"".join(f + b"\0" for f in fields) + b"\0"
    return b"E" + struct.pack("!I", len(body) + 4) + body


class TLSProxy:
    """Listen on 127.0.0.1:<port>, accept only TLS clients, relay to 127.0.0.1:<backend_port>."""

    def __init__(self, backend_port: int) -> None:
        self.backend_port = backend_port
        self._dir = Path(tempfile.mkdtemp(prefix="tlsproxy-"))
        cert, key = make_certificate(self._dir)
        self.ca = self._dir / "ca.crt"
        self._ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ctx.load_cert_chain(cert, key)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        try:
            while True:
                head = _recv_exact(client, 8)
                length, code = struct.unpack("!II", head)
                if length == 8 and code == GSSENC_REQUEST:
                    client.sendall(b"N")
                    continue
                if length == 8 and code == SSL_REQUEST:
                    client.sendall(b"S")
                    tls = self._ctx.wrap_socket(client, server_side=True)
                    self._relay(tls)
                    return
                rest = _recv_exact(client, length - 8)
                parts = rest.split(b"\0")
                params = dict(zip(parts[0::2], parts[1::2], strict=False))
                user = params.get(b"user", b"").decode(errors="replace")
                database = params.get(b"database", user.encode()).decode(errors="replace")
                client.sendall(_error_response(user, database))
                return
        except (OSError, ConnectionError, ssl.SSLError):
            return
        finally:
            with contextlib.suppress(OSError):
                client.close()

    def _relay(self, tls: ssl.SSLSocket) -> None:
        backend = socket.create_connection(("127.0.0.1", self.backend_port))
        backend.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                readable: list[socket.socket] = [tls] if tls.pending() else []
                if not readable:
                    readable, _, _ = select.select([tls, backend], [], [], 60)
                if tls in readable:
                    data = tls.recv(262144)
                    if not data:
                        return
                    backend.sendall(data)
                    while tls.pending():
                        backend.sendall(tls.recv(262144))
                if backend in readable:
                    data = backend.recv(262144)
                    if not data:
                        return
                    tls.sendall(data)
        finally:
            with contextlib.suppress(OSError):
                backend.close()
            with contextlib.suppress(OSError):
                tls.close()


class Blackhole:
    """A listening socket that accepts TCP connections and never says a word."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port: int = self._sock.getsockname()[1]

    def close(self) -> None:
        self._sock.close()
