"""Conformance, push workflow: monolithic and chunked uploads, upload status, out-of-order
chunks, cancel, digests checked, cross-repository mounts, manifests and their blobs."""

from __future__ import annotations

import json

import pytest

from tests.registry.conftest import lacks
from tests.registry.harness import (
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    Client,
    RegistryProcess,
    descriptor,
    image_manifest,
    sha256,
)

MISSING = "sha256:" + "0" * 64


def start(c: Client, repo: str) -> str:
    r = c.request("POST", f"/v2/{repo}/blobs/uploads/")
    assert r.status == 202
    assert r.headers["Location"]
    return c.url(r.headers["Location"])


def with_query(location: str, query: str) -> str:
    return f"{location}{'&' if '?' in location else '?'}{query}"


def test_monolithic_post_then_put(target: RegistryProcess, repo: str) -> None:
    c = target.client()
    data = b"monolithic" * 100
    location = start(c, repo)
    r = c.request("PUT", with_query(location, f"digest={sha256(data)}"), body=data,
                  headers={"Content-Type": "application/octet-stream"})
    assert r.status == 201
    assert r.headers["Location"]
    assert c.request("GET", c.url(r.headers["Location"])).body == data


def test_single_post_with_digest(target: RegistryProcess, repo: str) -> None:
    c = target.client()
    data = b"single post"
    r = c.request("POST", f"/v2/{repo}/blobs/uploads/?digest={sha256(data)}", body=data,
                  headers={"Content-Type": "application/octet-stream"})
    assert r.status in (201, 202)  # 202: the registry opened an upload instead (the spec allows it)
    if r.status == 201:
        assert c.request("GET", f"/v2/{repo}/blobs/{sha256(data)}").body == data


def test_zero_length_blob(target: RegistryProcess, repo: str) -> None:
    c = target.client()
    digest = c.push_blob(repo, b"")
    r = c.request("GET", f"/v2/{repo}/blobs/{digest}")
    assert r.status == 200 and r.body == b""


def test_chunked_upload(target: RegistryProcess, repo: str) -> None:
    c = target.client()
    data = bytes(range(256)) * 40
    chunks = [data[:3000], data[3000:7000], data[7000:]]
    location = start(c, repo)
    offset = 0
    for chunk in chunks[:2]:
        r = c.request("PATCH", location, body=chunk, headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{offset}-{offset + len(chunk) - 1}"})
        assert r.status == 202, r.body
        offset += len(chunk)
        assert r.headers["Range"] == f"0-{offset - 1}"
        location = c.url(r.headers["Location"])
    r = c.request("GET", location)
    assert r.status == 204
    assert r.headers["Range"] == f"0-{offset - 1}"
    location = c.url(r.headers["Location"])
    r = c.request("PUT", with_query(location, f"digest={sha256(data)}"), body=chunks[2], headers={
        "Content-Type": "application/octet-stream",
        "Content-Range": f"{offset}-{len(data) - 1}"})
    assert r.status == 201, r.body
    assert c.request("GET", f"/v2/{repo}/blobs/{sha256(data)}").body == data


def test_out_of_order_chunk_is_416(target: RegistryProcess, repo: str) -> None:
    lacks(target, "Content-Range checks on PATCH")
    c = target.client()
    location = start(c, repo)
    r = c.request("PATCH", location, body=b"a" * 10, headers={
        "Content-Type": "application/octet-stream", "Content-Range": "0-9"})
    assert r.status == 202
    location = c.url(r.headers["Location"])
    # a gap, then a retry of the first chunk: both out of order
    for content_range in ("20-29", "0-9"):
        r = c.request("PATCH", location, body=b"b" * 10, headers={
            "Content-Type": "application/octet-stream", "Content-Range": content_range})
        assert r.status == 416, (content_range, r.body)
    r = c.request("GET", location)
    assert r.status == 204 and r.headers["Range"] == "0-9"  # nothing of the refused chunks kept


def test_put_with_wrong_digest(target: RegistryProcess, repo: str) -> None:
    c = target.client()
    location = start(c, repo)
    r = c.request("PUT", with_query(location, f"digest={sha256(b'other')}"), body=b"content",
                  headers={"Content-Type": "application/octet-stream"})
    assert r.status == 400
    assert r.error_codes() == ["DIGEST_INVALID"]
    assert c.request("HEAD", f"/v2/{repo}/blobs/{sha256(b'content')}").status == 404
    assert c.request("HEAD", f"/v2/{repo}/blobs/{sha256(b'other')}").status == 404


def test_cancel_upload(target: RegistryProcess, repo: str) -> None:
    c = target.client()
    location = start(c, repo)
    r = c.request("PATCH", location, body=b"partial", headers={"Content-Type": "application/octet-stream"})
    assert r.status == 202
    location = c.url(r.headers["Location"])
    assert c.request("DELETE", location).status == 204
    r = c.request("GET", location)
    assert r.status == 404
    assert r.error_codes() == ["BLOB_UPLOAD_UNKNOWN"]


def test_unknown_upload(target: RegistryProcess, repo: str) -> None:
    c = target.client()
    location = start(c, repo)
    other = location.replace(repo, repo + "-elsewhere")
    assert c.request("GET", other).status == 404
    assert c.request("PATCH", other, body=b"x").status == 404


def test_cross_repository_mount(target: RegistryProcess, repo: str) -> None:
    c = target.client()
    data = b"shared layer"
    digest = c.push_blob(repo, data)
    r = c.request("POST", f"/v2/{repo}-mounted/blobs/uploads/?mount={digest}&from={repo}")
    assert r.status == 201
    assert r.headers["Location"]
    assert c.request("GET", f"/v2/{repo}-mounted/blobs/{digest}").body == data
    # a mount of something the source lacks is an ordinary upload
    r = c.request("POST", f"/v2/{repo}-mounted/blobs/uploads/?mount={MISSING}&from={repo}")
    assert r.status == 202


def test_manifest_put_by_tag_and_digest(target: RegistryProcess, repo: str) -> None:
    c = target.client()
    digest, manifest = c.push_image(repo, "latest")
    body = json.dumps(manifest).encode()
    r = c.request("PUT", f"/v2/{repo}/manifests/{digest}", body=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status == 201
    assert r.headers["Location"]
    assert r.headers["Docker-Content-Digest"] == digest


def test_manifest_missing_blob(target: RegistryProcess, repo: str) -> None:
    c = target.client()
    config = b"{}"
    c.push_blob(repo, config)
    manifest = image_manifest(config, [b"never pushed"])
    r = c.push_manifest(repo, "broken", manifest)
    assert r.status == 400
    assert "MANIFEST_BLOB_UNKNOWN" in r.error_codes()


def test_index_with_unknown_child(target: RegistryProcess, repo: str) -> None:
    c = target.client()
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX,
             "manifests": [{"mediaType": OCI_MANIFEST, "digest": MISSING, "size": 10}]}
    r = c.push_manifest(repo, "idx", index, OCI_INDEX)
    assert r.status == 400
    assert r.error_codes()[0] in ("MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID")


def test_index(target: RegistryProcess, repo: str) -> None:
    c = target.client()
    child, _ = c.push_image(repo, "amd64")
    size = len(c.request("GET", f"/v2/{repo}/manifests/{child}", headers={"Accept": OCI_MANIFEST}).body)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": child, "size": size,
         "platform": {"architecture": "amd64", "os": "linux"}}]}
    r = c.push_manifest(repo, "multi", index, OCI_INDEX)
    assert r.status == 201, r.body
    r = c.request("GET", f"/v2/{repo}/manifests/multi", headers={"Accept": OCI_INDEX})
    assert r.status == 200 and r.headers["Content-Type"] == OCI_INDEX


