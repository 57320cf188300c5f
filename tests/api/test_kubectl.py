"""kubectl 1.32 and 1.20 against the API server, on gifee's store and on etcd."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.api.harness import KUBECTL_120, KUBECTL_132, Cluster

MANIFESTS = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {app: web}
spec:
  selector: {app: web}
  ports:
  - port: 80
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
  labels: {tier: conf}
data:
  a: "1"
"""

KUBECTLS = [pytest.param(KUBECTL_132, id="kubectl-1.32"), pytest.param(KUBECTL_120, id="kubectl-1.20")]


def _ns() -> str:
    return "t-" + uuid.uuid4().hex[:8]


def _namespace(cluster: Cluster, kubectl: str) -> str:
    ns = _ns()
    # `kubectl create namespace` of 1.32 sends protobuf; apply sends JSON (see docs/API.md)
    cluster.kubectl(kubectl, "apply", "-f", "-", input=f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n")
    return ns


@pytest.mark.parametrize("kubectl", KUBECTLS)
def test_apply_get_label_scale_delete(cluster: Cluster, kubectl: str) -> None:
    ns = _namespace(cluster, kubectl)
    out = cluster.kubectl(kubectl, "-n", ns, "apply", "-f", "-", input=MANIFESTS).stdout
    assert "deployment.apps/web created" in out and "service/web created" in out and "configmap/cfg created" in out
    out = cluster.kubectl(kubectl, "-n", ns, "apply", "-f", "-", input=MANIFESTS).stdout
    assert "deployment.apps/web unchanged" in out, out

    table = cluster.kubectl(kubectl, "-n", ns, "get", "deploy", "-o", "wide").stdout.splitlines()
    assert table[0].split()[:5] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert "SELECTOR" in table[0] and table[1].split()[0] == "web" and "nginx:1.25" in table[1]
    svc = cluster.kubectl(kubectl, "-n", ns, "get", "svc").stdout.splitlines()
    assert svc[0].split()[:3] == ["NAME", "TYPE", "CLUSTER-IP"] and "80/TCP" in svc[1]

    dep = json.loads(cluster.kubectl(kubectl, "-n", ns, "get", "deployment", "web", "-o", "json").stdout)
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate" and dep["metadata"]["generation"] == 1
    assert dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    doc = yaml.safe_load(cluster.kubectl(kubectl, "-n", ns, "get", "cm", "cfg", "-o", "yaml").stdout)
    assert doc["data"] == {"a": "1"}

    # apply a change: the strategic merge patch keeps the container list keyed by name
    changed = MANIFESTS.replace("nginx:1.25", "nginx:1.26")
    assert "configured" in cluster.kubectl(kubectl, "-n", ns, "apply", "-f", "-", input=changed).stdout
    dep = json.loads(cluster.kubectl(kubectl, "-n", ns, "get", "deployment", "web", "-o", "json").stdout)
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.26"
    assert dep["metadata"]["generation"] == 2

    cluster.kubectl(kubectl, "-n", ns, "label", "cm", "cfg", "color=blue")
    cluster.kubectl(kubectl, "-n", ns, "annotate", "deploy", "web", "note=hello")
    names = cluster.kubectl(kubectl, "-n", ns, "get", "cm,svc,deploy", "-l", "color=blue", "-o", "name").stdout
    assert names.split() == ["configmap/cfg"]
    names = cluster.kubectl(kubectl, "-n", ns, "get", "all", "-l", "app=web", "-o", "name").stdout.split()
    assert set(names) == {"service/web", "deployment.apps/web"}
    assert cluster.kubectl(kubectl, "-n", ns, "get", "cm", "-l", "color notin (blue)", "-o", "name").stdout == ""

    cluster.kubectl(kubectl, "-n", ns, "scale", "deployment", "web", "--replicas=5")
    dep = json.loads(cluster.kubectl(kubectl, "-n", ns, "get", "deployment", "web", "-o", "json").stdout)
    assert dep["spec"]["replicas"] == 5 and dep["metadata"]["generation"] == 3
    assert dep["metadata"]["annotations"]["note"] == "hello"

    cluster.kubectl(kubectl, "-n", ns, "patch", "svc", "web", "--type=merge", "-p", '{"metadata":{"labels":{"p":"1"}}}')
    cluster.kubectl(kubectl, "-n", ns, "patch", "cm", "cfg", "--type=json",
                    "-p", '[{"op":"add","path":"/data/b","value":"2"}]')
    cm = json.loads(cluster.kubectl(kubectl, "-n", ns, "get", "cm", "cfg", "-o", "json").stdout)
    assert cm["data"] == {"a": "1", "b": "2"}

    out = cluster.kubectl(kubectl, "-n", ns, "delete", "-f", "-", input=MANIFESTS).stdout
    assert 'deployment.apps "web" deleted' in out
    gone = cluster.kubectl(kubectl, "-n", ns, "get", "deploy", "web", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr


@pytest.mark.parametrize("kubectl", KUBECTLS)
def test_edit_with_editor_script(cluster: Cluster, kubectl: str, tmp_path: Path) -> None:
    ns = _namespace(cluster, kubectl)
    cluster.kubectl(kubectl, "-n", ns, "apply", "-f", "-", input=MANIFESTS)
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's/a: \"1\"/a: \"edited\"/' \"$1\"\n")
    editor.chmod(editor.stat().st_mode | stat.S_IEXEC)
    cluster.kubectl(kubectl, "-n", ns, "edit", "cm", "cfg", env={"KUBE_EDITOR": str(editor), "EDITOR": str(editor)})
    cm = json.loads(cluster.kubectl(kubectl, "-n", ns, "get", "cm", "cfg", "-o", "json").stdout)
    assert cm["data"]["a"] == "edited"


@pytest.mark.parametrize("kubectl", KUBECTLS)
def test_errors_reach_kubectl(cluster: Cluster, kubectl: str) -> None:
    ns = _namespace(cluster, kubectl)
    bad = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers: []\n"
    p = cluster.kubectl(kubectl, "-n", ns, "create", "-f", "-", input=bad, check=False)
    assert p.returncode != 0 and "is invalid" in p.stderr and "spec.containers" in p.stderr
    p = cluster.kubectl(kubectl, "-n", "no-such-ns", "apply", "-f", "-", input=MANIFESTS, check=False)
    assert p.returncode != 0 and 'namespaces "no-such-ns" not found' in p.stderr
    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: twice\n"
    cluster.kubectl(kubectl, "-n", ns, "create", "-f", "-", input=cm)
    p = cluster.kubectl(kubectl, "-n", ns, "create", "-f", "-", input=cm, check=False)
    assert p.returncode != 0 and "AlreadyExists" in p.stderr


@pytest.mark.parametrize("kubectl", KUBECTLS)
def test_get_watch_sees_changes(cluster: Cluster, kubectl: str) -> None:
    ns = _namespace(cluster, kubectl)
    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: w1\n"
    cluster.kubectl(kubectl, "-n", ns, "create", "-f", "-", input=cm)
    watcher = subprocess.Popen([kubectl, "--kubeconfig", str(cluster.kubeconfig), "-n", ns, "get", "cm", "--watch",
                                "--request-timeout=8s"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        cluster.kubectl(kubectl, "-n", ns, "create", "-f", "-", input=cm.replace("w1", "w2"))
        cluster.kubectl(kubectl, "-n", ns, "delete", "cm", "w1")
        time.sleep(1.5)
    finally:
        watcher.terminate()
        out, err = watcher.communicate(timeout=10)
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "DATA", "AGE"], (out, err)
    assert any(line.startswith("w1 ") for line in lines[1:]) and any(line.startswith("w2 ") for line in lines)


@pytest.mark.parametrize("kubectl", KUBECTLS)
def test_discovery_and_namespaces(cluster: Cluster, kubectl: str) -> None:
    out = cluster.kubectl(kubectl, "api-resources").stdout
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "po" in rows["pods"].split() and "deploy" in rows["deployments"].split()
    assert {"leases", "poddisruptionbudgets", "replicationcontrollers", "events", "endpoints"} <= set(rows)
    ns = cluster.kubectl(kubectl, "get", "ns", "-o", "name").stdout.split()
    assert {"namespace/default", "namespace/kube-system", "namespace/kube-public"} <= set(ns)
    assert "gifee" in cluster.kubectl(kubectl, "version", "-o", "json", check=False).stdout
    mine = _namespace(cluster, kubectl)
    cluster.kubectl(kubectl, "-n", mine, "apply", "-f", "-", input=MANIFESTS)
    cluster.kubectl(kubectl, "delete", "namespace", mine, timeout=60)
    p = cluster.kubectl(kubectl, "get", "namespace", mine, check=False)
    assert p.returncode != 0 and "NotFound" in p.stderr


def test_cluster_has_no_stray_env() -> None:
    assert os.access(KUBECTL_132, os.X_OK) and os.access(KUBECTL_120, os.X_OK)
