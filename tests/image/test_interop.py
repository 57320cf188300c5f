"""Interoperability with the reference tools: skopeo and umoci read what we write,
and we import and unpack what they write (gzip and zstd layers, whiteouts)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from gifee.image import oci
from gifee.image.errors import BadImage, BlobCorrupted
from gifee.image.layout import export_images, import_layout
from gifee.image.signing import generate, load_private
from gifee.image.store import Image, ImageStore
from gifee.image.trust import add_signature, signatures_of

pytestmark = pytest.mark.skipif(not (shutil.which("skopeo") and shutil.which("umoci")), reason="skopeo/umoci missing")
NAME = "example.com/busybox:latest"


def run(*cmd: str, cwd: Path | None = None) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=cwd).stdout


def signed(store: ImageStore, busybox: Image) -> Image:
    add_signature(store, busybox, load_private(generate()[0], "key"))
    return busybox


@pytest.mark.parametrize("form", ["dir", "tar"])
def test_skopeo_and_umoci_read_our_export(store: ImageStore, busybox: Image, tmp_path: Path, form: str) -> None:
    signed(store, busybox)
    target = tmp_path / ("out" if form == "dir" else "out.tar")
    export_images(store, [busybox], target)
    transport = "oci" if form == "dir" else "oci-archive"
    info = json.loads(run("skopeo", "inspect", f"{transport}:{target}:{NAME}"))
    assert info["Digest"] == busybox.manifest_digest
    assert info["Env"] == ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
    if form == "tar":
        return
    run("umoci", "unpack", "--rootless", "--image", f"{target}:{NAME}", str(tmp_path / "bundle"))
    rootfs = tmp_path / "bundle" / "rootfs"
    assert os.readlink(rootfs / "bin" / "sh") == "/bin/busybox"
    assert (rootfs / "bin" / "busybox").read_bytes() == Path("/bin/busybox").read_bytes()


@pytest.mark.parametrize("form", ["dir", "tar"])
def test_export_import_round_trip_keeps_signatures(store: ImageStore, busybox: Image, tmp_path: Path, form: str) -> None:
    signed(store, busybox)
    target = tmp_path / ("out" if form == "dir" else "out.tar")
    export_images(store, [busybox], target)
    other = ImageStore(tmp_path / "other")
    (image,) = import_layout(other, target)
    assert image.name == NAME and image.manifest_digest == busybox.manifest_digest
    assert len(signatures_of(other, image)) == 1
    other.verify(image)


def test_export_of_tampered_image_fails_without_output(store: ImageStore, busybox: Image, tmp_path: Path) -> None:
    path = store.blob_path(busybox.layers[0]["digest"])
    data = bytearray(path.read_bytes())
    data[500] ^= 1
    path.write_bytes(bytes(data))
    for target in (tmp_path / "out", tmp_path / "out.tar"):
        with pytest.raises(BlobCorrupted):
            export_images(store, [busybox], target)
        assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]


def test_import_refuses_tampered_layout(store: ImageStore, busybox: Image, tmp_path: Path) -> None:
    export_images(store, [busybox], tmp_path / "out")
    blob = tmp_path / "out" / "blobs" / "sha256" / oci.digest_hex(busybox.layers[0]["digest"])
    data = bytearray(blob.read_bytes())
    data[-10] ^= 1
    blob.write_bytes(bytes(data))
    other = ImageStore(tmp_path / "other")
    with pytest.raises(BlobCorrupted):
        import_layout(other, tmp_path / "out")
    assert other.images() == []
    assert not other.has_blob(busybox.layers[0]["digest"])


def test_import_needs_a_name_for_bare_tags(store: ImageStore, busybox: Image, tmp_path: Path) -> None:
    export_images(store, [busybox], tmp_path / "out")
    run("skopeo", "copy", f"oci:{tmp_path / 'out'}:{NAME}", f"oci:{tmp_path / 'copy'}:v1")
    other = ImageStore(tmp_path / "other")
    with pytest.raises(BadImage, match="--name"):
        import_layout(other, tmp_path / "copy")
    (image,) = import_layout(other, tmp_path / "copy", name="example.com/copied")
    assert image.name == "example.com/copied:v1"


def test_skopeo_zstd_layers_import_and_unpack(store: ImageStore, busybox: Image, tmp_path: Path) -> None:
    export_images(store, [busybox], tmp_path / "out")
    run("skopeo", "copy", "--dest-compress-format", "zstd", f"oci:{tmp_path / 'out'}:{NAME}",
        f"oci-archive:{tmp_path / 'zstd.tar'}:latest")
    other = ImageStore(tmp_path / "other")
    (image,) = import_layout(other, tmp_path / "zstd.tar", name="example.com/zstd")
    assert image.layers[0]["mediaType"] == oci.LAYER_ZSTD
    other.flatten(image, tmp_path / "flat")
    assert (tmp_path / "flat" / "bin" / "busybox").read_bytes() == Path("/bin/busybox").read_bytes()


def umoci_layout_with_whiteouts(tmp_path: Path) -> Path:
    """An umoci image of two layers: the second deletes d/f and g, replaces d by a new directory
    (umoci writes .wh. files for that) and empties e (an opaque-looking result)."""
    lay = tmp_path / "umoci"
    run("umoci", "init", "--layout", str(lay))
    run("umoci", "new", "--image", f"{lay}:t")
    b1 = tmp_path / "b1"
    run("umoci", "unpack", "--rootless", "--image", f"{lay}:t", str(b1))
    (b1 / "rootfs" / "d").mkdir()
    (b1 / "rootfs" / "d" / "f").write_text("f")
    (b1 / "rootfs" / "d" / "keep").write_text("keep")
    (b1 / "rootfs" / "g").write_text("g")
    run("umoci", "repack", "--image", f"{lay}:t", str(b1))
    b2 = tmp_path / "b2"
    run("umoci", "unpack", "--rootless", "--image", f"{lay}:t", str(b2))
    (b2 / "rootfs" / "d" / "f").unlink()
    (b2 / "rootfs" / "g").unlink()
    (b2 / "rootfs" / "d" / "n").write_text("n")
    run("umoci", "repack", "--image", f"{lay}:t", str(b2))
    return lay


def test_umoci_whiteouts_flatten(store: ImageStore, tmp_path: Path) -> None:
    lay = umoci_layout_with_whiteouts(tmp_path)
    (image,) = import_layout(store, lay, name="example.com/umoci:t")
    assert len(image.layers) == 2
    store.flatten(image, tmp_path / "flat")
    flat = tmp_path / "flat"
    assert sorted(os.listdir(flat)) == ["d"]
    assert sorted(os.listdir(flat / "d")) == ["keep", "n"]


@pytest.mark.root
def test_umoci_whiteouts_as_overlay_layers(store: ImageStore, tmp_path: Path) -> None:
    lay = umoci_layout_with_whiteouts(tmp_path)
    (image,) = import_layout(store, lay, name="example.com/umoci:t")
    lower, upper = store.layer_dirs(image)
    st = os.lstat(upper / "g")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert stat.S_ISCHR(os.lstat(upper / "d" / "f").st_mode)
    assert not os.path.lexists(upper / ".wh.g")
    # the real proof: overlayfs shows the same tree as flatten
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run("mount", "-t", "overlay", "overlay", "-o", f"lowerdir={upper}:{lower}", str(mnt))
    try:
        assert sorted(os.listdir(mnt)) == ["d"]
        assert sorted(os.listdir(mnt / "d")) == ["keep", "n"]
    finally:
        run("umount", str(mnt))
