"""`gifee image copy SRC DST` between the local store, OCI layouts and registries (I/O shell).

Every copy goes through an image store: the local one when either side is
local, otherwise a staging store under the local store's temp area, removed
afterwards. Into the local store, a registry image is pulled (with the trust
check unless it is skipped); out of it, pushed. Between two repositories of
one registry, blobs are mounted rather than sent again.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gifee.image.progress import Progress
from gifee.image.remote import RegistryClient, load_credentials
from gifee.image.remoteref import Endpoint, RemoteRef
from gifee.image.store import Image, ImageStore


@dataclass(frozen=True)
class Transport:
    """How to reach registries: from --insecure/--tls-verify/--creds and the data directory."""

    insecure: bool = False
    tls_verify: bool = True
    force_tls: bool = False
    creds: str | None = None
    data_dir: Path | None = None

    def client(self, ref: RemoteRef, *scopes: str) -> RegistryClient:
        return RegistryClient(ref.registry, insecure=self.insecure, tls_verify=self.tls_verify,
                              force_tls=self.force_tls,
                              credentials=load_credentials(ref.registry, self.creds, self.data_dir),
                              scopes=list(scopes))


def pull_scope(ref: RemoteRef) -> str:
    return f"repository:{ref.repository}:pull"


def push_scopes(ref: RemoteRef, mount_from: str | None) -> list[str]:
    scopes = [f"repository:{ref.repository}:pull,push"]
    if mount_from and mount_from != ref.repository:
        scopes.append(f"repository:{mount_from}:pull")
    return scopes


def mount_source(image_name: str, dest: RemoteRef) -> str | None:
    """The repository on `dest`'s registry the image came from, if its name says so."""
    prefix = dest.registry + "/"
    if not image_name.startswith(prefix):
        return None
    return image_name[len(prefix):].rpartition(":")[0] or None


def copy(src: Endpoint, dst: Endpoint, store: ImageStore, transport: Transport, progress: Progress,
         trust_root: Path | None) -> str:
    """Copy one image; returns its manifest digest. `trust_root` checks images named in `store`."""
    local_dest = dst.kind == "local"
    if src.kind == "local":
        return _deliver(store.resolve(src.name), None, dst, store, transport, progress)
    if local_dest:
        return _acquire(src, dst.name, store, transport, progress, trust_root).manifest_digest
    store.ensure()
    staging_dir = Path(tempfile.mkdtemp(dir=store.tmp, prefix="copy-"))
    try:
        staging = ImageStore(staging_dir)
        name = dst.remote.local_name if dst.remote else "staging/image:latest"
        image = _acquire(src, name, staging, transport, progress, None)
        return _deliver(image, src.remote, dst, staging, transport, progress)
    finally:
        shutil.rmtree(staging_dir, ignore_errors=True)


def _acquire(src: Endpoint, name: str, store: ImageStore, transport: Transport, progress: Progress,
             trust_root: Path | None) -> Image:
    if src.kind == "docker":
        from gifee.image.pull import pull

        assert src.remote is not None
        return pull(transport.client(src.remote, pull_scope(src.remote)), src.remote, store, progress,
                    name, trust_root)
    from gifee.image.ocidir import read_image

    return read_image(Path(src.path), src.name, store, name)


def _deliver(image: Image, origin: RemoteRef | None, dst: Endpoint, store: ImageStore, transport: Transport,
             progress: Progress) -> str:
    if dst.kind == "local":
        store.tag(dst.name, image.descriptor)
    elif dst.kind == "oci":
        from gifee.image.ocidir import write_image

        write_image(store, image, Path(dst.path), dst.name or image.name)
    else:
        from gifee.image.push import push

        assert dst.remote is not None
        mount = origin.repository if origin and origin.registry == dst.remote.registry else \
            mount_source(image.name, dst.remote)
        client = transport.client(dst.remote, *push_scopes(dst.remote, mount))
        push(client, image, dst.remote, store, progress, mount)
    return image.manifest_digest
