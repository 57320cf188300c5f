"""OCI whiteouts and opaque directories in crafted layers: flatten and overlay agree."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from gifee.image.store import ImageStore
from tests.image.crafted import E, image_from_tars, make_tar

LOWER = make_tar([E("a", "dir", mode=0o755), E("a/old1"), E("a/old2"), E("a/sub", "dir", mode=0o755), E("a/sub/deep"),
                  E("b", "dir", mode=0o755), E("b/gone"), E("b/stays"), E("c", data=b"c")])
# the opaque marker comes after one of this layer's own entries in a/, which must survive it
UPPER = make_tar([E("a", "dir", mode=0o755), E("a/new1", data=b"1"), E("a/.wh..wh..opq"), E("a/new2", data=b"2"),
                  E("b/.wh.gone"), E(".wh.c"), E("x/.wh.nothing")])
EXPECTED = {"a": ["new1", "new2"], "b": ["stays"], "": ["a", "b", "x"]}


def tree(root: Path) -> dict[str, list[str]]:
    return {d: sorted(os.listdir(root / d)) for d in EXPECTED}


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_flatten_applies_whiteouts(store: ImageStore, tmp_path: Path, compression: str) -> None:
    image = image_from_tars(store, "example.com/wh:latest", [LOWER, UPPER], compression)
    store.flatten(image, tmp_path / "flat")
    assert tree(tmp_path / "flat") == EXPECTED


@pytest.mark.root
def test_overlay_layers_match_flatten(store: ImageStore, tmp_path: Path) -> None:
    image = image_from_tars(store, "example.com/wh:latest", [LOWER, UPPER], "gzip")
    lower, upper = store.layer_dirs(image)
    assert os.getxattr(upper / "a", "trusted.overlay.opaque") == b"y"
    assert stat.S_ISCHR(os.lstat(upper / "c").st_mode)
    assert os.lstat(upper / "b" / "gone").st_rdev == os.makedev(0, 0)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={upper}:{lower}", str(mnt)], check=True)
    try:
        assert tree(mnt) == EXPECTED
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
