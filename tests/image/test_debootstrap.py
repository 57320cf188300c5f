"""An image from a real Debian root (debootstrap --variant=minbase bookworm).

The root is cached under /var/tmp/gifee-test-debootstrap: the first run takes a
few minutes (through the machine's apt mirror), later runs reuse it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gifee.image.build import build_from_file, build_from_rootfs
from gifee.image.store import ImageStore

CACHE = Path("/var/tmp/gifee-test-debootstrap")
pytestmark = [pytest.mark.slow, pytest.mark.root,
              pytest.mark.skipif(shutil.which("debootstrap") is None, reason="debootstrap missing"),
              pytest.mark.timeout(1200)]


def debian_root() -> Path:
    if (CACHE / "etc" / "debian_version").exists():
        return CACHE
    tmp = CACHE.with_name(CACHE.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(tmp), "http://deb.debian.org/debian"],
                   check=True, capture_output=True)
    os.rename(tmp, CACHE)
    return CACHE


def chroot(root: Path, script: str) -> str:
    return subprocess.run([shutil.which("chroot") or "/usr/sbin/chroot", str(root), "/bin/sh", "-c", script], check=True, capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin"}).stdout


def test_debian_image(store: ImageStore, tmp_path: Path) -> None:
    root = debian_root()
    debian = build_from_rootfs(store, root, "example.com/debian:bookworm", compression="zstd", cmd=["/bin/bash"])
    store.verify(debian)
    (layer,) = store.layer_dirs(debian)
    assert os.readlink(layer / "bin") == "usr/bin"  # merged /usr survives
    assert chroot(layer, "cat /etc/debian_version").startswith("12")
    (tmp_path / "b.toml").write_text("""
name = "example.com/debian-busybox:1"
from = "example.com/debian:bookworm"
[[add]]
src = "/bin/busybox"
dest = "/usr/local/bin/busybox"
[config]
env = ["PATH=/usr/local/bin:/usr/bin:/bin"]
""")
    image = build_from_file(store, tmp_path / "b.toml")
    assert image.layers[0] == debian.layers[0] and len(image.layers) == 2
    store.flatten(image, tmp_path / "flat")
    assert chroot(tmp_path / "flat", "/usr/local/bin/busybox echo ok; dpkg-query -W dpkg").startswith("ok\ndpkg\t")
