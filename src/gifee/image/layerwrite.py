"""Writing a layer tar (uncompressed, gzip or zstd) into the store (I/O shell).

Layers are reproducible: entries sorted by name, owner names empty, the gzip
header without a file name or time; with `mtime` every entry gets that time.
Device nodes and sockets are left out (the runtime supplies /dev).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import zstandard

from gifee.image import oci
from gifee.image.errors import ImageError
from gifee.image.store import ImageStore


class _HashingWriter:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.sha = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.inner.write(data)
        return len(data)

    def flush(self) -> None:
        pass


def rootfs_items(root: Path) -> list[tuple[str, Path]]:
    """(name in the layer, host path) for everything below `root`, sorted by name."""
    items: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for n in dirnames + filenames:
            p = base / n
            items.append((p.relative_to(root).as_posix(), p))
    return sorted(items)


def tree_items(src: Path, dest: str) -> list[tuple[str, Path]]:
    """`src` (file or directory, added recursively) placed at `dest`."""
    if not os.path.lexists(src):
        raise ImageError(f"{src}: no such file or directory to add")
    items = [(dest, src)]
    if src.is_dir() and not src.is_symlink():
        items += [(f"{dest}/{name}", p) for name, p in rootfs_items(src)]
    return items


def write_layer(
    store: ImageStore,
    items: Iterable[tuple[str, Path | None]],
    compression: str,
    owner: tuple[int, int] | None = None,
    mtime: int | None = None,
) -> tuple[oci.Descriptor, str]:
    """Write a layer of `items` (a None path is a directory 0755) into the store.

    Returns the layer descriptor and the diff_id (digest of the uncompressed tar)."""
    if compression not in oci.COMPRESSION_MEDIA_TYPE:
        raise ImageError(f"compression {compression!r}: choose none, gzip or zstd")
    store.ensure()
    fd, tmp_name = tempfile.mkstemp(dir=store.tmp, prefix="layer-")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            compressor: Any
            if compression == "gzip":
                compressor = gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0)
            elif compression == "zstd":
                compressor = zstandard.ZstdCompressor(level=3).stream_writer(out, closefd=False)
            else:
                compressor = out
            plain = _HashingWriter(compressor)
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                for name, path in sorted(items, key=lambda item: item[0]):
                    _add(tar, name, path, owner, mtime)
            if compressor is not out:
                compressor.close()
        diff_id = "sha256:" + plain.sha.hexdigest()
        size = tmp.stat().st_size
        digest = store.commit_file(tmp)
    finally:
        if tmp.exists():
            tmp.unlink()
    return {"mediaType": oci.COMPRESSION_MEDIA_TYPE[compression], "digest": digest, "size": size}, diff_id


def _add(tar: tarfile.TarFile, name: str, path: Path | None, owner: tuple[int, int] | None, mtime: int | None) -> None:
    if path is None:
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        info.mtime = mtime or 0
    else:
        st = os.lstat(path)
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISSOCK(st.st_mode):
            return
        try:
            info = tar.gettarinfo(str(path), arcname=name)
        except OSError as e:
            raise ImageError(f"{path}: cannot be read: {e.strerror}") from None
    info.uname = info.gname = ""
    if owner is not None:
        info.uid, info.gid = owner
    if mtime is not None:
        info.mtime = mtime
    if info.isreg():
        data: IO[bytes]
        with open(path, "rb") as data:  # type: ignore[arg-type]
            tar.addfile(info, data)
    else:
        tar.addfile(info)
