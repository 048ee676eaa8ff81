"""Applying a dump's schema to the target: what the target cannot know is left out, named.

pg_dump writes what the *source's* server knows: a column option a patched build stamps on every
column (``ALTER TABLE ONLY ... ALTER COLUMN ... SET (pg_attver=...)``), a storage parameter of
an extension the target lacks (``WITH (foo=...)``), a configuration parameter of a newer or
patched server (``SET foo = ...``). The target decides, not a list in this code: each TOC
entry's SQL runs in a savepoint; when the target rejects one of its statements as an unknown or
invalid parameter (``invalid_parameter_value``, ``undefined_object``), each option of that
statement is tried alone, in a savepoint, and the statement is sent again without the rejected
ones, each of which is reported (what, where, the target's own reason). Any other failure names
the TOC entry (type, schema, name) and shows the statement.

Also here, shared by the import and `restore`: which TOC entries are replayed at all
(`filter_toc`) and the manifest that records those decisions beside a backup.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import psycopg
from psycopg import errors

from migration.backends.backup import BackupLocation
from migration.db import supabase
from migration.db.connection import Conn
from migration.db.pgtools import SqlItem, TocEntry, clean_sql, split_items
from migration.db.supabase import LeftOut
from migration.errors import ImportFailed

MANIFEST = "manifest.json"

# TOC entries never replayed: schemas and extensions are made by the engine (step 1 and
# CREATE SCHEMA IF NOT EXISTS), the rest is Supabase's or cluster-level.
_ENGINE_MADE = {"SCHEMA", "EXTENSION"}
_NEVER = {
    "PUBLICATION": "Supabase realtime publication; not used on RDS",
    "PUBLICATION TABLE": "Supabase realtime publication; not used on RDS",
    "PUBLICATION TABLES IN SCHEMA": "Supabase realtime publication; not used on RDS",
    "SUBSCRIPTION": "subscriptions are not migrated",
    "EVENT TRIGGER": "event triggers need a superuser; not available to RDS's master user",
}
# Cluster-level entries a schema dump may carry; not Supabase's, left out silently.
_SILENT = {"DATABASE", "DATABASE PROPERTIES"}
#: What the target says when it does not know a parameter (or cannot take its value).
_UNKNOWN_PARAMETER = (errors.InvalidParameterValue, errors.UndefinedObject)


class SchemaApplyFailed(ImportFailed):
    """A statement of the schema failed on the target for a reason other than an option."""


def filter_toc(
    toc: list[TocEntry], by_oid: dict[tuple[str, int], LeftOut]
) -> tuple[list[TocEntry], list[LeftOut]]:
    """Keep what the target needs; return kept entries and the left-out ones with reasons."""
    dropped: dict[int, LeftOut | None] = {}
    owners: set[str] = set()
    grants = 0
    for e in toc:
        owner = e.line.rsplit(" ", 1)[-1]
        if e.schema != "-" and owner and owner != e.tag:
            owners.add(owner)
        if e.desc in _ENGINE_MADE or e.desc in _SILENT:
            dropped[e.dump_id] = None
        elif e.desc in ("ACL", "DEFAULT ACL"):
            grants += 1
            dropped[e.dump_id] = None
        elif e.desc in _NEVER:
            dropped[e.dump_id] = LeftOut(e.desc.lower(), f"{e.schema}.{e.tag}", _NEVER[e.desc])
        elif (supabase.TOC_KINDS.get(e.desc, ""), e.oid) in by_oid:
            dropped[e.dump_id] = by_oid[(supabase.TOC_KINDS[e.desc], e.oid)]
    _follow_dependencies(toc, dropped)
    left = [lo for lo in dropped.values() if lo is not None]
    if grants:
        left.append(
            LeftOut(
                "grants", f"{grants} GRANT/REVOKE entries", "Supabase roles do not exist on RDS"
            )
        )
    if owners:
        left.append(
            LeftOut(
                "owners",
                ", ".join(sorted(owners)),
                "objects are owned by the importing (master) role on the target",
            )
        )
    return [e for e in toc if e.dump_id not in dropped], left


def _follow_dependencies(toc: list[TocEntry], dropped: dict[int, LeftOut | None]) -> None:
    """Entries hanging off a left-out entry follow it (comments, triggers on a left-out
    function, ...); engine-made schemas do not drag their contents along."""
    changed = True
    while changed:
        changed = False
        for e in toc:
            if e.dump_id in dropped:
                continue
            for dep in e.depends:
                parent = dropped.get(dep)
                if parent is not None:
                    dropped[e.dump_id] = LeftOut(
                        e.desc.lower(),
                        f"{e.schema}.{e.tag}",
                        f"depends on left-out {parent.kind} {parent.name}",
                    )
                    changed = True
                    break
                if dep in dropped and e.desc in ("COMMENT", "SECURITY LABEL"):
                    dropped[e.dump_id] = None
                    changed = True
                    break


def write_manifest(
    where: BackupLocation,
    schemas: list[str],
    toc: list[TocEntry],
    kept: list[TocEntry],
    extensions: dict[str, str],
) -> None:
    """Write, beside the dump, what the import left out: `restore` leaves out the same.

    Entries are named by (kind, schema, name), not dump id: the backup is a second pg_dump run,
    whose ids differ from those of the schema dump the decisions were made on.
    """
    kept_ids = {e.dump_id for e in kept}
    manifest = {
        "format": 1,
        "schemas": schemas,
        "extensions": extensions,
        "left_out": sorted({(e.desc, e.schema, e.tag) for e in toc if e.dump_id not in kept_ids}),
    }
    sink = where.sink(MANIFEST)
    sink.write(json.dumps(manifest, indent=1).encode())
    sink.close()


def split_statements(text: str) -> list[str]:
    """Split SQL at top-level semicolons (quotes, dollar quotes and comments respected)."""
    out: list[str] = []
    start = i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "-" and text.startswith("--", i):
            i = text.find("\n", i)
            i = n if i < 0 else i
        elif c == "/" and text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        elif c in "'\"":
            escapes = c == "'" and i > 0 and text[i - 1] in "eE"
            i += 1
            while i < n and text[i] != c:
                i += 2 if escapes and text[i] == "\\" else 1
        elif c == "$" and (m := re.match(r"\$([A-Za-z_]\w*)?\$", text[i:])):
            end = text.find(m.group(0), i + len(m.group(0)))
            i = n if end < 0 else end + len(m.group(0))
            continue
        elif c == ";":
            out.append(text[start : i + 1])
            start = i + 1
        i += 1
    out.append(text[start:])
    return [s for s in out if _code(s)]


def _code(statement: str) -> str:
    """The statement without its leading comment lines and blanks ('' for none)."""
    lines = [ln for ln in statement.strip().splitlines() if ln.strip() and not ln.startswith("--")]
    return "\n".join(lines).strip()


_OPTION_LIST = re.compile(r"\b(SET|WITH)\s*\(", re.IGNORECASE)


@dataclass
class _Options:
    """One parenthesised option list of a statement: its span and its items."""

    keyword: str
    start: int  # index of the keyword
    open: int  # index of "("
    close: int  # index of ")"
    items: list[str]


def _option_lists(statement: str) -> list[_Options]:
    """``SET (...)``/``WITH (...)`` lists of ``name=value`` items (storage/column options)."""
    found = []
    for m in _OPTION_LIST.finditer(statement):
        depth, j = 0, m.end() - 1
        for j in range(m.end() - 1, len(statement)):
            depth += {"(": 1, ")": -1}.get(statement[j], 0)
            if depth == 0:
                break
        body = statement[m.end() : j]
        items = [x.strip() for x in body.split(",") if x.strip()]
        if items and all(re.match(r"^[\w.]+\s*(=|$)", x) for x in items):
            found.append(_Options(m.group(1), m.start(), m.end() - 1, j, items))
    return found


def _rewrite(statement: str, lst: _Options, items: list[str]) -> str:
    """`statement` with the option list `lst` holding `items` (or gone, when none are left)."""
    if items:
        return statement[: lst.open + 1] + ", ".join(items) + statement[lst.close :]
    if lst.keyword.upper() == "WITH":
        return statement[: lst.start] + statement[lst.close + 1 :]
    return ""  # ALTER ... SET (): nothing left to set


def _try(conn: Conn, statement: str) -> psycopg.Error | None:
    """Run `statement` in a savepoint; return its error (rolled back) or None (kept)."""
    try:
        with conn.transaction():
            conn.execute(statement.encode())
    except psycopg.Error as exc:
        return exc
    return None


def _probe(conn: Conn, statement: str) -> psycopg.Error | None:
    """Run `statement` in a savepoint that is always rolled back; return its error or None."""
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(statement.encode())
    except psycopg.Error as exc:
        return exc
    return None


def _where(item: SqlItem, statement: str) -> str:
    where = f"{item.kind} {item.schema}.{item.name}"
    col = re.search(r"ALTER COLUMN\s+(\"[^\"]+\"|\S+)", statement, re.IGNORECASE)
    return f"{where} column {col.group(1)}" if col else where


def _without_rejected(conn: Conn, item: SqlItem, statement: str, left: list[LeftOut]) -> str | None:
    """Find the options of `statement` the target rejects; return it without them.

    Each option is tried alone (in a savepoint, rolled back); None when no option is to blame.
    """
    code = _code(statement)
    if re.match(r"^(SET\s|SELECT pg_catalog\.set_config\()", code, re.IGNORECASE):
        name = re.split(r"[\s=(',]+", code)[1 if code.upper().startswith("SET") else 2]
        left.append(
            LeftOut("setting", f"{name} ({_where(item, code)})", "the target does not know it")
        )
        return ""
    rejected = False
    for lst in reversed(_option_lists(code)):  # from the end: earlier spans stay valid
        keep = []
        for option in lst.items:
            err = _probe(conn, _rewrite(code, lst, [option]) or code)
            if isinstance(err, _UNKNOWN_PARAMETER):
                kind = "column option" if "ALTER COLUMN" in code.upper() else "storage parameter"
                why = err.diag.message_primary or type(err).__name__
                left.append(
                    LeftOut(kind, f"{option} on {_where(item, code)}", f"the target says: {why}")
                )
                rejected = True
            else:
                keep.append(option)
        if len(keep) < len(lst.items):
            code = _rewrite(code, lst, keep)
    return code if rejected else None


def _fail(item: SqlItem, statement: str, exc: psycopg.Error) -> Exception:
    """The error to raise: the driver's own for what callers explain themselves (a lost
    connection, objects depending on a drop), else one naming the entry and the statement."""
    if isinstance(exc, (psycopg.OperationalError, errors.DependentObjectsStillExist)):
        return exc
    shown = _code(statement)
    shown = shown if len(shown) <= 600 else shown[:600] + " ..."
    what = (
        "the dump's opening statements"
        if item.kind == "PREAMBLE"
        else f"{item.kind} {item.schema}.{item.name}"
    )
    return SchemaApplyFailed(
        f"{what} failed on the target: {exc.diag.message_primary or exc}\n  statement: {shown}"
    )


def apply_item(conn: Conn, item: SqlItem, left: list[LeftOut]) -> None:
    """Apply one TOC entry's SQL inside the caller's transaction, leaving out what the target
    does not know (appended to `left`).

    :raises SchemaApplyFailed: a statement failed for another reason, named and shown.
    """
    if _try(conn, item.sql) is None:
        return
    for statement in split_statements(item.sql):
        err = _try(conn, statement)
        if err is None:
            continue
        if conn.broken or not isinstance(err, _UNKNOWN_PARAMETER):
            raise _fail(item, statement, err)
        rewritten = _without_rejected(conn, item, statement, left)
        if rewritten is None:
            raise _fail(item, statement, err)
        if rewritten and (err2 := _try(conn, rewritten)) is not None:
            raise _fail(item, rewritten, err2)


def apply_script(conn: Conn, text: str, settings: set[str], left: list[LeftOut]) -> int:
    """Apply pg_restore's SQL `text` entry by entry (see `apply_item`); returns entries applied.

    :param settings: the target's configuration parameter names (``pg_settings``); ``SET`` of
        any other is left out and reported.
    """
    dropped: list[str] = []
    preamble, items = split_items(clean_sql(text, settings, dropped))
    for name in dict.fromkeys(dropped):
        left.append(LeftOut("setting", name, "the target's server does not know it"))
    if _code(preamble):
        apply_item(conn, SqlItem("opening statements", "PREAMBLE", "-", preamble), left)
    for item in items:
        apply_item(conn, item, left)
    return len(items)


def target_settings(conn: Conn) -> set[str]:
    """The configuration parameters the target knows (what a dump's SET lines are checked by)."""
    return {str(r[0]).lower() for r in conn.execute("SELECT name FROM pg_settings").fetchall()}
