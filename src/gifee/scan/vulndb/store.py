"""The SQLite file `<dir>/vulndb.sqlite`: written whole by `write_database`, read by `VulnDB`.

An update never changes a live database: it builds a new file beside it and renames it into
place, so a reader sees either the old data or the new, never a mix, and a failed update
leaves the old database untouched. Ranges, affected-version lists and aliases are stored as
JSON text in the advisory row; aliases also go into their own indexed table for `lookup`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from gifee.scan.vulndb.model import Advisory, Event, Range, normalize_namespace, normalize_package

FILENAME = "vulndb.sqlite"
SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE source (name TEXT PRIMARY KEY, files INTEGER NOT NULL, records INTEGER NOT NULL,
                     warnings INTEGER NOT NULL);
CREATE TABLE advisory (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL, namespace TEXT NOT NULL, package TEXT NOT NULL, status TEXT NOT NULL,
    fixed TEXT, ranges TEXT NOT NULL, versions TEXT NOT NULL, aliases TEXT NOT NULL,
    severity TEXT NOT NULL, summary TEXT NOT NULL, link TEXT NOT NULL, source TEXT NOT NULL,
    published TEXT NOT NULL
);
CREATE TABLE alias (name TEXT NOT NULL, advisory INTEGER NOT NULL);
"""
_INDEXES = """
CREATE INDEX advisory_by_package ON advisory (namespace, package);
CREATE INDEX advisory_by_id ON advisory (id);
CREATE INDEX alias_by_name ON alias (name);
"""
_COLUMNS = "id, namespace, package, status, fixed, ranges, versions, aliases, severity, summary, link, source, published"


class VulnDBError(Exception):
    """The database is missing, unreadable or not one of ours; the message says what to do."""


def database_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / FILENAME


def _ranges_json(ranges: tuple[Range, ...]) -> str:
    return json.dumps([{"type": r.kind, "events": [[e.kind, e.version] for e in r.events]} for r in ranges])


def _ranges_from_json(text: str) -> tuple[Range, ...]:
    return tuple(Range(r["type"], tuple(Event(k, v) for k, v in r["events"])) for r in json.loads(text))


def _row(a: Advisory) -> tuple[Any, ...]:
    return (
        a.id, normalize_namespace(a.namespace), normalize_package(a.namespace, a.package), a.status, a.fixed,
        _ranges_json(a.ranges), json.dumps(list(a.versions)), json.dumps(list(a.aliases)), a.severity,
        a.summary, a.link, a.source, a.published,
    )


def write_database(
    path: str | os.PathLike[str],
    advisories: Iterable[Advisory],
    sources: Mapping[str, Mapping[str, int]] | None = None,
    meta: Mapping[str, str] | None = None,
) -> int:
    """Replace the database at `path` with these advisories (duplicates dropped); returns
    the number of rows written. `sources` maps a source name to its files/records/warnings."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        conn = sqlite3.connect(tmp)
        try:
            # Nothing reads the file until the rename: journaling would only slow the build.
            conn.execute("PRAGMA journal_mode = OFF")
            conn.execute("PRAGMA synchronous = OFF")
            conn.executescript(_SCHEMA)
            seen: set[tuple[Any, ...]] = set()
            rows = 0
            cur = conn.cursor()
            for advisory in advisories:
                row = _row(advisory)
                if row in seen:
                    continue
                seen.add(row)
                cur.execute(f"INSERT INTO advisory ({_COLUMNS}) VALUES ({', '.join('?' * 13)})", row)
                rowid = cur.lastrowid
                cur.executemany("INSERT INTO alias VALUES (?, ?)", [(name, rowid) for name in advisory.aliases])
                rows += 1
            for name, counts in (sources or {}).items():
                conn.execute(
                    "INSERT INTO source VALUES (?, ?, ?, ?)",
                    (name, counts.get("files", 0), counts.get("records", 0), counts.get("warnings", 0)),
                )
            all_meta = {"schema": SCHEMA_VERSION, "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            all_meta.update(meta or {})
            conn.executemany("INSERT INTO meta VALUES (?, ?)", sorted(all_meta.items()))
            conn.executescript(_INDEXES)
            conn.commit()
        finally:
            conn.close()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)
    return rows


class VulnDB:
    """Read-only access to a database written by `write_database`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise VulnDBError(f"no vulnerability database at {self.path} (run: gifee vulndb update --from DIR)")
        try:
            self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            schema = self._conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except sqlite3.DatabaseError as e:
            raise VulnDBError(f"{self.path} is not a readable vulnerability database: {e}") from e
        if schema is None or schema[0] != SCHEMA_VERSION:
            raise VulnDBError(f"{self.path} has schema {schema and schema[0]!r}, expected {SCHEMA_VERSION!r}: update it")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> VulnDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _advisory(row: tuple[Any, ...]) -> Advisory:
        (vid, namespace, package, status, fixed, ranges, versions, aliases, severity, summary, link, source,
         published) = row
        return Advisory(
            id=vid, namespace=namespace, package=package, status=status, fixed=fixed,
            ranges=_ranges_from_json(ranges), versions=tuple(json.loads(versions)),
            aliases=tuple(json.loads(aliases)), severity=severity, summary=summary, link=link, source=source,
            published=published,
        )

    def advisories(self, namespace: str, package: str) -> list[Advisory]:
        """Every record about `package` in `namespace` ("debian:7", "alpine:v3.11", "PyPI")."""
        ns = normalize_namespace(namespace)
        rows = self._conn.execute(
            f"SELECT {_COLUMNS} FROM advisory WHERE namespace = ? AND package = ? ORDER BY rowid",
            (ns, normalize_package(ns, package)),
        ).fetchall()
        return [self._advisory(r) for r in rows]

    def lookup(self, vuln_id: str) -> list[Advisory]:
        """Every record whose id or alias is `vuln_id` (DSA-2896-1, CVE-2014-0160, PYSEC-...)."""
        rows = self._conn.execute(
            f"SELECT {_COLUMNS} FROM advisory WHERE id = ? OR rowid IN (SELECT advisory FROM alias WHERE name = ?)"
            " ORDER BY namespace, package, rowid",
            (vuln_id, vuln_id),
        ).fetchall()
        return [self._advisory(r) for r in rows]

    def stats(self) -> dict[str, Any]:
        meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        sources = {
            name: {"files": files, "records": records, "warnings": warnings}
            for name, files, records, warnings in self._conn.execute("SELECT * FROM source ORDER BY name")
        }
        namespaces = dict(
            self._conn.execute("SELECT namespace, COUNT(*) FROM advisory GROUP BY namespace ORDER BY namespace")
        )
        total = self._conn.execute("SELECT COUNT(*) FROM advisory").fetchone()[0]
        return {"meta": meta, "sources": sources, "namespaces": namespaces, "advisories": total}
