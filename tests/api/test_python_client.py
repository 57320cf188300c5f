"""The official Python client (kubernetes) against the API server: CRUD, paging, watch, 410, 409."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from gifee.store.proto import rpc_pb2
from tests.api.harness import Cluster, start_apiserver


@pytest.fixture
def api(cluster: Cluster) -> Iterator[client.ApiClient]:
    with client.ApiClient(config.new_client_from_config(str(cluster.kubeconfig)).configuration) as c:
        yield c


@pytest.fixture
def ns(api: client.ApiClient) -> str:
    name = "py-" + uuid.uuid4().hex[:8]
    client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def _cm(name: str, **labels: str) -> client.V1ConfigMap:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels=labels or None), data={"k": name})


def test_crud_and_conflict(api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    created = core.create_namespaced_config_map(ns, _cm("one", app="x"))
    assert created.metadata.uid and int(created.metadata.resource_version) > 0
    got = core.read_namespaced_config_map("one", ns)
    assert got.data == {"k": "one"} and got.metadata.resource_version == created.metadata.resource_version
    got.data["k"] = "two"
    updated = core.replace_namespaced_config_map("one", ns, got)
    assert int(updated.metadata.resource_version) > int(got.metadata.resource_version)
    got.data["k"] = "stale"
    with pytest.raises(ApiException) as e:
        core.replace_namespaced_config_map("one", ns, got)  # the old resourceVersion
    assert e.value.status == 409 and '"reason":"Conflict"' in e.value.body
    with pytest.raises(ApiException) as e:
        core.create_namespaced_config_map(ns, _cm("one"))
    assert e.value.status == 409 and "AlreadyExists" in e.value.body
    patched = core.patch_namespaced_config_map("one", ns, {"metadata": {"labels": {"extra": "y"}}})
    assert patched.metadata.labels == {"app": "x", "extra": "y"}
    core.delete_namespaced_config_map("one", ns)
    with pytest.raises(ApiException) as e:
        core.read_namespaced_config_map("one", ns)
    assert e.value.status == 404


def test_deployment_scale_status_generation(api: client.ApiClient, ns: str) -> None:
    apps = client.AppsV1Api(api)
    dep = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="d"),
        spec=client.V1DeploymentSpec(
            selector=client.V1LabelSelector(match_labels={"app": "d"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "d"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]))))
    created = apps.create_namespaced_deployment(ns, dep)
    assert created.metadata.generation == 1 and created.spec.replicas == 1
    scale = apps.read_namespaced_deployment_scale("d", ns)
    assert scale.spec.replicas == 1 and scale.status.selector == "app=d"
    apps.patch_namespaced_deployment_scale("d", ns, {"spec": {"replicas": 4}})
    status = apps.patch_namespaced_deployment_status("d", ns, {"status": {"observedGeneration": 2, "replicas": 4}})
    assert status.status.replicas == 4 and status.metadata.generation == 2 and status.spec.replicas == 4
    # status written through the main resource is ignored; generation does not move on status changes
    again = apps.patch_namespaced_deployment("d", ns, {"status": {"replicas": 99}})
    assert again.status.replicas == 4 and again.metadata.generation == 2
    with pytest.raises(ApiException) as e:
        apps.patch_namespaced_deployment("d", ns, {"spec": {"selector": {"matchLabels": {"app": "other"}}}})
    assert e.value.status == 422


def test_list_paging(api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    for i in range(7):
        core.create_namespaced_config_map(ns, _cm(f"c{i}", parity=str(i % 2)))
    names, token, pages = [], None, 0
    while True:
        page = core.list_namespaced_config_map(ns, limit=3, _continue=token)
        pages += 1
        names += [c.metadata.name for c in page.items]
        token = page.metadata._continue
        if not token:
            break
        assert page.metadata.remaining_item_count == 7 - len(names)
    assert names == [f"c{i}" for i in range(7)] and pages == 3
    # a page is read at the first page's revision: later writes do not show
    first = core.list_namespaced_config_map(ns, limit=2)
    core.create_namespaced_config_map(ns, _cm("c9"))
    rest = core.list_namespaced_config_map(ns, limit=100, _continue=first.metadata._continue)
    assert [c.metadata.name for c in rest.items] == [f"c{i}" for i in range(2, 7)]
    odd = core.list_namespaced_config_map(ns, label_selector="parity=1", limit=2)
    assert [c.metadata.name for c in odd.items] == ["c1", "c3"] and odd.metadata._continue
    by_name = core.list_namespaced_config_map(ns, field_selector="metadata.name=c4")
    assert [c.metadata.name for c in by_name.items] == ["c4"]
    with pytest.raises(ApiException) as e:
        core.list_namespaced_config_map(ns, field_selector="data.k=c4")
    assert e.value.status == 400


def test_watch_from_resource_version(api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(ns, _cm("before"))
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    seen: list[tuple[str, str]] = []

    def writer() -> None:
        time.sleep(0.5)
        core.create_namespaced_config_map(ns, _cm("a", sel="yes"))
        core.patch_namespaced_config_map("a", ns, {"data": {"k": "changed"}})
        core.create_namespaced_config_map(ns, _cm("b"))
        core.delete_namespaced_config_map("a", ns)

    t = threading.Thread(target=writer)
    t.start()
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=5):
        seen.append((ev["type"], ev["object"].metadata.name))
        if len(seen) == 4:
            w.stop()
    t.join()
    assert seen == [("ADDED", "a"), ("MODIFIED", "a"), ("ADDED", "b"), ("DELETED", "a")]
    # the same history again, through a label selector, from the same revision (served by the cache)
    seen = []
    for ev in w.stream(core.list_namespaced_config_map, ns, resource_version=rv, label_selector="sel=yes",
                       timeout_seconds=2):
        seen.append((ev["type"], ev["object"].metadata.name))
    assert seen == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]


async def _compact(endpoint: str) -> int:
    from gifee.store.client import StoreClient

    async with StoreClient(endpoint) as sc:
        rev = (await sc.status()).header.revision
        await sc.compact(rpc_pb2.CompactionRequest(revision=rev, physical=True))
        return int(rev)


def test_watch_too_old_is_410(cluster: Cluster, tmp_path: Path) -> None:
    import asyncio

    # a second API server on the same store, whose watch window keeps 2 events per resource
    proc, url = start_apiserver(cluster.endpoint, tmp_path / "small", "--watch-cache-size", "2")
    try:
        cfg = client.Configuration(host=url)
        with client.ApiClient(cfg) as small:
            core = client.CoreV1Api(small)
            ns = "old-" + uuid.uuid4().hex[:6]
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
            first = core.create_namespaced_config_map(ns, _cm("old")).metadata.resource_version
            for i in range(4):
                core.create_namespaced_config_map(ns, _cm(f"n{i}"))
            # older than the window: served by the store itself
            events = list(watch.Watch().stream(core.list_namespaced_config_map, ns, resource_version=first,
                                               timeout_seconds=1))
            assert [ev["object"].metadata.name for ev in events] == ["n0", "n1", "n2", "n3"]
            asyncio.run(_compact(cluster.endpoint))
            with pytest.raises(ApiException) as e:
                for _ in watch.Watch().stream(core.list_namespaced_config_map, ns, resource_version=first,
                                              timeout_seconds=3):
                    pass
            assert e.value.status == 410
            with pytest.raises(ApiException) as e:
                core.list_namespaced_config_map(ns, resource_version=first, resource_version_match="Exact")
            assert e.value.status == 410 and "Expired" in e.value.body
    finally:
        proc.stop()


def test_watch_bookmarks(api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    resp = core.list_namespaced_config_map(ns, watch=True, resource_version=rv, allow_watch_bookmarks=True,
                                           timeout_seconds=3, _preload_content=False)
    text = resp.data.decode()
    assert '"type":"BOOKMARK"' in text


def test_finalizers_and_graceful_pod_deletion(api: client.ApiClient, ns: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(ns, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="f", finalizers=["example.com/hold"])))
    core.delete_namespaced_config_map("f", ns)
    held = core.read_namespaced_config_map("f", ns)
    assert held.metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map("f", ns, {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as e:
        core.read_namespaced_config_map("f", ns)
    assert e.value.status == 404

    pod = client.V1Pod(metadata=client.V1ObjectMeta(name="p", labels={"app": "p"}),
                       spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]))
    created = core.create_namespaced_pod(ns, pod)
    assert created.status.phase == "Pending" and created.spec.restart_policy == "Always"
    # the answer is a Status, as from kube-apiserver (the client cannot read it as a Binding)
    resp = core.create_namespaced_pod_binding("p", ns, client.V1Binding(
        metadata=client.V1ObjectMeta(name="p"), target=client.V1ObjectReference(kind="Node", name="n1")),
        _preload_content=False)
    assert resp.status == 201
    with pytest.raises(ApiException) as e:
        core.create_namespaced_pod_binding("p", ns, {"metadata": {"name": "p"}, "target": {"name": "n2"}})
    assert e.value.status == 409 and "already assigned" in e.value.body
    assert core.read_namespaced_pod("p", ns).spec.node_name == "n1"
    on_node = core.list_namespaced_pod(ns, field_selector="spec.nodeName=n1")
    assert [p.metadata.name for p in on_node.items] == ["p"]
    core.delete_namespaced_pod("p", ns)  # on a node: graceful, the kubelet finishes it
    terminating = core.read_namespaced_pod("p", ns)
    assert terminating.metadata.deletion_timestamp and terminating.metadata.deletion_grace_period_seconds == 30
    core.delete_namespaced_pod("p", ns, grace_period_seconds=0)
    with pytest.raises(ApiException) as e:
        core.read_namespaced_pod("p", ns)
    assert e.value.status == 404



def test_get_with_resource_version_0_may_come_from_the_cache(cluster: Cluster, api: client.ApiClient,
                                                             ns: str) -> None:
    """resourceVersion=0 on a GET is "any version" (kubelets read their Node so): the API server
    answers from its watch cache once it has the object, and a deleted object is not found."""
    core = client.CoreV1Api(api)
    created = core.create_namespaced_config_map(ns, _cm("rv0"))
    url = f"{cluster.url}/api/v1/namespaces/{ns}/configmaps/rv0?resourceVersion=0"

    def get() -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.loads(r.read())  # type: ignore[no-any-return]
        except urllib.error.HTTPError as e:
            assert e.code == 404
            return None

    deadline = time.monotonic() + 10
    got = get()
    while (got or {}).get("metadata", {}).get("resourceVersion") != created.metadata.resource_version:
        assert time.monotonic() < deadline, got
        time.sleep(0.05)
        got = get()
    assert got is not None and got["data"] == {"k": "rv0"} and got["kind"] == "ConfigMap"
    core.delete_namespaced_config_map("rv0", ns)
    while get() is not None:
        assert time.monotonic() < deadline, "still found after the delete"
        time.sleep(0.05)
