"""Push an image from the local store (with its signatures) to a registry (I/O shell).

Order: every blob first (HEAD skips what the registry has; a cross-repository
mount when the image came from another repository of the same registry; one
PUT for small blobs, PATCH chunks for large ones), then the manifest by tag,
then each signature manifest by digest. A registry that does not answer a
signature's PUT with `OCI-Subject` lacks the referrers API, so the fallback
index tagged `sha256-<hex>` is updated too, as the distribution spec asks.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from gifee.image import distribution, oci
from gifee.image.progress import Progress
from gifee.image.remote import RegistryClient, RegistryError
from gifee.image.remoteref import RemoteRef
from gifee.image.store import Image, ImageStore
from gifee.image.trust import signature_entries

CHUNK = 16 << 20


def push_blob(client: RegistryClient, repository: str, desc: oci.Descriptor, store: ImageStore,
              progress: Progress, label: str, mount_from: str | None = None, chunk: int = CHUNK) -> str:
    """Make the registry hold the blob; returns "exists", "mounted" or "pushed"."""
    digest, size = desc["digest"], int(desc["size"])
    if client.has_blob(repository, digest):
        return "exists"
    start = f"/v2/{repository}/blobs/uploads/"
    if mount_from and mount_from != repository:
        start = distribution.with_query(start, mount=digest, **{"from": mount_from})
    r = client.request("POST", start, body=b"", ok=(201, 202))
    r.close()
    if r.status == 201:
        return "mounted"
    if r.status != 202 or not r.headers.get("Location"):
        raise RegistryError(f"registry {client.registry}: starting an upload of {digest} answered {r.status}")
    location = r.headers["Location"]
    bar = progress.bar(label, size)
    path = store.blob_path(digest)
    with open(path, "rb") as f:
        pieces = distribution.upload_chunks(size, chunk)
        if not pieces:
            data = f.read()
            location = _put(client, location, digest, data, bar.update)
        else:
            for begin, end in pieces:
                data = f.read(end - begin)
                if len(data) != end - begin:
                    raise RegistryError(f"{path}: blob shorter than its descriptor says")
                r = client.request("PATCH", location, body=data, ok=(202,), headers={
                    "Content-Type": "application/octet-stream", "Content-Range": f"{begin}-{end - 1}"})
                r.close()
                if r.status != 202:
                    raise RegistryError(f"registry {client.registry}: upload of {digest} answered {r.status}")
                location = r.headers.get("Location", location)
                bar.update(len(data))
            _put(client, location, digest, b"", None)
    bar.finish()
    return "pushed"


def _put(client: RegistryClient, location: str, digest: str, data: bytes, done: Callable[[int], None] | None) -> str:
    r = client.request("PUT", distribution.with_query(location, digest=digest), body=data, ok=(201,),
                       headers={"Content-Type": "application/octet-stream"})
    r.close()
    if r.status != 201:
        raise RegistryError(f"registry {client.registry}: finishing the upload of {digest} answered {r.status}")
    if done is not None:
        done(len(data))
    return location


def put_manifest(client: RegistryClient, repository: str, reference: str, data: bytes,
                 media_type: str) -> dict[str, str]:
    """PUT a manifest; returns the answer's headers."""
    r = client.request("PUT", f"/v2/{repository}/manifests/{reference}", body=data, ok=(201,),
                       headers={"Content-Type": media_type})
    r.close()
    if r.status != 201:
        raise RegistryError(f"registry {client.registry}: PUT manifest {reference} answered {r.status}")
    return {k: v for k, v in r.headers.items()}


def push_signatures(client: RegistryClient, repository: str, image: Image, store: ImageStore,
                    progress: Progress) -> int:
    count = 0
    for entry in signature_entries(store, image.manifest_digest):
        data = store.read_blob(entry, "signature manifest")
        manifest = oci.parse_manifest(data, "signature manifest")
        for blob in [manifest["config"], *manifest["layers"]]:
            push_blob(client, repository, blob, store, progress, "signature blob")
        headers = put_manifest(client, repository, entry["digest"], data, manifest.get("mediaType", oci.MANIFEST))
        if "OCI-Subject" not in headers:  # no referrers API: maintain the fallback tag
            tag = distribution.fallback_tag(image.manifest_digest)
            current = client.get_json(f"/v2/{repository}/manifests/{tag}", oci.INDEX)
            index = distribution.add_referrer(current, distribution.referrer_descriptor(data, manifest))
            put_manifest(client, repository, tag, json.dumps(index).encode(), oci.INDEX)
        count += 1
    return count


def push(client: RegistryClient, image: Image, dest: RemoteRef, store: ImageStore, progress: Progress,
         mount_from: str | None = None, chunk: int = CHUNK) -> str:
    """Push `image` (blobs, manifest, signatures) to `dest`; returns the manifest digest."""
    store.verify(image)  # push only what is intact
    if dest.digest and dest.digest != image.manifest_digest:
        raise RegistryError(f"{dest}: the local image's digest is {image.manifest_digest}")
    what = str(dest)
    push_blob(client, dest.repository, image.manifest["config"], store, progress, f"{what}: config", mount_from, chunk)
    for i, layer in enumerate(image.layers):
        push_blob(client, dest.repository, layer, store, progress, f"{what}: layer {i}", mount_from, chunk)
    data = store.read_blob(image.descriptor, f"{what}: manifest")
    put_manifest(client, dest.repository, dest.reference, data, image.media_type)
    push_signatures(client, dest.repository, image, store, progress)
    return image.manifest_digest
