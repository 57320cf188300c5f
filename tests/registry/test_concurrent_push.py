"""Concurrent pushes of the same blob, to one repository and to several, on gifee's
registry and on the reference: every push succeeds, the blob is whole, and nothing
partial is left in gifee's storage."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os

from tests.registry.harness import RegistryProcess


def test_concurrent_pushes_of_one_blob(target: RegistryProcess, repo: str) -> None:
    data = os.urandom(3 * 2**20)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    repos = [repo] * 6 + [f"{repo}-{i}" for i in range(6)]

    def push(name: str) -> str:
        return target.client().push_blob(name, data)

    with concurrent.futures.ThreadPoolExecutor(len(repos)) as pool:
        results = list(pool.map(push, repos))
    assert results == [digest] * len(repos)
    for name in set(repos):
        r = target.client().request("GET", f"/v2/{name}/blobs/{digest}")
        assert r.status == 200 and hashlib.sha256(r.body).hexdigest() == digest[7:]
    if target.kind == "gifee":
        # no temporary file and no upload left behind: every upload was committed or removed
        leftovers = [p for p in target.root.rglob("*")
                     if p.is_file() and (p.name.startswith(".tmp-") or "_uploads" in p.parts)]
        assert not leftovers, leftovers
