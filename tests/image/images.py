"""Test images others can reuse: a busybox image built from Debian's busybox-static."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from gifee.image.build import build_from_rootfs
from gifee.image.store import Image, ImageStore

BUSYBOX = Path("/bin/busybox")


def busybox_rootfs(root: Path) -> Path:
    """/bin/busybox plus one symlink per applet (as `busybox --install -s` makes them), /etc, /tmp."""
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    os.chmod(root / "bin" / "busybox", 0o755)
    applets = subprocess.run([str(BUSYBOX), "--list-full"], check=True, capture_output=True, text=True).stdout.split()
    for applet in applets:
        link = root / applet
        if link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink("/bin/busybox", link)
    for d in ("etc", "tmp", "proc", "sys", "dev", "root"):
        (root / d).mkdir(exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    return root


def busybox_image(store: ImageStore, name: str = "example.com/busybox:latest", compression: str = "gzip") -> Image:
    """Build (into `store`) a one-layer busybox image running /bin/sh by default."""
    with tempfile.TemporaryDirectory(prefix="gifee-busybox-") as tmp:
        root = busybox_rootfs(Path(tmp) / "rootfs")
        return build_from_rootfs(
            store, root, name, compression=compression, epoch=0,
            cmd=["/bin/sh"], env=["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], workdir="/",
        )
