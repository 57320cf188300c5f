"""Fixtures: a store (gifee's, and Debian's etcd: the main tests run on both) and an API server."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gifee.api.kubeconfig import write_kubeconfig
from tests.api.harness import Cluster, start_apiserver, start_store


@pytest.fixture(scope="module", params=["gifee", "etcd"])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    workdir = Path(tempfile.mkdtemp(prefix="gifee-api-"))
    store, endpoint = start_store(request.param, workdir / "store")
    api = None
    try:
        api, url = start_apiserver(endpoint, workdir / "api")
        kc = workdir / "kubeconfig"
        write_kubeconfig(str(kc), url)
        yield Cluster(request.param, endpoint, url, kc, workdir)
    finally:
        if api is not None:
            api.stop()
        store.stop()
        shutil.rmtree(workdir, ignore_errors=True)
