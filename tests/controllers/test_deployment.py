from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gifee.controllers import deployment, replicas
from gifee.controllers.objects import controller_ref, pod_is_ready

from .sim import Cluster


def template(image: str) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": image}]}}


def dep(n: int, surge: Any, unavail: Any, image: str = "nginx:1", history: int = 10) -> dict[str, Any]:
    return {"metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": n, "selector": {"matchLabels": {"app": "web"}}, "template": template(image),
                     "revisionHistoryLimit": history,
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavail}}}}


def rs_pass(c: Cluster) -> None:
    for rs in c.list("replicasets"):
        c.apply(replicas.reconcile(rs, "ReplicaSet", c.list("pods"), c.now).actions)


def tick(c: Cluster, check: Any = None) -> None:
    rs_pass(c)
    if check:
        check(c)
    c.kubelet()
    rs_pass(c)
    d = c.get("deployments", "default", "web")
    assert d is not None
    c.apply(deployment.reconcile(d, c.list("replicasets"), c.list("pods"), c.now))
    if check:
        check(c)


def settle(c: Cluster, check: Any = None, ticks: int = 40) -> None:
    for _ in range(ticks):
        before = copy.deepcopy(c.objects)
        tick(c, check)
        if c.objects == before:
            return
    raise AssertionError("did not settle")


def set_image(c: Cluster, image: str) -> None:
    d = c.get("deployments", "default", "web")
    assert d is not None
    d["spec"]["template"] = template(image)
    d["metadata"]["generation"] += 1
    c.objects[("deployments", "default", "web")] = d


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 8), surge=st.sampled_from([0, 1, 2, "25%", "50%"]),
       unavail=st.sampled_from([0, 1, 2, "25%", "50%"]))
