"""Garbage collection (`gifee registry gc`): unreferenced blobs older than the grace
period go, everything a manifest names stays, and images stay pullable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.registry.harness import OCI_INDEX, OCI_MANIFEST, RegistryProcess, sha256


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RegistryProcess]:
    s = RegistryProcess("gifee", workdir=tmp_path / "registry")
    try:
        s.start()
        yield s
    finally:
        s.stop()


def gc(server: RegistryProcess, *args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "gifee", "--dir", str(server.dir), "registry", "gc",
                        "--root", str(server.root), *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def age_all_blobs(root: Path, seconds: float) -> None:
    past = time.time() - seconds
    for p in (root / "blobs").rglob("*"):
        if p.is_file():
            os.utime(p, (past, past))


def on_disk(root: Path, digest: str) -> bool:
    hexpart = digest.split(":")[1]
    return (root / "blobs" / "sha256" / hexpart[:2] / hexpart).exists()


def test_gc(server: RegistryProcess) -> None:
    c = server.client()
    kept, kept_manifest = c.push_image("gc/app", "v1", layer=b"layer of v1")
    dropped, dropped_manifest = c.push_image("gc/app", "v2", layer=b"layer of v2")
    in_index, _ = c.push_image("gc/multi", "child", layer=b"layer of the child")
    size = len(c.request("GET", f"/v2/gc/multi/manifests/{in_index}", headers={"Accept": OCI_MANIFEST}).body)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX,
             "manifests": [{"mediaType": OCI_MANIFEST, "digest": in_index, "size": size}]}
    assert c.push_manifest("gc/multi", "multi", index, OCI_INDEX).status == 201
    assert c.request("DELETE", "/v2/gc/multi/manifests/child").status == 202  # only the tag goes
    loose = c.push_blob("gc/app", b"pushed, never referenced")
    assert c.request("DELETE", f"/v2/gc/app/manifests/{dropped}").status == 202

    out = gc(server)  # everything is young: nothing goes
    assert "deleted 0" in out
    age_all_blobs(server.root, 7200)
    out = gc(server, "--dry-run")
    assert on_disk(server.root, loose)
    age_all_blobs(server.root, 7200)
    out = gc(server)
    gone = {line.split()[1] for line in out.splitlines() if line.startswith("deleted sha256:")}
    assert gone == {dropped, sha256(b"layer of v2"), loose}
    for digest in gone:
        assert not on_disk(server.root, digest)
    # what survives is whole and still served
    assert c.request("GET", "/v2/gc/app/manifests/v1", headers={"Accept": OCI_MANIFEST}).body == \
        json.dumps(kept_manifest).encode()
    for layer in kept_manifest["layers"]:
        assert c.request("GET", f"/v2/gc/app/blobs/{layer['digest']}").status == 200
    assert c.request("GET", f"/v2/gc/multi/manifests/{in_index}", headers={"Accept": OCI_MANIFEST}).status == 200
    assert c.request("GET", f"/v2/gc/multi/blobs/{sha256(b'layer of the child')}").status == 200
    # a swept blob is unknown, and can be pushed again
    assert c.request("GET", f"/v2/gc/app/blobs/{loose}").status == 404
    c.push_blob("gc/app", b"pushed, never referenced")
    assert c.request("GET", f"/v2/gc/app/blobs/{loose}").status == 200
    assert dropped_manifest["layers"]


def test_repush_refreshes_grace(server: RegistryProcess) -> None:
    c = server.client()
    digest = c.push_blob("gc/young", b"old but pushed again")
    age_all_blobs(server.root, 7200)
    c.push_blob("gc/young", b"old but pushed again")  # a new push of an existing blob
    gc(server)
    assert on_disk(server.root, digest)
