"""Unpacking one layer tar into a directory, never writing outside it (I/O shell).

Every path is reached segment by segment from a directory file descriptor with
O_NOFOLLOW, and every name is created with *at() calls below a descriptor we
hold, so neither symlinks already in the tree (from this layer or a lower one)
nor `..` can lead a write elsewhere. `safepath.classify` has already refused or
neutralised each entry; this module carries the plan out. Existing files are
never opened for writing: an entry replaces whatever was at its name, so a
hard link to a lower file cannot be written through. A symlink or file where a
directory is needed is replaced by a directory.

Two modes:
- "overlay": an empty directory becomes one overlayfs lower layer; OCI
  whiteouts become character devices 0:0, opaque markers the xattr
  trusted.overlay.opaque=y.
- "apply": the layer is applied onto a root that holds the layers below it;
  whiteouts delete, opaque markers delete what lower layers put in the directory.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Literal

import zstandard

from gifee.image.errors import BadImage, BlobCorrupted, UnsafeLayer
from gifee.image.safepath import Entry, classify

Mode = Literal["overlay", "apply"]
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20


class HashingReader:
    """A read-only stream that hashes and counts what passes through it."""

    def __init__(self, inner: IO[bytes]) -> None:
        self.inner = inner
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    def digest(self) -> str:
        return "sha256:" + self.sha.hexdigest()


def _tar_type(member: tarfile.TarInfo) -> str:
    if member.isreg():
        return "file"
    if member.isdir():
        return "dir"
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    if member.isfifo():
        return "fifo"
    if member.ischr():
        return "char"
    if member.isblk():
        return "block"
    return "other"


def _exists(dfd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _remove(dfd: int, name: str) -> None:
    st = _exists(dfd, name)
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dfd)  # fd-based: does not follow symlinks inside
    else:
        os.unlink(name, dir_fd=dfd)


class _Unpacker:
    def __init__(self, root_fd: int, mode: Mode) -> None:
        self.root_fd = root_fd
        self.mode = mode
        self.as_root = os.geteuid() == 0
        self.created: set[tuple[str, ...]] = set()
        self.dir_times: list[tuple[tuple[str, ...], float]] = []
        self.notes: list[str] = []

    @contextmanager
    def directory(self, path: tuple[str, ...], create: bool) -> Iterator[int | None]:
        """A descriptor for the directory at `path`, made if `create` (replacing any
        non-directory in the way); None if it does not exist and not `create`."""
        fd = os.dup(self.root_fd)
        try:
            for i, segment in enumerate(path):
                try:
                    nfd = os.open(segment, _DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    if e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                        raise
                    if not create:
                        os.close(fd)
                        fd = -1
                        yield None
                        return
                    if e.errno != errno.ENOENT:
                        self.notes.append(f"{'/'.join(path[:i + 1])}: non-directory replaced by a directory")
                        _remove(fd, segment)
                    os.mkdir(segment, 0o755, dir_fd=fd)
                    self.created.add(path[: i + 1])
                    nfd = os.open(segment, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nfd
            yield fd
        finally:
            if fd >= 0:
                os.close(fd)

    def _owner(self, fd: int, member: tarfile.TarInfo) -> None:
        if self.as_root:
            os.fchown(fd, member.uid, member.gid)

    def apply(self, entry: Entry, member: tarfile.TarInfo, data: IO[bytes] | None) -> None:
        if entry.kind == "skip":
            self.notes.append(f"{member.name}: skipped ({entry.reason})")
            return
        if entry.kind == "opaque":
            self._opaque(entry.path)
            return
        parent, name = entry.path[:-1], entry.path[-1]
        if entry.kind == "whiteout" and self.mode == "apply":
            # parents are made, as the overlay form has them (a directory holding the whiteout)
            with self.directory(parent, create=True) as pfd:
                assert pfd is not None
                _remove(pfd, name)
            return
        with self.directory(parent, create=True) as pfd:
            assert pfd is not None
            existing = _exists(pfd, name)
            if entry.kind == "dir" and existing is not None and stat.S_ISDIR(existing.st_mode):
                pass  # directories merge
            elif entry.kind == "hardlink":
                self._hardlink(entry, pfd, name)
                self.created.add(entry.path)
                return
            else:
                _remove(pfd, name)
            self.created.add(entry.path)
            if entry.kind == "dir":
                if existing is None or not stat.S_ISDIR(existing.st_mode):
                    os.mkdir(name, 0o700, dir_fd=pfd)
                fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
                try:
                    os.fchmod(fd, entry.mode)
                    self._owner(fd, member)
                finally:
                    os.close(fd)
                self.dir_times.append((entry.path, member.mtime))
            elif entry.kind == "file":
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=pfd)
                try:
                    if data is not None:
                        while chunk := data.read(_CHUNK):
                            os.write(fd, chunk)
                    self._owner(fd, member)
                    os.fchmod(fd, entry.mode)  # after chown, which may clear mode bits
                    os.utime(fd, (member.mtime, member.mtime))
                finally:
                    os.close(fd)
            elif entry.kind == "symlink":
                os.symlink(entry.symlink_target, name, dir_fd=pfd)
                if self.as_root:
                    os.chown(name, member.uid, member.gid, dir_fd=pfd, follow_symlinks=False)
                os.utime(name, (member.mtime, member.mtime), dir_fd=pfd, follow_symlinks=False)
            elif entry.kind == "fifo":
                os.mkfifo(name, entry.mode, dir_fd=pfd)
            elif entry.kind == "whiteout":
                if not self.as_root:
                    raise UnsafeLayer(f"layer entry {member.name!r}: an overlay whiteout needs root (mknod)")
                os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)

    def _hardlink(self, entry: Entry, pfd: int, name: str) -> None:
        target_parent, target_name = entry.hardlink_target[:-1], entry.hardlink_target[-1]
        with self.directory(target_parent, create=False) as tfd:
            st = _exists(tfd, target_name) if tfd is not None else None
            if tfd is None or st is None or stat.S_ISDIR(st.st_mode):
                raise UnsafeLayer(
                    f"layer entry {'/'.join(entry.path)!r}: hard link target "
                    f"{'/'.join(entry.hardlink_target)!r} is not a file in this layer"
                )
            if entry.hardlink_target == entry.path:
                return
            _remove(pfd, name)
            # follow_symlinks=False: link the symlink itself, never what it points at
            os.link(target_name, name, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)

    def _opaque(self, path: tuple[str, ...]) -> None:
        if self.mode == "overlay":
            with self.directory(path, create=True) as fd:
                assert fd is not None
                if not self.as_root:
                    raise UnsafeLayer(f"layer directory {'/'.join(path) or '/'!r}: an opaque directory needs root")
                os.setxattr(fd, "trusted.overlay.opaque", b"y")
            return
        with self.directory(path, create=False) as fd:
            if fd is not None:
                self._clear_lower(fd, path)

    def _clear_lower(self, dfd: int, path: tuple[str, ...]) -> None:
        """Remove what lower layers put below `path`, keeping this layer's entries."""
        for child in os.listdir(dfd):
            child_path = path + (child,)
            if child_path not in self.created:
                _remove(dfd, child)
                continue
            st = _exists(dfd, child)
            if st is not None and stat.S_ISDIR(st.st_mode):
                cfd = os.open(child, _DIR_FLAGS, dir_fd=dfd)
                try:
                    self._clear_lower(cfd, child_path)
                finally:
                    os.close(cfd)

    def finish(self) -> None:
        for path, mtime in reversed(self.dir_times):
            with self.directory(path, create=False) as fd:
                if fd is not None:
                    os.utime(fd, (mtime, mtime))


