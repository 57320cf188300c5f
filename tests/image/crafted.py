"""Hand-made layers for tests: tar archives entry by entry, and images made of them."""

from __future__ import annotations

import gzip
import io
import tarfile
from dataclasses import dataclass

import zstandard

from gifee.image import oci
from gifee.image.store import Image, ImageStore


@dataclass
class E:
    """One tar entry: kind is file, dir, symlink, hardlink, char, block or fifo."""

    name: str
    kind: str = "file"
    data: bytes = b""
    link: str = ""
    mode: int = 0o644
    dev: tuple[int, int] = (0, 0)


_TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
          "char": tarfile.CHRTYPE, "block": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}


def make_tar(entries: list[E]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type = _TYPES[e.kind]
            info.mode = e.mode
            info.linkname = e.link
            info.devmajor, info.devminor = e.dev
            info.mtime = 1_000_000
            if e.kind == "file":
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def compress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


def image_from_tars(store: ImageStore, name: str, tars: list[bytes], compression: str = "none") -> Image:
    """An image whose layers are exactly these tars (bottom first)."""
    layers = []
    for tar in tars:
        blob = compress(tar, compression)
        store.put_blob(blob)
        layers.append(oci.descriptor(oci.COMPRESSION_MEDIA_TYPE[compression], blob))
    config = oci.image_config([oci.sha256_digest(t) for t in tars], "2016-01-01T00:00:00Z", [], ["/bin/sh"],
                              None, None, None, {})
    config_bytes = oci.canonical_json(config)
    store.put_blob(config_bytes)
    manifest = oci.image_manifest(oci.descriptor(oci.CONFIG, config_bytes), layers)
    return store.add_image(name, oci.canonical_json(manifest))
