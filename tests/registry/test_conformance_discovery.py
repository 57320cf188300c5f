"""Conformance, content discovery: tag listing with `n`/`last` pagination and Link
headers, and the referrers API with `artifactType` filters."""

from __future__ import annotations

import json
import re
import urllib.parse
from typing import Any

from tests.registry.conftest import lacks
from tests.registry.harness import (
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    Client,
    RegistryProcess,
    descriptor,
    sha256,
)

TAGS = ["a", "b", "c", "d", "e", "latest", "v1.0", "v2.0"]


def push_tags(c: Client, repo: str) -> None:
    c.push_image(repo, TAGS[0])
    manifest = c.request("GET", f"/v2/{repo}/manifests/{TAGS[0]}", headers={"Accept": OCI_MANIFEST}).body
    for tag in TAGS[1:]:
        r = c.request("PUT", f"/v2/{repo}/manifests/{tag}", body=manifest, headers={"Content-Type": OCI_MANIFEST})
        assert r.status == 201


def test_tag_list(target: RegistryProcess, repo: str) -> None:
    c = target.client()
    push_tags(c, repo)
    r = c.request("GET", f"/v2/{repo}/tags/list")
    assert r.status == 200
    assert r.json()["name"] == repo
    assert sorted(r.json()["tags"]) == sorted(TAGS)
    lacks(target, "lexically ordered tag lists")
    assert r.json()["tags"] == sorted(TAGS)


def test_tag_list_unknown_repository(target: RegistryProcess, repo: str) -> None:
    r = target.client().request("GET", f"/v2/{repo}/tags/list")
    assert r.status == 404
    assert r.error_codes() == ["NAME_UNKNOWN"]


def test_tag_list_n(target: RegistryProcess, repo: str) -> None:
    lacks(target, "tag list pagination")
    c = target.client()
    push_tags(c, repo)
    r = c.request("GET", f"/v2/{repo}/tags/list?n=3")
    assert r.status == 200
    assert r.json()["tags"] == sorted(TAGS)[:3]
    link = r.headers["Link"]
    assert link and 'rel="next"' in link


def test_tag_list_last(target: RegistryProcess, repo: str) -> None:
    lacks(target, "tag list pagination")
    c = target.client()
    push_tags(c, repo)
    r = c.request("GET", f"/v2/{repo}/tags/list?n=2&last=b")
    assert r.json()["tags"] == ["c", "d"]
    r = c.request("GET", f"/v2/{repo}/tags/list?last=latest")
    assert r.json()["tags"] == ["v1.0", "v2.0"]


def test_tag_list_follow_links(target: RegistryProcess, repo: str) -> None:
    lacks(target, "tag list pagination")
    c = target.client()
    push_tags(c, repo)
    seen: list[str] = []
    path: str | None = f"/v2/{repo}/tags/list?n=3"
    for _ in range(10):
        assert path is not None
        r = c.request("GET", path)
        assert r.status == 200
        seen += r.json()["tags"] or []
        link = r.headers.get("Link")
        if not link:
            break
        m = re.match(r"<([^>]+)>", link)
        assert m is not None
        parsed = urllib.parse.urlsplit(m.group(1))
        path = f"{parsed.path}?{parsed.query}"
    assert seen == sorted(TAGS)


def artifact(subject: str, subject_size: int, artifact_type: str, note: str) -> dict[str, Any]:
    empty = b"{}"
    return {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
            "config": descriptor(OCI_EMPTY, empty), "layers": [descriptor(OCI_EMPTY, empty)],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_size},
            "annotations": {"note": note}}


def test_referrers(target: RegistryProcess, repo: str) -> None:
    lacks(target, "the referrers API")
    c = target.client()
    subject, manifest = c.push_image(repo, "v1")
    size = len(json.dumps(manifest).encode())
    c.push_blob(repo, b"{}")
    pushed = {}
    for artifact_type, note in [("application/x-signature", "one"), ("application/x-sbom", "two"),
                                ("application/x-signature", "three")]:
        doc = artifact(subject, size, artifact_type, note)
        digest = sha256(json.dumps(doc).encode())
        r = c.push_manifest(repo, digest, doc)
        assert r.status == 201 and r.headers["OCI-Subject"] == subject
        pushed[digest] = (artifact_type, note, len(json.dumps(doc).encode()))
    r = c.request("GET", f"/v2/{repo}/referrers/{subject}")
    assert r.status == 200
    assert r.headers["Content-Type"].split(";")[0] == OCI_INDEX
    index = r.json()
    assert index["schemaVersion"] == 2 and index["mediaType"] == OCI_INDEX
    got = {d["digest"]: (d["artifactType"], d["annotations"]["note"], d["size"]) for d in index["manifests"]}
    assert got == pushed
    assert all(d["mediaType"] == OCI_MANIFEST for d in index["manifests"])

    r = c.request("GET", f"/v2/{repo}/referrers/{subject}?artifactType=application/x-signature")
    assert r.status == 200
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert sorted(d["annotations"]["note"] for d in r.json()["manifests"]) == ["one", "three"]

    # deleting a referrer removes it from the list
    gone = next(iter(pushed))
    assert c.request("DELETE", f"/v2/{repo}/manifests/{gone}").status == 202
    r = c.request("GET", f"/v2/{repo}/referrers/{subject}")
    assert gone not in {d["digest"] for d in r.json()["manifests"]}


def test_referrers_of_unknown_subject(target: RegistryProcess, repo: str) -> None:
    lacks(target, "the referrers API")
    c = target.client()
    c.push_image(repo, "v1")
    r = c.request("GET", f"/v2/{repo}/referrers/sha256:{'1' * 64}")
    assert r.status == 200
    assert r.headers["Content-Type"].split(";")[0] == OCI_INDEX
    assert r.json()["manifests"] == []


def test_referrers_artifact_type_from_config(target: RegistryProcess, repo: str) -> None:
    lacks(target, "the referrers API")
    c = target.client()
    subject, manifest = c.push_image(repo, "v1")
    config = b'{"kind": "attestation"}'
    c.push_blob(repo, config)
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": descriptor("application/x-attestation-config", config), "layers": [],
           "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": len(json.dumps(manifest))}}
    assert c.push_manifest(repo, "att", doc).status == 201
    r = c.request("GET", f"/v2/{repo}/referrers/{subject}")
    assert [d["artifactType"] for d in r.json()["manifests"]] == ["application/x-attestation-config"]