def test_rolling_update_respects_surge_and_unavailable(n: int, surge: Any, unavail: Any) -> None:
    c = Cluster()
    d = c.add("deployments", dep(n, surge, unavail))
    settle(c)
    max_surge, max_unavail = deployment.surge_and_unavailable(d)

    def check(c: Cluster) -> None:
        pods = [p for p in c.list("pods")]
        available = [p for p in pods if pod_is_ready(p)]
        assert len(available) >= n - max_unavail, (len(available), n, max_unavail)
        assert len(pods) <= n + max_surge
        assert sum(r["spec"]["replicas"] for r in c.list("replicasets")) <= n + max_surge

    set_image(c, "nginx:2")
    settle(c, check)
    rss = c.list("replicasets")
    new = [r for r in rss if r["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:2"]
    assert len(new) == 1 and new[0]["spec"]["replicas"] == n
    assert all(r["spec"]["replicas"] == 0 for r in rss if r is not new[0])
    pods = c.list("pods")
    assert len(pods) == n and all(controller_ref(p)["name"] == new[0]["metadata"]["name"] for p in pods)  # type: ignore[index]
    final = c.get("deployments", "default", "web") or {}
    assert final["metadata"]["annotations"][deployment.REVISION] == "2"
    assert final["status"]["updatedReplicas"] == n and final["status"]["availableReplicas"] == n
    assert final["status"]["observedGeneration"] == final["metadata"]["generation"]


def test_rollback_history_and_cleanup() -> None:
    c = Cluster()
    c.add("deployments", dep(3, 1, 0, history=1))
    settle(c)
    set_image(c, "nginx:2")
    settle(c)
    # kubectl rollout undo: the previous revision's template, without the hash label
    old = next(r for r in c.list("replicasets") if r["metadata"]["annotations"][deployment.REVISION] == "1")
    tmpl = copy.deepcopy(old["spec"]["template"])
    del tmpl["metadata"]["labels"]["pod-template-hash"]
    d = c.get("deployments", "default", "web") or {}
    d["spec"]["template"] = tmpl
    c.objects[("deployments", "default", "web")] = d
    settle(c)
    rss = {r["metadata"]["name"]: r for r in c.list("replicasets")}
    back = rss[old["metadata"]["name"]]
    assert back["metadata"]["annotations"][deployment.REVISION] == "3"
    assert back["metadata"]["annotations"][deployment.REVISION_HISTORY] == "1"
    assert back["spec"]["replicas"] == 3
    assert (c.get("deployments", "default", "web") or {})["metadata"]["annotations"][deployment.REVISION] == "3"
    # history limit 1: revision 2's RS stays (one old RS), nothing else is left
    set_image(c, "nginx:3")
    settle(c)
    revs = sorted(r["metadata"]["annotations"][deployment.REVISION] for r in c.list("replicasets"))
    assert revs == ["3", "4"]


def test_new_replica_set_shape() -> None:
    c = Cluster()
    d = c.add("deployments", dep(4, "25%", "25%"))
    acts = deployment.reconcile(d, [], [], c.now)
    create = next(a for a in acts if a.verb == "create")
    body = create.body or {}
    h = body["metadata"]["labels"]["pod-template-hash"]
    assert body["metadata"]["name"] == f"web-{h}"
    assert body["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": h}
    assert body["spec"]["template"]["metadata"]["labels"]["pod-template-hash"] == h
    assert body["metadata"]["annotations"][deployment.REVISION] == "1"
    assert body["metadata"]["ownerReferences"][0]["controller"] is True
    assert body["spec"]["replicas"] == 4


def test_scale_mid_rollout_is_proportional() -> None:
    c = Cluster()
    c.add("deployments", dep(10, 3, 2))
    settle(c)
    set_image(c, "nginx:2")
    tick(c)
    d = c.get("deployments", "default", "web") or {}
    d["spec"]["replicas"] = 20
    c.objects[("deployments", "default", "web")] = d
    settle(c)
    assert len(c.list("pods")) == 20
    assert sorted(r["spec"]["replicas"] for r in c.list("replicasets")) == [0, 20]


def test_recreate_never_mixes_versions() -> None:
    c = Cluster()
    body = dep(3, 0, 0)
    body["spec"]["strategy"] = {"type": "Recreate"}
    c.add("deployments", body)
    settle(c)

    def check(c: Cluster) -> None:
        images = {p["metadata"]["name"][:12] for p in c.list("pods")}
        owners = {controller_ref(p)["uid"] for p in c.list("pods")}  # type: ignore[index]
        assert len(owners) <= 1, images

    set_image(c, "nginx:2")
    settle(c, check)
    assert len(c.list("pods")) == 3


def test_progress_deadline_exceeded() -> None:
    import datetime as dt
    c = Cluster()
    body = dep(2, 1, 0)
    body["spec"]["progressDeadlineSeconds"] = 60
    c.add("deployments", body)
    for _ in range(4):  # pods never become ready: no kubelet
        rs_pass(c)
        c.apply(deployment.reconcile(c.get("deployments", "default", "web") or {}, c.list("replicasets"),
                                     c.list("pods"), c.now))
    prog = next(x for x in (c.get("deployments", "default", "web") or {})["status"]["conditions"]
                if x["type"] == "Progressing")
    assert (prog["status"], prog["reason"]) == ("True", "ReplicaSetUpdated")
    c.now += dt.timedelta(seconds=61)
    c.apply(deployment.reconcile(c.get("deployments", "default", "web") or {}, c.list("replicasets"),
                                 c.list("pods"), c.now))
    prog = next(x for x in (c.get("deployments", "default", "web") or {})["status"]["conditions"]
                if x["type"] == "Progressing")
    assert (prog["status"], prog["reason"]) == ("False", "ProgressDeadlineExceeded")
    # progress resumes: the condition comes back
    c.kubelet()
    settle(c)
    prog = next(x for x in (c.get("deployments", "default", "web") or {})["status"]["conditions"]
                if x["type"] == "Progressing")
    assert (prog["status"], prog["reason"]) == ("True", "NewReplicaSetAvailable")


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 7), surge=st.sampled_from([0, 1, 3, "25%", "50%"]),
       unavail=st.sampled_from([0, 1, 3, "25%", "50%"]), rnd=st.randoms(use_true_random=False))
def test_rolling_update_bounds_with_slow_random_readiness(n: int, surge: Any, unavail: Any, rnd: Any) -> None:
    """Pods become ready at random moments; the bounds hold at every step and the rollout finishes."""
    from gifee.controllers.objects import timestamp
    c = Cluster()
    d = c.add("deployments", dep(n, surge, unavail))
    settle(c)
    max_surge, max_unavail = deployment.surge_and_unavailable(d)

    def check(c: Cluster) -> None:
        pods = c.list("pods")
        assert len([p for p in pods if pod_is_ready(p)]) >= n - max_unavail
        assert sum(r["spec"]["replicas"] for r in c.list("replicasets")) <= n + max_surge

    set_image(c, "nginx:2")
    for _ in range(200):
        rs_pass(c)
        check(c)
        for (r, _, _), o in c.objects.items():  # a random subset of the pods gets ready
            if r == "pods" and o.get("status", {}).get("phase") != "Running" and rnd.random() < 0.3:
                o["status"] = {"phase": "Running", "podIP": "10.0.0.1",
                               "conditions": [{"type": "Ready", "status": "True",
                                               "lastTransitionTime": timestamp(c.now)}]}
        rs_pass(c)
        c.apply(deployment.reconcile(c.get("deployments", "default", "web") or {}, c.list("replicasets"),
                                     c.list("pods"), c.now))
        check(c)
        final = c.get("deployments", "default", "web") or {}
        if final.get("status", {}).get("updatedReplicas") == n and final["status"].get("availableReplicas") == n \
                and final["status"].get("replicas") == n:
            break
    else:
        raise AssertionError("rollout did not finish")
