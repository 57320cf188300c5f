"""Conformance, pull workflow (ported from the distribution spec's conformance checks):
blobs and manifests by tag and digest, HEAD and GET, unknown content, ranges."""

from __future__ import annotations

import json

from tests.registry.conftest import lacks
from tests.registry.harness import OCI_MANIFEST, RegistryProcess, sha256

SPEC_CODES = {"BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID",
              "MANIFEST_BLOB_UNKNOWN", "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "NAME_INVALID",
              "NAME_UNKNOWN", "SIZE_INVALID", "UNAUTHORIZED", "DENIED", "UNSUPPORTED", "TOOMANYREQUESTS"}
MISSING = "sha256:" + "0" * 64


def test_version_check(target: RegistryProcess) -> None:
    r = target.client().request("GET", "/v2/")
    assert r.status == 200


def test_blob_head_and_get(target: RegistryProcess, repo: str) -> None:
    c = target.client()
    data = b"some layer bytes" * 1000
    digest = c.push_blob(repo, data)
    r = c.request("HEAD", f"/v2/{repo}/blobs/{digest}")
    assert r.status == 200
    assert r.headers["Content-Length"] == str(len(data))
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.body == b""
    r = c.request("GET", f"/v2/{repo}/blobs/{digest}")
    assert r.status == 200
    assert r.body == data


def test_unknown_blob(target: RegistryProcess, repo: str) -> None:
    c = target.client()
    c.push_blob(repo, b"x")
    assert c.request("HEAD", f"/v2/{repo}/blobs/{MISSING}").status == 404
    r = c.request("GET", f"/v2/{repo}/blobs/{MISSING}")
    assert r.status == 404
    assert r.error_codes() == ["BLOB_UNKNOWN"]


def test_blob_of_another_repository_is_unknown(target: RegistryProcess, repo: str) -> None:
    c = target.client()
    digest = c.push_blob(repo, b"private to one repository")
    assert c.request("GET", f"/v2/{repo}-other/blobs/{digest}").status == 404


def test_blob_range(target: RegistryProcess, repo: str) -> None:
    c = target.client()
    data = bytes(range(256)) * 10
    digest = c.push_blob(repo, data)
    r = c.request("GET", f"/v2/{repo}/blobs/{digest}", headers={"Range": "bytes=10-19"})
    assert r.status == 206
    assert r.body == data[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    r = c.request("GET", f"/v2/{repo}/blobs/{digest}", headers={"Range": "bytes=-5"})
    assert r.status == 206 and r.body == data[-5:]
    r = c.request("GET", f"/v2/{repo}/blobs/{digest}", headers={"Range": "bytes=2550-"})
    assert r.status == 206 and r.body == data[2550:]
    # Distribution 2.8 announces the whole blob's length on a 416, then sends Go's short
    # error text: the connection breaks. Not a behaviour to hold the reference to.
    lacks(target, "a well-formed 416 on unsatisfiable ranges")
    r = c.request("GET", f"/v2/{repo}/blobs/{digest}", headers={"Range": f"bytes={len(data) + 10}-"})
    assert r.status == 416


def test_manifest_by_tag_and_digest(target: RegistryProcess, repo: str) -> None:
    c = target.client()
    digest, manifest = c.push_image(repo, "v1")
    body = json.dumps(manifest).encode()
    for ref in ("v1", digest):
        r = c.request("HEAD", f"/v2/{repo}/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
        assert r.status == 200
        assert r.headers["Docker-Content-Digest"] == digest
        assert r.headers["Content-Length"] == str(len(body))
        r = c.request("GET", f"/v2/{repo}/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
        assert r.status == 200
        assert r.body == body
        assert sha256(r.body) == digest
        assert r.headers["Content-Type"] == OCI_MANIFEST


def test_unknown_manifest(target: RegistryProcess, repo: str) -> None:
    c = target.client()
    c.push_image(repo, "v1")
    for ref in ("nope", MISSING):
        assert c.request("HEAD", f"/v2/{repo}/manifests/{ref}", headers={"Accept": OCI_MANIFEST}).status == 404
        r = c.request("GET", f"/v2/{repo}/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
        assert r.status == 404
        assert r.error_codes() == ["MANIFEST_UNKNOWN"]
        assert set(r.error_codes()) <= SPEC_CODES


def test_error_body_format(target: RegistryProcess, repo: str) -> None:
    r = target.client().request("GET", f"/v2/{repo}/manifests/{MISSING}", headers={"Accept": OCI_MANIFEST})
    errors = r.json()["errors"]
    assert errors and all(isinstance(e["code"], str) and isinstance(e["message"], str) for e in errors)


def test_invalid_names(target: RegistryProcess) -> None:
    c = target.client()
    for path in ("/v2/UPPER/manifests/latest", "/v2/a..b/manifests/latest", "/v2/-a/tags/list",
                 "/v2/a//b/manifests/latest", "/v2/a_/blobs/" + MISSING):
        r = c.request("GET", path)
        if target.kind == "distribution" and r.status == 301:  # Go's mux cleans `//` by redirecting
            continue
        assert r.status in (400, 404), path
        if r.status == 400:
            assert r.error_codes() == ["NAME_INVALID"], path
