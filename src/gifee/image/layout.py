"""Export to and import from OCI image layouts, as directories or tar archives (I/O shell).

What skopeo (`oci:DIR`, `oci-archive:FILE`) and umoci read and write: an
`oci-layout` file, `index.json`, `blobs/sha256/...`. Exported index entries
carry the full image name in org.opencontainers.image.ref.name, and the image's
signatures travel along as referrers. On import every blob is hashed before it
enters the store; an entry named by a bare tag (skopeo's `oci:DIR:latest`)
needs `--name`. A nested image index (multi-platform) yields the entry for this
machine's platform.

Results appear whole or not at all: an export is built next to its target and
renamed into place, and an image's name is set only after all its blobs are in.
"""

from __future__ import annotations

import io
import json
import os
import platform
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import IO, Any

from gifee.image import oci
from gifee.image.errors import BadImage, BlobCorrupted, ImageError
from gifee.image.reference import parse_reference
from gifee.image.store import Image, ImageStore
from gifee.image.trust import signature_entries

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


# --- export -------------------------------------------------------------------


def _export_plan(store: ImageStore, images: list[Image]) -> tuple[list[oci.Descriptor], list[oci.Descriptor]]:
    """(index entries, blobs to copy) for the images and their signatures."""
    entries: list[oci.Descriptor] = []
    blobs: dict[str, oci.Descriptor] = {}
    for image in images:
        store.verify(image)
        entries.append({**image.descriptor, "annotations": {oci.REF_NAME: image.name}})
        for d in [image.descriptor, image.manifest["config"], *image.layers]:
            blobs[d["digest"]] = d
        for sig in signature_entries(store, image.manifest_digest):
            if sig["digest"] in blobs:
                continue
            manifest = oci.parse_manifest(store.read_blob(sig, "signature manifest"), "signature manifest")
            entries.append(sig)
            for d in [sig, manifest["config"], *manifest["layers"]]:
                blobs[d["digest"]] = d
    return entries, list(blobs.values())


def _layout_files(entries: list[oci.Descriptor]) -> dict[str, bytes]:
    index = {"schemaVersion": 2, "mediaType": oci.INDEX, "manifests": entries}
    return {
        "oci-layout": json.dumps({"imageLayoutVersion": oci.OCI_LAYOUT_VERSION}).encode(),
        "index.json": json.dumps(index, indent=2).encode() + b"\n",
    }


def _copy_checked(store: ImageStore, desc: oci.Descriptor, out: IO[bytes]) -> None:
    """Copy a blob, failing (BlobCorrupted) if it no longer matches its digest."""
    from gifee.image.unpack import HashingReader

    with open(store.blob_path(desc["digest"]), "rb") as f:
        reader = HashingReader(f)
        while chunk := reader.read(1 << 20):
            out.write(chunk)
    if reader.digest() != desc["digest"] or reader.size != desc["size"]:
        raise BlobCorrupted(f"blob {desc['digest']}: changed while it was exported")