def test_docker_schema2_manifest(target: RegistryProcess, repo: str) -> None:
    c = target.client()
    config, layer = b'{"architecture":"amd64","os":"linux"}', b"docker layer"
    c.push_blob(repo, config)
    c.push_blob(repo, layer)
    media = "application/vnd.docker.distribution.manifest.v2+json"
    manifest = {"schemaVersion": 2, "mediaType": media,
                "config": descriptor("application/vnd.docker.container.image.v1+json", config),
                "layers": [descriptor("application/vnd.docker.image.rootfs.diff.tar.gzip", layer)]}
    r = c.push_manifest(repo, "docker", manifest, media)
    assert r.status == 201, r.body
    r = c.request("GET", f"/v2/{repo}/manifests/docker", headers={"Accept": media})
    assert r.headers["Content-Type"] == media


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"schemaVersion": 2, "mediaType": "' + OCI_MANIFEST.encode()
                                  + b'", "config": {"digest": "nope"}, "layers": []}'])
def test_invalid_manifest(target: RegistryProcess, repo: str, body: bytes) -> None:
    r = target.client().request("PUT", f"/v2/{repo}/manifests/bad", body=body,
                                headers={"Content-Type": OCI_MANIFEST})
    assert r.status == 400
    assert r.error_codes()[0] in ("MANIFEST_INVALID", "DIGEST_INVALID")


def test_manifest_digest_mismatch(target: RegistryProcess, repo: str) -> None:
    c = target.client()
    digest, manifest = c.push_image(repo, "v1")
    manifest["annotations"] = {"changed": "yes"}
    r = c.push_manifest(repo, digest, manifest)
    assert r.status == 400
    assert r.error_codes() == ["DIGEST_INVALID"]


def test_manifest_with_subject(target: RegistryProcess, repo: str) -> None:
    c = target.client()
    subject, _ = c.push_image(repo, "v1")
    empty = b"{}"
    c.push_blob(repo, empty)
    signature = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/x-signature",
                 "config": descriptor(OCI_EMPTY, empty), "layers": [descriptor(OCI_EMPTY, empty)],
                 "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 10}}
    digest = sha256(json.dumps(signature).encode())
    r = c.push_manifest(repo, digest, signature)
    assert r.status == 201, r.body
    if target.kind == "gifee":  # Distribution 2.8 predates OCI-Subject
        assert r.headers["OCI-Subject"] == subject


def test_subject_may_be_pushed_first(target: RegistryProcess, repo: str) -> None:
    c = target.client()
    empty = b"{}"
    c.push_blob(repo, empty)
    referrer = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/x-sbom",
                "config": descriptor(OCI_EMPTY, empty), "layers": [descriptor(OCI_EMPTY, empty)],
                "subject": {"mediaType": OCI_MANIFEST, "digest": MISSING, "size": 10}}
    assert c.push_manifest(repo, sha256(json.dumps(referrer).encode()), referrer).status == 201
