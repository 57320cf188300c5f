"""The local image store: an OCI image layout whose every blob is digest-checked.

Layout (root is usually <gifee dir>/images):
    oci-layout, index.json     the OCI image layout; index entries name images with
                               org.opencontainers.image.ref.name = "example.com/app:tag";
                               signatures are entries annotated dev.gifee.signature.subject
    blobs/sha256/<hex>         content, immutable once renamed into place
    .gifee/lock                flock held while index.json is rewritten or blobs collected
    .gifee/tmp/                temporary files and directories (same file system: rename works)
    .gifee/layers/<hex>/       layers unpacked for overlayfs, by layer digest

A blob is written to .gifee/tmp, hashed, and renamed into blobs/ only when its
digest is the expected one, so a blob file that exists is whole. Reads of
manifests and configs re-hash what they read; layers are hashed as they are
unpacked and by `verify`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from gifee.image import oci
from gifee.image.errors import BadImage, BlobCorrupted, ImageError, ImageNotFound
from gifee.image.fsutil import atomic_write, fsync_dir, locked
from gifee.image.reference import parse_reference

if TYPE_CHECKING:  # unpacking (tarfile, gzip, zstd) is imported only when a layer is not unpacked yet
    from gifee.image.unpack import Mode

__all__ = ["BlobCorrupted", "Image", "ImageNotFound", "ImageStore"]
_CHUNK = 1 << 20


class Image(NamedTuple):
    """One image as the store knows it; `manifest` and `config` are parsed, checked JSON.
    A named tuple, not a dataclass: as immutable, and defined in a tenth of the time on
    every start of `gifee run`."""

    name: str
    manifest_digest: str
    manifest_size: int
    manifest: dict[str, Any]
    config: dict[str, Any]

    @property
    def layers(self) -> list[oci.Descriptor]:
        return list(self.manifest["layers"])

    @property
    def diff_ids(self) -> list[str]:
        return list(self.config["rootfs"]["diff_ids"])

    @property
    def media_type(self) -> str:
        return str(self.manifest.get("mediaType", oci.MANIFEST))

    @property
    def descriptor(self) -> oci.Descriptor:
        return {"mediaType": self.media_type, "digest": self.manifest_digest, "size": self.manifest_size}

    @property
    def size(self) -> int:
        return self.manifest_size + int(self.manifest["config"]["size"]) + sum(int(d["size"]) for d in self.layers)

    @property
    def created(self) -> str:
        return str(self.config.get("created", ""))


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs" / "sha256"
        self.private = self.root / ".gifee"
        self.tmp = self.private / "tmp"
        self.unpacked = self.private / "layers"
        self.index_path = self.root / "index.json"

    # --- layout and index -------------------------------------------------

    def ensure(self) -> None:
        """Create the layout on first write."""
        if (self.root / "oci-layout").exists() and self.tmp.is_dir() and self.unpacked.is_dir():
            return
        for d in (self.blobs, self.tmp, self.unpacked):
            d.mkdir(parents=True, exist_ok=True)
        with self.lock():
            if not (self.root / "oci-layout").exists():
                atomic_write(self.root / "oci-layout", json.dumps({"imageLayoutVersion": oci.OCI_LAYOUT_VERSION}).encode())
            if not self.index_path.exists():
                self._write_index({"schemaVersion": 2, "mediaType": oci.INDEX, "manifests": []})

    @contextmanager
    def lock(self) -> Iterator[None]:
        self.private.mkdir(parents=True, exist_ok=True)
        with locked(self.private / "lock"):
            yield

    def read_index(self) -> dict[str, Any]:
        try:
            data = self.index_path.read_bytes()
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": oci.INDEX, "manifests": []}
        return oci.parse_index(data, f"{self.index_path}")

    def _write_index(self, index: dict[str, Any]) -> None:
        atomic_write(self.index_path, json.dumps(index, indent=2).encode() + b"\n", self.tmp)

    def update_index(self, change: Any) -> None:
        """Apply `change(manifests) -> manifests` to index.json under the store lock."""
        self.ensure()
        with self.lock():
            index = self.read_index()
            index["manifests"] = change(list(index["manifests"]))
            self._write_index(index)

    # --- blobs --------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.blobs / oci.digest_hex(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def put_blob(self, data: bytes, expected: str | None = None) -> str:
        """Store bytes; returns their digest. BlobCorrupted if they do not hash to `expected`."""
        return self.put_stream(_BytesReader(data), expected)

    def put_stream(self, stream: IO[bytes] | Any, expected: str | None = None, what: str = "blob") -> str:
        """Copy a stream into the store, hashing it; visible only if its digest is `expected` (when given)."""
        import tempfile  # writing: not on the path of `gifee run`, which only reads

        self.ensure()
        fd, tmp = tempfile.mkstemp(dir=self.tmp, prefix="blob-")
        sha = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as f:
                while chunk := stream.read(_CHUNK):
                    sha.update(chunk)
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            digest = "sha256:" + sha.hexdigest()
            if expected is not None and digest != expected:
                raise BlobCorrupted(f"{what}: content hashes to {digest}, expected {expected}")
            self._place(Path(tmp), digest)
            return digest
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def commit_file(self, tmp: Path) -> str:
        """Move a complete temporary file (made in self.tmp) into blobs/ under its digest."""
        digest = _hash_file(tmp)[0]
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        self._place(tmp, digest)
        return digest

    def _place(self, tmp: Path, digest: str) -> None:
        final = self.blob_path(digest)
        if final.exists():
            os.utime(final)  # a fresh mtime keeps gc's grace period from collecting it under us
            tmp.unlink()
            return
        os.chmod(tmp, 0o644)
        os.rename(tmp, final)
        fsync_dir(self.blobs)

    def read_blob(self, desc: oci.Descriptor, what: str) -> bytes:
        """A small blob's bytes, checked against its descriptor."""
        try:
            data = self.blob_path(desc["digest"]).read_bytes()
        except FileNotFoundError:
            raise BlobCorrupted(f"{what} {desc['digest']}: blob is missing from the store") from None
        if oci.sha256_digest(data) != desc["digest"] or len(data) != desc["size"]:
            raise BlobCorrupted(
                f"{what} {desc['digest']}: blob content does not match its digest "
                f"(hashes to {oci.sha256_digest(data)}, {len(data)} bytes; expected {desc['size']})"
            )
        return data

    def verify_blob(self, desc: oci.Descriptor, what: str) -> None:
        try:
            digest, size = _hash_file(self.blob_path(desc["digest"]))
        except FileNotFoundError:
            raise BlobCorrupted(f"{what} {desc['digest']}: blob is missing from the store") from None
        if digest != desc["digest"] or size != desc["size"]:
            raise BlobCorrupted(
                f"{what} {desc['digest']}: blob content does not match its digest "
                f"(hashes to {digest}, {size} bytes; expected {desc['size']})"
            )

    # --- images ---------------------------------------------------------------

    def load(self, desc: oci.Descriptor, name: str) -> Image:
        """The image whose manifest `desc` describes (manifest and config digest-checked)."""
        what = name or desc["digest"]
        manifest = oci.parse_manifest(self.read_blob(desc, f"{what}: manifest"), f"{what}: manifest")
        oci.check_image_manifest(manifest, f"{what}: manifest")
        config = oci.parse_config(
            self.read_blob(manifest["config"], f"{what}: config"), f"{what}: config", len(manifest["layers"])
        )
        return Image(name, desc["digest"], int(desc["size"]), manifest, config)

    def image_entries(self) -> list[oci.Descriptor]:
        """index.json entries that name images (not signatures)."""
        return [d for d in self.read_index()["manifests"] if oci.REF_NAME in d.get("annotations", {})
                and oci.SIGNATURE_OF not in d.get("annotations", {})]

    def images(self) -> list[Image]:
        return [self.load(d, d["annotations"][oci.REF_NAME]) for d in self.image_entries()]

    def resolve(self, ref: str) -> Image:
        """`name[:tag]` or `sha256:<hex or unique prefix>` -> Image; ImageNotFound otherwise."""
        entries = self.image_entries()
        if ref.startswith("sha256:"):
            prefix = ref[len("sha256:"):]
            if not prefix or any(c not in "0123456789abcdef" for c in prefix) or len(prefix) > 64:
                raise ImageNotFound(f"image {ref!r}: not a digest or digest prefix")
            digests = sorted({d["digest"] for d in entries if d["digest"].startswith(ref)})
            if not digests:
                raise ImageNotFound(f"image {ref!r}: no image with this digest in the store")
            if len(digests) > 1:
                raise ImageNotFound(f"image {ref!r}: digest prefix is ambiguous ({len(digests)} images)")
            names = sorted(d["annotations"][oci.REF_NAME] for d in entries if d["digest"] == digests[0])
            desc = next(d for d in entries if d["digest"] == digests[0])
            return self.load(desc, names[0])
        name = str(parse_reference(ref))
        for d in entries:
            if d["annotations"][oci.REF_NAME] == name:
                return self.load(d, name)
        raise ImageNotFound(f"image {name!r}: not in the store (gifee image list shows what is)")

    def names_of(self, manifest_digest: str) -> list[str]:
        return sorted(d["annotations"][oci.REF_NAME] for d in self.image_entries() if d["digest"] == manifest_digest)

    def tag(self, name: str, desc: oci.Descriptor) -> None:
        """Point `name` at a manifest already in the store (replacing what it named before)."""
        full = str(parse_reference(name))
        entry = {"mediaType": desc["mediaType"], "digest": desc["digest"], "size": desc["size"],
                 "annotations": {oci.REF_NAME: full}}

        def change(manifests: list[oci.Descriptor]) -> list[oci.Descriptor]:
            return [d for d in manifests if d.get("annotations", {}).get(oci.REF_NAME) != full] + [entry]

        self.update_index(change)

    def add_image(self, name: str, manifest_bytes: bytes) -> Image:
        """Store a manifest whose config and layers are already stored; name it."""
        manifest = oci.parse_manifest(manifest_bytes, f"{name}: manifest")
        digest = self.put_blob(manifest_bytes)
        desc = {"mediaType": manifest.get("mediaType", oci.MANIFEST), "digest": digest, "size": len(manifest_bytes)}
        image = self.load(desc, name)  # refuses the manifest if its config or layers are missing
        for i, layer in enumerate(image.layers):
            if not self.has_blob(layer["digest"]):
                raise BadImage(f"{name}: layer {i} ({layer['digest']}) is not in the store")
        self.tag(name, desc)
        return self.resolve(name)

    def remove(self, ref: str) -> list[str]:
        """Remove a name (or, for a digest, every name of that image); returns the names removed."""
        image = self.resolve(ref)
        names = self.names_of(image.manifest_digest) if ref.startswith("sha256:") else [image.name]

        def change(manifests: list[oci.Descriptor]) -> list[oci.Descriptor]:
            return [d for d in manifests if d.get("annotations", {}).get(oci.REF_NAME) not in names]

        self.update_index(change)
        self.gc()
        return names

    def gc(self, grace_seconds: float = 600.0) -> list[str]:
        """Drop signatures of removed images and blobs nothing refers to.

        Blobs younger than `grace_seconds` are kept: another gifee command may have
        written them and not yet named the image that uses them."""
        self.ensure()
        removed: list[str] = []
        with self.lock():
            index = self.read_index()
            images = {d["digest"] for d in index["manifests"] if oci.SIGNATURE_OF not in d.get("annotations", {})}
            kept = [d for d in index["manifests"]
                    if d.get("annotations", {}).get(oci.SIGNATURE_OF, d["digest"]) in images]
            if len(kept) != len(index["manifests"]):
                index["manifests"] = kept
                self._write_index(index)
            live: set[str] = set()
            for d in kept:
                live.add(d["digest"])
                try:
                    manifest = json.loads(self.blob_path(d["digest"]).read_bytes())
                except (OSError, ValueError):
                    continue
                for child in [manifest.get("config", {})] + list(manifest.get("layers", [])):
                    if isinstance(child, dict) and isinstance(child.get("digest"), str):
                        live.add(child["digest"])
            now = time.time()
            for path in self.blobs.iterdir():
                if "sha256:" + path.name in live:
                    continue
                if now - path.stat().st_mtime < grace_seconds:
                    continue
                path.unlink()
                removed.append("sha256:" + path.name)
        return removed

    def verify(self, image: Image) -> None:
        """Re-hash the manifest, config and every layer blob; BlobCorrupted names the first bad one."""
        what = image.name or image.manifest_digest
        self.verify_blob(image.descriptor, f"{what}: manifest")
        self.verify_blob(image.manifest["config"], f"{what}: config")
        for i, layer in enumerate(image.layers):
            self.verify_blob(layer, f"{what}: layer {i}")

    # --- unpacking --------------------------------------------------------

    def _unpack(self, image: Image, index: int, dest: Path, mode: Mode) -> list[str]:
        from gifee.image.unpack import unpack_layer

        layer = image.layers[index]
        compression = oci.LAYER_COMPRESSION[layer["mediaType"]]
        what = f"{image.name or image.manifest_digest}: layer {index} ({layer['digest']})"
        try:
            blob = open(self.blob_path(layer["digest"]), "rb")
        except FileNotFoundError:
            raise BlobCorrupted(f"{what}: blob is missing from the store") from None
        with blob:
            return unpack_layer(blob, compression, str(dest), mode, layer["digest"], image.diff_ids[index], what)

    def layer_dirs(self, image: Image) -> list[Path]:
        """Each layer unpacked once into its own directory (overlayfs lowerdir form), bottom first."""
        self.ensure()
        dirs: list[Path] = []
        for i, layer in enumerate(image.layers):
            final = self.unpacked / oci.digest_hex(layer["digest"])
            if not final.is_dir():
                import shutil
                import tempfile

                tmp = Path(tempfile.mkdtemp(dir=self.tmp, prefix="layer-"))
                try:
                    os.chmod(tmp, 0o755)
                    self._unpack(image, i, tmp, "overlay")
                    try:
                        os.rename(tmp, final)
                    except OSError:
                        if not final.is_dir():  # not a concurrent unpack that won the race
                            raise
                finally:
                    if tmp.exists():
                        shutil.rmtree(tmp)
            dirs.append(final)
        return dirs

    def flatten(self, image: Image, dest: Path) -> None:
        """Write the image's merged root file system to `dest` (which must not exist or be empty)."""
        import shutil
        import tempfile

        dest = Path(dest)
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise ImageError(f"{dest}: exists and is not an empty directory")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))
        try:
            os.chmod(tmp, 0o755)
            for i in range(len(image.layers)):
                self._unpack(image, i, tmp, "apply")
            if dest.exists():
                dest.rmdir()
            os.rename(tmp, dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else min(len(self.data), self.pos + n)
        chunk = bytes(self.data[self.pos:end])
        self.pos = end
        return chunk


def _hash_file(path: Path) -> tuple[str, int]:
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return "sha256:" + sha.hexdigest(), size