def _decompressed(raw: IO[bytes], compression: str) -> IO[bytes]:
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if compression == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    return raw


def unpack_layer(
    blob: IO[bytes],
    compression: str,
    root: str,
    mode: Mode,
    expected_digest: str | None = None,
    expected_diff_id: str | None = None,
    what: str = "layer",
) -> list[str]:
    """Unpack a layer blob below the directory `root`; returns notes on neutralised entries.

    The blob's digest and the uncompressed tar's diff_id are checked as it streams;
    on a mismatch BlobCorrupted is raised after unpacking, so callers must unpack
    into a directory they discard on error."""
    raw = HashingReader(blob)
    plain = HashingReader(_decompressed(raw, compression))  # type: ignore[arg-type]
    root_fd = os.open(root, _DIR_FLAGS)
    unpacker = _Unpacker(root_fd, mode)
    try:
        try:
            with tarfile.open(fileobj=plain, mode="r|") as tar:  # type: ignore[call-overload]
                for member in tar:
                    entry = classify(member.name, _tar_type(member), member.linkname, member.mode)
                    data = tar.extractfile(member) if entry.kind == "file" else None
                    unpacker.apply(entry, member, data)
            plain.drain()
            raw.drain()
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, zstandard.ZstdError) as e:
            raw.drain()  # a changed byte usually breaks decompression: report it as what it is
            if expected_digest is not None and raw.digest() != expected_digest:
                raise BlobCorrupted(f"{what}: blob hashes to {raw.digest()}, expected {expected_digest}") from None
            raise BadImage(f"{what}: not a valid {compression if compression != 'none' else ''} tar: {e}") from None
        unpacker.finish()
    finally:
        os.close(root_fd)
    if expected_digest is not None and raw.digest() != expected_digest:
        raise BlobCorrupted(f"{what}: blob hashes to {raw.digest()}, expected {expected_digest}")
    if expected_diff_id is not None and plain.digest() != expected_diff_id:
        raise BlobCorrupted(f"{what}: uncompressed tar hashes to {plain.digest()}, config says {expected_diff_id}")
    return unpacker.notes
