"""Conformance, content management: deleting tags, manifests and blobs."""

from __future__ import annotations

from tests.registry.harness import OCI_MANIFEST, RegistryProcess


def test_delete_tag(target: RegistryProcess, repo: str) -> None:
    c = target.client()
    digest, _ = c.push_image(repo, "keep")
    body = c.request("GET", f"/v2/{repo}/manifests/keep", headers={"Accept": OCI_MANIFEST}).body
    assert c.request("PUT", f"/v2/{repo}/manifests/drop", body=body,
                     headers={"Content-Type": OCI_MANIFEST}).status == 201
    r = c.request("DELETE", f"/v2/{repo}/manifests/drop")
    if target.kind == "distribution":  # 2.8 refuses tag deletes; the spec allows 400/405
        assert r.status in (400, 405)
        return
    assert r.status == 202
    assert c.request("GET", f"/v2/{repo}/manifests/drop", headers={"Accept": OCI_MANIFEST}).status == 404
    assert c.request("GET", f"/v2/{repo}/manifests/keep", headers={"Accept": OCI_MANIFEST}).status == 200
    assert c.request("GET", f"/v2/{repo}/manifests/{digest}", headers={"Accept": OCI_MANIFEST}).status == 200
    assert c.request("GET", f"/v2/{repo}/tags/list").json()["tags"] == ["keep"]


def test_delete_manifest(target: RegistryProcess, repo: str) -> None:
    c = target.client()
    digest, _ = c.push_image(repo, "v1")
    r = c.request("DELETE", f"/v2/{repo}/manifests/{digest}")
    assert r.status == 202
    for ref in (digest, "v1"):
        r = c.request("GET", f"/v2/{repo}/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
        assert r.status == 404
    assert c.request("DELETE", f"/v2/{repo}/manifests/{digest}").status == 404
    tags = c.request("GET", f"/v2/{repo}/tags/list")
    assert tags.status in (200, 404)
    if tags.status == 200:
        assert not tags.json()["tags"]


def test_delete_blob(target: RegistryProcess, repo: str) -> None:
    c = target.client()
    digest = c.push_blob(repo, b"to be deleted")
    r = c.request("DELETE", f"/v2/{repo}/blobs/{digest}")
    assert r.status == 202
    r = c.request("GET", f"/v2/{repo}/blobs/{digest}")
    assert r.status == 404
    r = c.request("DELETE", f"/v2/{repo}/blobs/{digest}")
    assert r.status == 404
    assert r.error_codes() == ["BLOB_UNKNOWN"]


def test_deleted_blob_can_be_pushed_again(target: RegistryProcess, repo: str) -> None:
    c = target.client()
    digest = c.push_blob(repo, b"again")
    assert c.request("DELETE", f"/v2/{repo}/blobs/{digest}").status == 202
    c.push_blob(repo, b"again")
    assert c.request("GET", f"/v2/{repo}/blobs/{digest}").body == b"again"
