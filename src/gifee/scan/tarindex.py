"""Index one layer from its (compressed) tar stream, nothing written to disk (I/O shell).

The stream is read once, front to back: entry names go through the image part's
`safepath.classify` (an entry climbing out with `..` is refused and becomes a warning);
wanted files (`interesting.kind_of`) are read up to their size cap and parsed by `facts`;
symlinks on the way to the fixed database paths, whiteouts and opaque markers are noted.
Everything else is skipped unread. The compressed bytes are hashed on the way, and a layer
whose digest is not the expected one is marked incomplete (so it is never cached). A
truncated or corrupt stream keeps what was read before the damage and says so in a warning.
"""

from __future__ import annotations

import gzip
import hashlib
import tarfile
import zlib
from typing import IO, cast

import zstandard

from gifee.image.errors import UnsafeLayer
from gifee.image.safepath import classify
from gifee.scan import interesting as wanted
from gifee.scan.facts import read_facts, too_large
from gifee.scan.layerindex import LayerIndex

_CHUNK = 1 << 20
MAX_WARNINGS = 50


class _Hashing:
    def __init__(self, inner: IO[bytes]) -> None:
        self.inner = inner
        self.sha = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        self.sha.update(data)
        return data


def _decompressed(hashing: _Hashing, compression: str) -> IO[bytes]:
    raw = cast(IO[bytes], hashing)  # only read() is used, which _Hashing has
    if compression == "gzip":
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
    if compression == "zstd":
        return cast(IO[bytes], zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True))
    return raw


def _tar_type(m: tarfile.TarInfo) -> str:
    if m.isreg():
        return "file"
    if m.isdir():
        return "dir"
    if m.issym():
        return "symlink"
    if m.islnk():
        return "hardlink"
    return "fifo" if m.isfifo() else "other"


def _clean(name: str) -> str:
    """Names with undecodable bytes (surrogate escapes) as printable text."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class _Indexer:
    def __init__(self, what: str) -> None:
        self.what = what
        self.index = LayerIndex()
        self.captured: dict[str, bytes] = {}
        self.dropped = 0

    def warn(self, text: str) -> None:
        if len(self.index.warnings) < MAX_WARNINGS:
            self.index.warnings.append(f"{self.what}: {text}")
        else:
            self.dropped += 1

    def entry(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        try:
            entry = classify(member.name, _tar_type(member), member.linkname, member.mode)
        except UnsafeLayer as e:
            self.warn(f"{_clean(str(e))}; entry ignored")
            return
        path = _clean("/".join(entry.path))
        if entry.kind == "whiteout":
            self.index.whiteouts.append(path)
            return
        if entry.kind == "opaque":
            self.index.opaque.append(path)
            return
        if entry.kind == "symlink":
            if wanted.symlink_wanted(path):
                self.index.symlinks[path] = _clean(entry.symlink_target)
            self.index.files.pop(path, None)
            return
        kind = wanted.kind_of(path)
        if kind is None or entry.kind not in ("file", "hardlink"):
            if kind is not None or path in self.index.files:
                self.index.files.pop(path, None)  # a later entry of the same name wins
            return
        self.index.symlinks.pop(path, None)
        if entry.kind == "hardlink":
            target = "/".join(entry.hardlink_target)
            data = self.captured.get(target)
            if data is None:
                self.warn(f"/{path}: hard link to /{target}, which was not read; not indexed")
                return
        elif member.size > wanted.SIZE_CAPS[kind]:
            self.index.files[path] = too_large(kind, path, member.size)
            return
        else:
            f = tar.extractfile(member)
            data = f.read() if f is not None else b""
            if len(data) != member.size:
                self.warn(f"/{path}: truncated ({len(data)} of {member.size} bytes)")
        self.captured[path] = data
        self.index.files[path] = read_facts(kind, path, data)


def index_layer(blob: IO[bytes], compression: str, expected_digest: str | None, what: str) -> LayerIndex:
    """The index of one layer; never raises for bad content (warnings and `complete` say)."""
    raw = _Hashing(blob)
    indexer = _Indexer(what)
    try:
        plain = _decompressed(raw, compression)
        with tarfile.open(fileobj=plain, mode="r|", bufsize=_CHUNK) as tar:
            for member in tar:
                indexer.entry(tar, member)
        while raw.read(_CHUNK):  # the digest covers trailing bytes after the tar's end too
            pass
    except (tarfile.TarError, EOFError, OSError, zlib.error, zstandard.ZstdError, ValueError) as e:
        indexer.index.complete = False
        indexer.warn(f"layer is truncated or corrupt ({type(e).__name__}: {_clean(str(e))[:200]}); "
                     "only the entries before the damage were indexed")
    if indexer.index.complete and expected_digest is not None:
        got = "sha256:" + raw.sha.hexdigest()
        if got != expected_digest:
            indexer.index.complete = False
            indexer.warn(f"layer content hashes to {got}, expected {expected_digest}")
    if indexer.dropped:
        indexer.index.warnings.append(f"{what}: {indexer.dropped} more warnings")
    return indexer.index
