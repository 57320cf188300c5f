"""The SQLite rpm database (`rpmdb.sqlite`, rpm >= 4.16) from its bytes (pure: in memory).

Rules: the `Packages` table holds one header blob per installed package (columns hnum, blob);
`gpg-pubkey` entries are imported keys, not packages, and are skipped. The version matched is
`[epoch:]version-release`. The file is opened from a private in-memory copy (so nothing is
read from or written to the image), with its header switched from WAL to rollback-journal
mode: an in-memory database cannot use WAL. Transactions still in a `-wal` file are not seen.
A file that is not SQLite, has no `Packages` table, or holds bad headers gives warnings.
"""

from __future__ import annotations

import sqlite3

from gifee.scan.inventory import RPM, Package
from gifee.scan.pkgdb.rpmheader import (
    ARCH,
    EPOCH,
    NAME,
    RELEASE,
    SOURCERPM,
    VERSION,
    BadHeader,
    parse_header,
    source_name,
)

SQLITE_MAGIC = b"SQLite format 3\x00"
MAX_BAD_HEADERS = 20


def parse_rpmdb(data: bytes, where: str) -> tuple[list[Package], list[str]]:
    if not data.startswith(SQLITE_MAGIC) or len(data) < 100:
        return [], [f"{where}: not an SQLite rpm database"]
    image = bytearray(data)
    image[18:20] = b"\x01\x01"  # file format read/write versions: 1 = rollback journal, 2 = WAL
    conn = sqlite3.connect(":memory:")
    try:
        conn.deserialize(bytes(image))
        rows = conn.execute("SELECT hnum, blob FROM Packages").fetchall()
    except sqlite3.Error as e:
        return [], [f"{where}: cannot read the rpm database: {e}"]
    finally:
        conn.close()
    packages: list[Package] = []
    warnings: list[str] = []
    bad = 0
    for hnum, blob in rows:
        try:
            if not isinstance(blob, bytes):
                raise BadHeader("not a blob")
            tags = parse_header(blob)
            name, version, release = (str(tags.get(t, "")) for t in (NAME, VERSION, RELEASE))
            if not name or not version:
                raise BadHeader("no name or version")
        except BadHeader as e:
            bad += 1
            if bad <= MAX_BAD_HEADERS:
                warnings.append(f"{where}: package {hnum}: bad header: {e}")
            continue
        if name == "gpg-pubkey":
            continue
        evr = f"{version}-{release}" if release else version
        if EPOCH in tags:
            evr = f"{tags[EPOCH]}:{evr}"
        src = source_name(str(tags.get(SOURCERPM, "")))
        packages.append(Package(RPM, name, evr, src, evr if src else "", str(tags.get(ARCH, ""))))
    if bad > MAX_BAD_HEADERS:
        warnings.append(f"{where}: {bad - MAX_BAD_HEADERS} more bad headers")
    return packages, warnings