def export_images(store: ImageStore, images: list[Image], target: Path) -> None:
    """Write an OCI layout of `images` (with signatures) to `target`: a .tar file, or a directory."""
    entries, blobs = _export_plan(store, images)
    files = _layout_files(entries)
    target = Path(target)
    if os.path.lexists(target) and not (target.is_dir() and not any(target.iterdir())):
        raise ImageError(f"{target}: already exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    as_tar = target.suffix == ".tar" or target.name.endswith((".tar.gz", ".oci"))
    if as_tar:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.tmp-")
        try:
            with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
                _tar_dir(tar, "blobs")
                _tar_dir(tar, "blobs/sha256")
                for desc in sorted(blobs, key=lambda d: str(d["digest"])):
                    info = tarfile.TarInfo("blobs/sha256/" + oci.digest_hex(desc["digest"]))
                    info.size = int(desc["size"])
                    info.mode = 0o644
                    with open(store.blob_path(desc["digest"]), "rb") as blob:
                        tar.addfile(info, blob)
                for name, data in files.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    info.mode = 0o644
                    tar.addfile(info, io.BytesIO(data))
                f.flush()
                os.fsync(f.fileno())
            # the tar was written from blob files that may have changed since they were checked
            _read_layout(_TarSource(Path(tmp)), check_only=True)
            os.rename(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return
    tmp_dir = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        os.chmod(tmp_dir, 0o755)
        (tmp_dir / "blobs" / "sha256").mkdir(parents=True)
        for desc in blobs:
            with open(tmp_dir / "blobs" / "sha256" / oci.digest_hex(desc["digest"]), "wb") as out:
                _copy_checked(store, desc, out)
        for name, data in files.items():
            (tmp_dir / name).write_bytes(data)
        if target.exists():
            target.rmdir()
        os.rename(tmp_dir, target)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir)


def _tar_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tar.addfile(info)


# --- import -------------------------------------------------------------------


class _DirSource:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.label = str(root)

    def open(self, name: str) -> IO[bytes]:
        path = self.root / name
        if path.is_symlink() or not path.is_file():
            raise BadImage(f"{self.label}: {name} is missing (or not a regular file)")
        return open(path, "rb")


class _TarSource:
    def __init__(self, path: Path) -> None:
        self.label = str(path)
        try:
            self.tar = tarfile.open(path, "r:*")
            self.members = {m.name.removeprefix("./"): m for m in self.tar.getmembers()}
        except (tarfile.TarError, OSError, EOFError) as e:
            raise BadImage(f"{path}: not a readable tar archive: {e}") from None

    def open(self, name: str) -> IO[bytes]:
        member = self.members.get(name)
        f = self.tar.extractfile(member) if member is not None and member.isreg() else None
        if f is None:
            raise BadImage(f"{self.label}: {name} is missing (or not a regular file)")
        return f


_Source = _DirSource | _TarSource


def _read_small(source: _Source, desc: oci.Descriptor, what: str) -> bytes:
    if desc["size"] > 16 << 20:
        raise BadImage(f"{source.label}: {what} {desc['digest']} is implausibly large ({desc['size']} bytes)")
    with source.open("blobs/sha256/" + oci.digest_hex(desc["digest"])) as f:
        data = f.read()
    if oci.sha256_digest(data) != desc["digest"] or len(data) != desc["size"]:
        raise BlobCorrupted(f"{source.label}: {what} {desc['digest']} does not match its digest")
    return data


def _platform_manifest(source: _Source, desc: oci.Descriptor) -> oci.Descriptor:
    index = oci.parse_index(_read_small(source, desc, "image index"), f"{source.label}: image index {desc['digest']}")
    want = {"os": "linux", "architecture": _ARCH.get(platform.machine(), platform.machine())}
    manifests = [d for d in index["manifests"] if d["mediaType"] in oci.MANIFEST_TYPES]
    for d in manifests:
        p = d.get("platform", {})
        if p.get("os") == want["os"] and p.get("architecture") == want["architecture"]:
            return dict(d)
    raise BadImage(f"{source.label}: image index {desc['digest']} has no image for {want['os']}/{want['architecture']}")


def _name_for(ref: str | None, override: str | None, label: str) -> str:
    if override is not None:
        explicit_tag = ":" in override.rpartition("/")[2]
        if ref and "/" not in ref and not explicit_tag:
            return str(parse_reference(f"{override}:{ref}"))
        return str(parse_reference(override))
    if not ref:
        raise BadImage(f"{label}: an image has no name (org.opencontainers.image.ref.name); give one with --name")
    if "/" not in ref:
        raise BadImage(f"{label}: an image is named only by the tag {ref!r}; give its name with --name")
    return str(parse_reference(ref))


def _read_layout(source: _Source, check_only: bool = False) -> list[tuple[str | None, oci.Descriptor, dict[str, Any]]]:
    """(ref name, manifest descriptor, parsed manifest) for each entry, signatures included."""
    with source.open("oci-layout") as f:
        try:
            version = json.loads(f.read()).get("imageLayoutVersion")
        except (ValueError, AttributeError):
            version = None
    if not isinstance(version, str):
        raise BadImage(f"{source.label}: oci-layout does not give an imageLayoutVersion")
    with source.open("index.json") as f:
        index = oci.parse_index(f.read(), f"{source.label}: index.json")
    out: list[tuple[str | None, oci.Descriptor, dict[str, Any]]] = []
    for desc in index["manifests"]:
        annotations = desc.get("annotations", {})
        ref = annotations.get("io.containerd.image.name") or annotations.get(oci.REF_NAME)
        if desc["mediaType"] in oci.INDEX_TYPES:
            desc = _platform_manifest(source, desc)
        what = f"{source.label}: manifest {desc['digest']}"
        manifest = oci.parse_manifest(_read_small(source, desc, "manifest"), what)
        if check_only:
            for d in [manifest["config"], *manifest["layers"]]:
                _copy_to(source, d, None)
        out.append((ref, {k: desc[k] for k in ("mediaType", "digest", "size")}, manifest))
    return out


def _copy_to(source: _Source, desc: oci.Descriptor, store: ImageStore | None) -> None:
    from gifee.image.unpack import HashingReader

    name = "blobs/sha256/" + oci.digest_hex(desc["digest"])
    if store is not None and store.has_blob(desc["digest"]):
        return
    with source.open(name) as f:
        if store is not None:
            store.put_stream(_Limited(f, int(desc["size"])), desc["digest"], f"{source.label}: blob")
            return
        reader = HashingReader(f)
        reader.drain()
        if reader.digest() != desc["digest"]:
            raise BlobCorrupted(f"{source.label}: blob {desc['digest']} does not match its digest")


class _Limited:
    """Reads at most `size` bytes, and one more to notice a blob longer than its descriptor says."""

    def __init__(self, inner: IO[bytes], size: int) -> None:
        self.inner, self.left = inner, size + 1

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.inner.read(n)
        self.left -= len(data)
        return data


def import_layout(store: ImageStore, path: Path, name: str | None = None) -> list[Image]:
    """Import every image (and its signatures) from an OCI layout directory or tar archive."""
    path = Path(path)
    if path.is_dir():
        source: _Source = _DirSource(path)
    elif path.is_file():
        source = _TarSource(path)
    else:
        raise ImageError(f"{path}: no such file or directory")
    entries = _read_layout(source)
    images = [(ref, desc, m) for ref, desc, m in entries if not oci.is_signature(m)]
    signatures = [(desc, m) for _, desc, m in entries if oci.is_signature(m)]
    if not images:
        raise BadImage(f"{source.label}: holds no image")
    if name is not None and len({desc["digest"] for _, desc, _ in images}) > 1:
        raise BadImage(f"{source.label}: holds {len(images)} images; --name needs exactly one")
    named = [(_name_for(ref, name, source.label), desc, m) for ref, desc, m in images]
    imported: list[Image] = []
    for image_name, desc, manifest in named:
        oci.check_image_manifest(manifest, f"{source.label}: {image_name}")
        for d in [manifest["config"], *manifest["layers"]]:
            _copy_to(source, d, store)
        data = _read_small(source, desc, "manifest")
        imported.append(store.add_image(image_name, data))
    digests = {image.manifest_digest for image in imported}
    for desc, manifest in signatures:
        if manifest["subject"]["digest"] not in digests:
            continue
        for d in [manifest["config"], *manifest["layers"]]:
            _copy_to(source, d, store)
        store.put_blob(_read_small(source, desc, "signature manifest"), desc["digest"])
        entry = {**desc, "artifactType": oci.SIGNATURE,
                 "annotations": {oci.SIGNATURE_OF: manifest["subject"]["digest"]}}
        store.update_index(lambda ms, e=entry: [d for d in ms if d["digest"] != e["digest"]] + [e])
    return imported
