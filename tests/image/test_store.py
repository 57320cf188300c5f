"""The image store: resolving, verifying, tampering, unpacking, builds, removal."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from gifee.image import oci
from gifee.image.build import build_from_file
from gifee.image.errors import BadBuildFile, BlobCorrupted, ImageError, ImageNotFound
from gifee.image.store import Image, ImageStore
from tests.image.images import busybox_image


def flip_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[min(offset, len(data) - 1)] ^= 0x01
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))


def test_resolve(store: ImageStore, busybox: Image) -> None:
    assert store.resolve("example.com/busybox").manifest_digest == busybox.manifest_digest
    assert store.resolve("example.com/busybox:latest").name == "example.com/busybox:latest"
    assert store.resolve(busybox.manifest_digest[:12]).manifest_digest == busybox.manifest_digest
    assert busybox.config["config"]["Cmd"] == ["/bin/sh"]
    assert busybox.layers[0]["mediaType"] == oci.LAYER_GZIP
    for ref in ["example.com/busybox:other", "example.com/nope", "sha256:ffff", "sha256:xyz"]:
        with pytest.raises(ImageNotFound):
            store.resolve(ref)


def test_layout_is_an_oci_layout(store: ImageStore, busybox: Image) -> None:
    assert json.loads((store.root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((store.root / "index.json").read_text())
    assert index["manifests"][0]["annotations"][oci.REF_NAME] == "example.com/busybox:latest"
    for path in (store.root / "blobs" / "sha256").iterdir():
        assert oci.sha256_digest(path.read_bytes()) == "sha256:" + path.name


def test_rebuild_is_reproducible(store: ImageStore, busybox: Image) -> None:
    again = busybox_image(store, "example.com/busybox:again")
    assert again.manifest_digest == busybox.manifest_digest


@pytest.mark.parametrize("part", ["layer", "config", "manifest"])
def test_tampered_blob_is_refused(store: ImageStore, busybox: Image, part: str, tmp_path: Path) -> None:
    digest = {"layer": busybox.layers[0]["digest"], "config": busybox.manifest["config"]["digest"],
              "manifest": busybox.manifest_digest}[part]
    flip_byte(store.blob_path(digest))
    with pytest.raises(BlobCorrupted, match=digest):
        store.verify(busybox)
    if part != "layer":
        with pytest.raises(BlobCorrupted, match=digest):
            store.resolve("example.com/busybox")
    else:
        with pytest.raises(BlobCorrupted, match=digest):
            store.layer_dirs(busybox)
        with pytest.raises(BlobCorrupted, match=digest):
            store.flatten(busybox, tmp_path / "flat")
        assert not (tmp_path / "flat").exists()
        assert list(store.unpacked.iterdir()) == []


def test_put_blob_checks_digest(store: ImageStore) -> None:
    with pytest.raises(BlobCorrupted):
        store.put_blob(b"hello", oci.sha256_digest(b"world"))
    assert not store.has_blob(oci.sha256_digest(b"hello"))
    assert list(store.tmp.iterdir()) == []


def test_layer_dirs_are_cached_and_concurrent_safe(store: ImageStore, busybox: Image) -> None:
    results: list[list[Path]] = []
    errors: list[BaseException] = []

    def unpack() -> None:
        try:
            results.append(ImageStore(store.root).layer_dirs(busybox))
        except BaseException as e:  # noqa: BLE001 - collected for the assertion below
            errors.append(e)

    threads = [threading.Thread(target=unpack) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(r == results[0] for r in results)
    (layer,) = results[0]
    assert layer.name == oci.digest_hex(busybox.layers[0]["digest"])
    assert os.readlink(layer / "bin" / "sh") == "/bin/busybox"
    assert list(store.tmp.iterdir()) == []
    mtime = layer.stat().st_mtime_ns
    assert store.layer_dirs(busybox) == [layer] and layer.stat().st_mtime_ns == mtime


@pytest.mark.root
def test_flattened_busybox_runs(store: ImageStore, busybox: Image, tmp_path: Path) -> None:
    store.flatten(busybox, tmp_path / "root")
    out = subprocess.run(["chroot", str(tmp_path / "root"), "/bin/sh", "-c", "echo hello from $(basename $0)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "hello from sh"


def test_build_file(store: ImageStore, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    (ctx / "files" / "sub").mkdir(parents=True)
    (ctx / "files" / "sub" / "a.txt").write_text("a")
    (ctx / "build.toml").write_text("""
