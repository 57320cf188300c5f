"""The registry's files: content-addressed blobs, per-repository links, uploads, tags.

Layout under the root:

    blobs/<alg>/<hex[:2]>/<hex>                           content, manifests included
    repositories/<name>/_layers/<alg>/<hex>               this repository may serve this blob
    repositories/<name>/_manifests/revisions/<alg>/<hex>  a manifest of this repository (holds its media type)
    repositories/<name>/_manifests/tags/<tag>             the digest the tag points at
    repositories/<name>/_referrers/<alg>/<subject hex>/<alg>-<hex>   a referrer's descriptor (JSON)
    repositories/<name>/_uploads/<id>/data                bytes of an upload in progress
    gc.lock                                               shared by writers, exclusive for `gc`

Rules: a file becomes visible only by `os.replace` of a complete, fsynced temporary
file (`.tmp-*` beside it), and a blob only after its digest was checked, so a crash or a
bad upload never leaves a partial blob, tag or manifest behind. Names were validated by
the route grammar (no component starts with `_` or `.`, so repository names can
neither escape the root nor collide with the `_layers`-style directories).
Writers hold `gc.lock` shared while they link or commit; `gc` holds it exclusive.
These methods block: the server calls them from worker threads.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gifee.registry.manifests import Manifest
from gifee.registry.names import Digest, new_hasher

READ_CHUNK = 1 << 20


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{uuid.uuid4().hex}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(path.parent)


def file_digest(path: Path, algorithm: str) -> Digest:
    h = new_hasher(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(READ_CHUNK):
            h.update(chunk)
    return Digest(algorithm, h.hexdigest())


class UploadState:
    """An upload's running sha256, valid while `offset` equals the data file's size."""

    def __init__(self) -> None:
        self.hasher = new_hasher("sha256")
        self.offset = 0
        self.lock = threading.Lock()


class Storage:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.repositories = root / "repositories"
        self.uploads: dict[tuple[str, str], UploadState] = {}
        for d in (self.blobs, self.repositories):
            d.mkdir(parents=True, exist_ok=True)
        (root / "gc.lock").touch()

    # ------------------------------------------------------------------ locking

    @contextlib.contextmanager
    def writer_lock(self) -> Iterator[None]:
        with self.lock(exclusive=False):
            yield

    @contextlib.contextmanager
    def lock(self, exclusive: bool, wait: bool = True) -> Iterator[None]:
        fd = os.open(self.root / "gc.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            flags = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            fcntl.flock(fd, flags if wait else flags | fcntl.LOCK_NB)
            yield
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ blobs

    def blob_path(self, digest: Digest) -> Path:
        return self.blobs / digest.algorithm / digest.hex[:2] / digest.hex

    def repo_dir(self, name: str) -> Path:
        return self.repositories / name

    def repo_exists(self, name: str) -> bool:
        d = self.repo_dir(name)
        return (d / "_manifests").is_dir() or (d / "_layers").is_dir()

    def layer_link(self, name: str, digest: Digest) -> Path:
        return self.repo_dir(name) / "_layers" / digest.algorithm / digest.hex

    def blob_size(self, name: str, digest: Digest) -> int | None:
        """The blob's size if this repository may serve it, else None."""
        if not self.layer_link(name, digest).exists():
            return None
        try:
            return self.blob_path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def link_blob(self, name: str, digest: Digest) -> None:
        link = self.layer_link(name, digest)
        if not link.exists():
            write_atomic(link, b"")

    def touch_blob(self, digest: Digest) -> bool:
        """Refresh a blob's mtime (GC's grace period counts from the last push); False if absent."""
        try:
            os.utime(self.blob_path(digest))
            return True
        except FileNotFoundError:
            return False

    def mount_blob(self, name: str, source: str, digest: Digest) -> bool:
        with self.writer_lock():
            if self.blob_size(source, digest) is None or not self.touch_blob(digest):
                return False
            self.link_blob(name, digest)
            return True

    def delete_blob(self, name: str, digest: Digest) -> bool:
        try:
            self.layer_link(name, digest).unlink()
            return True
        except FileNotFoundError:
            return False

    # ------------------------------------------------------------------ uploads

    def upload_data(self, name: str, upload_id: str) -> Path:
        return self.repo_dir(name) / "_uploads" / upload_id / "data"

    def new_upload(self, name: str) -> str:
        upload_id = uuid.uuid4().hex
        data = self.upload_data(name, upload_id)
        data.parent.mkdir(parents=True, exist_ok=True)
        data.touch()
        self.uploads[(name, upload_id)] = UploadState()
        return upload_id

    def upload_size(self, name: str, upload_id: str) -> int | None:
        try:
            return self.upload_data(name, upload_id).stat().st_size
        except FileNotFoundError:
            return None

    def upload_state(self, name: str, upload_id: str) -> UploadState:
        state = self.uploads.get((name, upload_id))
        if state is None:  # e.g. after a restart: hash what is there
            state = UploadState()
            with open(self.upload_data(name, upload_id), "rb") as f:
                while chunk := f.read(READ_CHUNK):
                    state.hasher.update(chunk)
                    state.offset += len(chunk)
            self.uploads[(name, upload_id)] = state
        return state

    def rollback_upload(self, name: str, upload_id: str, size: int) -> None:
        """Cut a failed chunk off, so that an upload holds only whole chunks."""
        with contextlib.suppress(FileNotFoundError):
            os.truncate(self.upload_data(name, upload_id), size)
        self.uploads.pop((name, upload_id), None)  # the running hash saw the cut bytes

    def cancel_upload(self, name: str, upload_id: str) -> bool:
        self.uploads.pop((name, upload_id), None)
        d = self.upload_data(name, upload_id).parent
        if not d.is_dir():
            return False
        shutil.rmtree(d, ignore_errors=True)
        return True

    def commit_upload(self, name: str, upload_id: str, digest: Digest) -> bool:
        """Move a finished upload into place if its content has `digest`; False (and the
        upload discarded) if not. The data file is fsynced before it becomes the blob."""
        data = self.upload_data(name, upload_id)
        state = self.uploads.get((name, upload_id))
        size = data.stat().st_size
        if digest.algorithm == "sha256" and state is not None and state.offset == size:
            actual = Digest("sha256", state.hasher.hexdigest())
        else:
            actual = file_digest(data, digest.algorithm)
        if actual != digest:
            self.cancel_upload(name, upload_id)
            return False
        with open(data, "rb+") as f:
            os.fsync(f.fileno())
        target = self.blob_path(digest)
        with self.writer_lock():
            if not self.touch_blob(digest):
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(data, target)
                fsync_dir(target.parent)
            self.link_blob(name, digest)
        self.cancel_upload(name, upload_id)
        return True

    # ------------------------------------------------------------------ manifests

    def revision(self, name: str, digest: Digest) -> Path:
        return self.repo_dir(name) / "_manifests" / "revisions" / digest.algorithm / digest.hex

    def tag_path(self, name: str, tag: str) -> Path:
        return self.repo_dir(name) / "_manifests" / "tags" / tag

    def referrer_path(self, name: str, subject: Digest, referrer: Digest) -> Path:
        return (self.repo_dir(name) / "_referrers" / subject.algorithm / subject.hex
                / f"{referrer.algorithm}-{referrer.hex}")

    def has_manifest(self, name: str, digest: Digest) -> bool:
        return self.revision(name, digest).exists()

    def put_manifest(self, name: str, manifest: Manifest, body: bytes, tag: str | None) -> None:
        with self.writer_lock():
            blob = self.blob_path(manifest.digest)
            if not self.touch_blob(manifest.digest):
                write_atomic(blob, body)
            write_atomic(self.revision(name, manifest.digest), manifest.media_type.encode())
            if manifest.subject is not None:
                write_atomic(self.referrer_path(name, manifest.subject.digest, manifest.digest),
                             json.dumps(manifest.referrer_descriptor()).encode())
            if tag is not None:
                write_atomic(self.tag_path(name, tag), str(manifest.digest).encode())

    def resolve(self, name: str, reference: str) -> Digest | None:
        if ":" in reference:
            digest = Digest.parse(reference)
        else:
            try:
                digest = Digest.parse(self.tag_path(name, reference).read_text())
            except (FileNotFoundError, ValueError):
                return None
        return digest if self.has_manifest(name, digest) else None

    def get_manifest(self, name: str, reference: str) -> tuple[Digest, str, bytes] | None:
        digest = self.resolve(name, reference)
        if digest is None:
            return None
        try:
            media_type = self.revision(name, digest).read_text()
            body = self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            return None
        return digest, media_type, body

    def delete_tag(self, name: str, tag: str) -> bool:
        try:
            self.tag_path(name, tag).unlink()
            return True
        except FileNotFoundError:
            return False

    def delete_manifest(self, name: str, digest: Digest) -> bool:
        """Forget a manifest, the tags that point at it and its referrer entry."""
        revision = self.revision(name, digest)
        if not revision.exists():
            return False
        for tag, target in self.tag_targets(name).items():
            if target == str(digest):
                self.delete_tag(name, tag)
        referrers = self.repo_dir(name) / "_referrers"
        for entry in referrers.glob(f"*/*/{digest.algorithm}-{digest.hex}"):
            entry.unlink()
        revision.unlink()
        return True

    def tag_targets(self, name: str) -> dict[str, str]:
        tags_dir = self.repo_dir(name) / "_manifests" / "tags"
        out: dict[str, str] = {}
        try:
            entries = list(os.scandir(tags_dir))
        except FileNotFoundError:
            return out
        for entry in entries:
            if entry.name.startswith("."):
                continue
            with contextlib.suppress(FileNotFoundError):
                out[entry.name] = Path(entry.path).read_text()
        return out

    def tags(self, name: str) -> list[str] | None:
        if not self.repo_exists(name):
            return None
        return sorted(self.tag_targets(name))

    def referrers(self, name: str, subject: Digest) -> list[dict[str, Any]]:
        d = self.repo_dir(name) / "_referrers" / subject.algorithm / subject.hex
        out: list[dict[str, Any]] = []
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return out
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                out.append(json.loads(Path(entry.path).read_bytes()))
            except (FileNotFoundError, ValueError):
                continue
        return out

    # ------------------------------------------------------------------ walking (GC)

    def repository_names(self) -> list[str]:
        names = []
        for dirpath, dirnames, _ in os.walk(self.repositories):
            here = Path(dirpath)
            if "_manifests" in dirnames or "_layers" in dirnames:
                names.append(str(here.relative_to(self.repositories)))
            dirnames[:] = [d for d in dirnames if not d.startswith(("_", "."))]
        return sorted(names)

    def manifest_digests(self, name: str) -> list[Digest]:
        out = []
        revisions = self.repo_dir(name) / "_manifests" / "revisions"
        for path in revisions.glob("*/*"):
            with contextlib.suppress(ValueError):
                out.append(Digest.parse(f"{path.parent.name}:{path.name}"))
        return out

    def all_blobs(self) -> Iterator[tuple[Digest | None, Path]]:
        """Every file under blobs/: its digest, or None for a stray temporary file."""
        for path in self.blobs.glob("*/*/*"):
            try:
                yield Digest.parse(f"{path.parent.parent.name}:{path.name}"), path
            except ValueError:
                yield None, path


def is_enospc(e: OSError) -> bool:
    return e.errno == errno.ENOSPC
