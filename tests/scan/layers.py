"""Crafted layers and roots for the indexer tests: tar bytes built entry by entry."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from gifee.scan.targets import ImageTarget, LayerRef

WHEEZY_OS_RELEASE = """PRETTY_NAME="Debian GNU/Linux 7 (wheezy)"
NAME="Debian GNU/Linux"
VERSION_ID="7"
VERSION="7 (wheezy)"
ID=debian
"""


def wheezy_status(openssl: str) -> str:
    return f"""Package: openssl
Status: install ok installed
Priority: optional
Architecture: amd64
Version: {openssl}
Depends: libc6 (>= 2.7), libssl1.0.0 (>= 1.0.1)
Description: Secure Socket Layer (SSL) binary and related cryptographic tools
 This package contains the openssl binary.

Package: libssl1.0.0
Status: install ok installed
Multi-Arch: same
Architecture: amd64
Source: openssl
Version: {openssl}
Description: SSL shared libraries

Package: removed-thing
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0
"""


def wheezy_root(root: Path, openssl: str) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "etc/os-release").write_text(WHEEZY_OS_RELEASE)
    (root / "etc/debian_version").write_text("7.4\n")
    (root / "var/lib/dpkg/status").write_text(wheezy_status(openssl))
    return root


class Layer:
    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)

    def file(self, name: str, data: bytes | str, size: int | None = None) -> Layer:
        raw = data.encode() if isinstance(data, str) else data
        info = tarfile.TarInfo(name)
        info.size = len(raw) if size is None else size
        self.tar.addfile(info, io.BytesIO(raw))
        return self

    def dir(self, name: str) -> Layer:
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        self.tar.addfile(info)
        return self

    def symlink(self, name: str, target: str) -> Layer:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = tarfile.SYMTYPE, target
        self.tar.addfile(info)
        return self

    def hardlink(self, name: str, target: str) -> Layer:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = tarfile.LNKTYPE, target
        self.tar.addfile(info)
        return self

    def whiteout(self, name: str) -> Layer:
        parent, _, base = name.rpartition("/")
        return self.file(f"{parent}/.wh.{base}" if parent else f".wh.{base}", b"")

    def opaque(self, directory: str) -> Layer:
        return self.file(f"{directory}/.wh..wh..opq", b"")

    def tar_bytes(self) -> bytes:
        self.tar.close()
        return self.buf.getvalue()

    def gzip_bytes(self) -> bytes:
        return gzip.compress(self.tar_bytes(), mtime=0)


def digest(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


def _opener(blob: bytes) -> Callable[[], IO[bytes]]:
    return lambda: io.BytesIO(blob)


def image_of(*blobs: bytes, label: str = "test/image:1", claimed: list[str] | None = None) -> ImageTarget:
    """An image target over gzip layer blobs held in memory (digests computed unless claimed)."""
    layers = []
    for i, blob in enumerate(blobs):
        d = claimed[i] if claimed else digest(blob)
        layers.append(LayerRef(d, "gzip", _opener(blob)))
    return ImageTarget(label, "sha256:" + "0" * 64, layers)