name = "example.com/app:1"
from = "example.com/busybox"
[[add]]
src = "files"
dest = "/opt/files"
[[add]]
src = "/bin/busybox"
dest = "/usr/local/bin/bb"
[config]
env = ["PATH=/usr/local/bin:/bin", "A=1"]
entrypoint = ["/bin/sh", "-c"]
cmd = ["echo hi"]
workdir = "/opt"
labels = { "org.example" = "x" }
""")
    busybox_image(store)
    image = build_from_file(store, ctx / "build.toml", compression="zstd", epoch=0)
    assert len(image.layers) == 2 and image.layers[1]["mediaType"] == oci.LAYER_ZSTD
    c = image.config["config"]
    assert c["Env"] == ["PATH=/usr/local/bin:/bin", "A=1"] and c["Entrypoint"] == ["/bin/sh", "-c"]
    assert c["Cmd"] == ["echo hi"] and c["WorkingDir"] == "/opt" and c["Labels"] == {"org.example": "x"}
    store.flatten(image, tmp_path / "flat")
    assert (tmp_path / "flat" / "opt/files/sub/a.txt").read_text() == "a"
    assert (tmp_path / "flat" / "usr/local/bin/bb").stat().st_size == Path("/bin/busybox").stat().st_size
    assert (tmp_path / "flat" / "bin/busybox").exists()
    assert build_from_file(store, ctx / "build.toml", compression="zstd", epoch=0).manifest_digest == image.manifest_digest


@pytest.mark.parametrize("text, message", [
    ("name = 'x'\nfrom = 'none'\nbogus = 1\n", "unknown key"),
    ("name = 'Bad Name'\n", "image name"),
    ("name = 'x'\n[[add]]\nsrc = 'a'\ndest = 'relative'\n", "absolute path"),
    ("name = 'x'\n[[add]]\nsrc = 'a'\ndest = '/../etc'\n", "outside the root"),
    ("name = 'x'\n[config]\nenv = ['NOEQUALS']\n", "NAME=value"),
    ("name = [", "not valid TOML"),
])
def test_bad_build_files(store: ImageStore, tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "b.toml").write_text(text)
    with pytest.raises(BadBuildFile, match=message):
        build_from_file(store, tmp_path / "b.toml")


def test_build_missing_source_or_base(store: ImageStore, tmp_path: Path) -> None:
    (tmp_path / "b.toml").write_text("name = 'x'\n[[add]]\nsrc = 'missing'\ndest = '/m'\n")
    with pytest.raises(ImageError, match="no such file"):
        build_from_file(store, tmp_path / "b.toml")
    (tmp_path / "b.toml").write_text("name = 'x'\nfrom = 'example.com/absent'\n")
    with pytest.raises(ImageNotFound):
        build_from_file(store, tmp_path / "b.toml")
    assert store.images() == []


def test_rm_and_gc(store: ImageStore, busybox: Image) -> None:
    busybox_image(store, "example.com/busybox:two")
    assert store.remove("example.com/busybox:two") == ["example.com/busybox:two"]
    assert store.has_blob(busybox.layers[0]["digest"])  # still named by :latest
    store.remove(busybox.manifest_digest)
    assert store.images() == []
    assert store.gc(grace_seconds=0) != []
    assert list(store.blobs.iterdir()) == []
    with pytest.raises(ImageNotFound):
        store.remove("example.com/busybox")


def test_concurrent_tags_all_land(store: ImageStore, busybox: Image) -> None:
    def tag(prefix: str) -> None:
        own = ImageStore(store.root)
        for i in range(15):
            own.tag(f"example.com/{prefix}:{i}", busybox.descriptor)

    threads = [threading.Thread(target=tag, args=(p,)) for p in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.images()) == 1 + 45
