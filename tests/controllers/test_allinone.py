"""The issue's example through the all-in-one loops: an RC selecting env=prod,app=web with
count=5, scheduled onto hollow nodes, found by a service."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from gifee.api.kubeconfig import write_kubeconfig
from tests.api.harness import KUBECTL_132, Cluster, Proc, start_apiserver, start_store

from .test_e2e import _running, get, wait

pytestmark = pytest.mark.slow

MANIFEST = """
apiVersion: v1
kind: ReplicationController
metadata: {name: web}
spec:
  replicas: 5
  selector: {env: prod, app: web}
  template:
    metadata: {labels: {env: prod, app: web}}
    spec: {containers: [{name: web, image: "nginx:1.10", ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {env: prod, app: web}
  ports: [{port: 80}]
"""


def test_rc_of_five_found_by_service() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="gifee-aio-"))
    procs: dict[str, Proc] = {}
    store, endpoint = start_store("gifee", workdir / "store")
    try:
        api, url = start_apiserver(endpoint, workdir / "api")
        procs["apiserver"] = api
        code = ("import asyncio; from gifee.controllers.allinone import run_control_plane; "
                f"asyncio.run(run_control_plane({url!r}, hollow_nodes=2))")
        procs["aio"] = Proc([sys.executable, "-c", code], workdir / "aio", "aio")
        procs["aio"].start()
        kc = workdir / "kubeconfig"
        write_kubeconfig(str(kc), url)
        c = Cluster("gifee", endpoint, url, kc, workdir)
        wait("2 nodes", lambda: len(get(c, "/api/v1/nodes")["items"]) == 2, procs=procs)
        c.kubectl(KUBECTL_132, "apply", "-f", "-", input=MANIFEST)
        wait("5 running", lambda: _running(c, "env=prod,app=web", 5), procs=procs)
        ep = wait("5 endpoints", lambda: (e := get(c, "/api/v1/namespaces/default/endpoints/web"))
                  and len((e.get("subsets") or [{}])[0].get("addresses", [])) == 5 and e, procs=procs)
        assert {a["nodeName"] for a in ep["subsets"][0]["addresses"]} == {"hollow-node-0", "hollow-node-1"}
        rc = get(c, "/api/v1/namespaces/default/replicationcontrollers/web")
        assert rc["status"]["replicas"] == 5 and rc["status"]["readyReplicas"] == 5
    finally:
        for p in procs.values():
            p.stop()
        store.stop()
        shutil.rmtree(workdir, ignore_errors=True)
