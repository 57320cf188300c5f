"""One rpm header (pure), as the rpm database stores it and as it follows the lead and
signature in a .rpm file.

Structure (rpm's documented header format, all integers big-endian):
    [magic 8e ad e8 01, 4 reserved bytes]    present in .rpm files, absent in the database
    il: uint32    number of index entries
    dl: uint32    size of the data store
    il x { tag: uint32, type: uint32, offset: int32, count: uint32 }
    dl bytes of data store
Types: 0 NULL, 1 CHAR, 2 INT8, 3 INT16, 4 INT32, 5 INT64, 6 STRING, 7 BIN, 8 STRING_ARRAY,
9 I18NSTRING. Strings are NUL-terminated.

Theory of operation: check the sizes against the blob before reading anything, then read only
the tags the scanner needs. Any inconsistency raises `BadHeader`, which the caller turns into
a warning for that one package.
"""

from __future__ import annotations

import struct

MAGIC = b"\x8e\xad\xe8\x01"
NAME, VERSION, RELEASE, EPOCH, ARCH, SOURCERPM = 1000, 1001, 1002, 1003, 1022, 1044
WANTED = {NAME, VERSION, RELEASE, EPOCH, ARCH, SOURCERPM}
STRING, STRING_ARRAY, I18NSTRING, INT32 = 6, 8, 9, 4
MAX_ENTRIES = 1 << 16


class BadHeader(ValueError):
    pass


def _string(store: bytes, offset: int) -> str:
    end = store.find(b"\x00", offset)
    if end < 0:
        raise BadHeader(f"string at offset {offset} is not terminated")
    return store[offset:end].decode("utf-8", "replace")


def parse_header(blob: bytes) -> dict[int, str | int]:
    """The wanted tags of one header: strings as str, EPOCH as int."""
    if blob[:4] == MAGIC:
        blob = blob[8:]
    if len(blob) < 8:
        raise BadHeader(f"{len(blob)} bytes is too short for a header")
    il, dl = struct.unpack_from(">II", blob, 0)
    if il > MAX_ENTRIES or 8 + 16 * il + dl > len(blob):
        raise BadHeader(f"header claims {il} entries and {dl} data bytes but has {len(blob)} bytes")
    store = blob[8 + 16 * il: 8 + 16 * il + dl]
    out: dict[int, str | int] = {}
    for i in range(il):
        tag, kind, offset, count = struct.unpack_from(">IIiI", blob, 8 + 16 * i)
        if tag not in WANTED:
            continue
        if offset < 0 or offset >= dl:
            raise BadHeader(f"tag {tag}: offset {offset} outside the {dl}-byte data store")
        if kind in (STRING, STRING_ARRAY, I18NSTRING):
            out[tag] = _string(store, offset)
        elif kind == INT32 and count >= 1 and offset + 4 <= dl:
            out[tag] = struct.unpack_from(">i", store, offset)[0]
        else:
            raise BadHeader(f"tag {tag}: unexpected type {kind}")
    return out


def source_name(sourcerpm: str) -> str:
    """openssl-1.0.2k-19.el7.src.rpm -> openssl ("" if it is not name-version-release.src.rpm)."""
    stem = sourcerpm.removesuffix(".rpm").removesuffix(".src").removesuffix(".nosrc")
    parts = stem.rsplit("-", 2)
    return parts[0] if len(parts) == 3 and parts[0] else ""
