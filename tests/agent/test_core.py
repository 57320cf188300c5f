"""The agent's pure cores: plans, back-off, probes, status; container options and volumes."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from gifee.agent import core, specs
from gifee.agent.core import Action, Config, ContainerRecord, Observed, PodRecord, ProbeState

CFG = Config(backoff_base=10, backoff_cap=300)


def pod(policy: str = "Always", containers: int = 1, **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "default", "uid": "u1", **meta},
            "spec": {"restartPolicy": policy, "containers": [{"name": f"c{i}", "image": "x:1"}
                                                             for i in range(containers)]}}


def rec(*attempts: str | None, restarts: int = 0) -> PodRecord:
    r = PodRecord("u1", "default", "p", sandbox="sb", start_time=100.0)
    r.containers = {f"c{i}": ContainerRecord(uuid=a, restart_count=restarts) for i, a in enumerate(attempts)}
    return r


SANDBOX = Observed("sb", True, ip="10.0.0.2", started=100)


def test_backoff_doubles_from_base_to_cap() -> None:
    assert [core.backoff_delay(n, CFG) for n in range(8)] == [0, 10, 20, 40, 80, 160, 300, 300]


def test_new_pod_starts_sandbox_then_containers() -> None:
    assert core.plan_pod(pod(), None, {}, 0, CFG) == [Action("start-sandbox", "u1")]
    assert core.plan_pod(pod(containers=2), rec(None, None), {"sb": SANDBOX}, 0, CFG) == [
        Action("start", "u1", "c0"), Action("start", "u1", "c1")]


def test_restart_waits_out_the_back_off() -> None:
    exited = {"sb": SANDBOX, "a": Observed("a", False, exit_code=1, started=100, finished=110)}
    r = rec("a", restarts=2)  # third restart: 20 s after the exit
    assert core.plan_pod(pod(), r, exited, 120, CFG) == []
    assert core.container_decision("Always", r.containers["c0"], exited["a"], 120, CFG) == ("wait", 10)
    assert core.plan_pod(pod(), r, exited, 130, CFG) == [Action("start", "u1", "c0")]
    status = core.pod_status(pod(), r, exited, 120, CFG, host_ip="1.2.3.4")
    cs = status["containerStatuses"][0]
    assert cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert cs["lastState"]["terminated"]["exitCode"] == 1 and status["phase"] == "Running"


def test_long_run_resets_the_back_off() -> None:
    exited = {"sb": SANDBOX, "a": Observed("a", False, exit_code=1, started=100, finished=100 + 700)}
    assert core.container_decision("Always", ContainerRecord("a", restart_count=9), exited["a"], 800, CFG)[0] == "start"


@pytest.mark.parametrize("policy,code,decision", [
    ("Always", 0, "start"), ("OnFailure", 0, "done"), ("OnFailure", 1, "start"), ("Never", 1, "done"),
    ("Never", 0, "done")])
def test_restart_policy(policy: str, code: int, decision: str) -> None:
    obs = Observed("a", False, exit_code=code, started=1, finished=2)
    assert core.container_decision(policy, ContainerRecord("a"), obs, 3, CFG)[0] == decision


def test_finished_pods_phase_and_sandbox_stop() -> None:
    observed = {"sb": SANDBOX, "a": Observed("a", False, exit_code=0, finished=5), "b": Observed("b", False,
                                                                                                exit_code=2, finished=5)}
    assert core.pod_status(pod("Never"), rec("a"), observed, 6, CFG, host_ip="h")["phase"] == "Succeeded"
    assert core.pod_status(pod("Never", 2), rec("a", "b"), observed, 6, CFG, host_ip="h")["phase"] == "Failed"
    assert core.plan_pod(pod("Never"), rec("a"), observed, 6, CFG) == [Action("stop-sandbox", "u1")]


def test_deletion_terminates_then_finalizes() -> None:
    deleting = pod(deletionTimestamp="2026-01-01T00:00:00Z", deletionGracePeriodSeconds=7)
    running = {"sb": SANDBOX, "a": Observed("a", True)}
    assert core.plan_pod(deleting, rec("a"), running, 0, CFG) == [
        Action("terminate", "u1", grace=7.0, reason="deleted")]
    assert core.plan_pod(deleting, rec("a"), {"a": Observed("a", False)}, 0, CFG) == [Action("finalize", "u1")]
    assert core.plan_pod(None, rec("a"), running, 0, CFG)[0].kind == "terminate"
    assert core.plan_pod(None, rec("a"), {}, 0, CFG) == [Action("forget", "u1")]


def test_adopted_pod_needs_nothing() -> None:
    """After an agent restart: records + running runtime pods -> no action (no duplicates)."""
    running = {"sb": SANDBOX, "a": Observed("a", True, started=101)}
    assert core.plan_pod(pod(), rec("a"), running, 500, CFG) == []


def test_dead_sandbox_is_recreated() -> None:
    assert core.plan_pod(pod(), rec("a"), {"sb": Observed("sb", False), "a": Observed("a", True)}, 0, CFG) == [
        Action("start-sandbox", "u1")]


def test_probes_thresholds_and_gating() -> None:
    probe = {"periodSeconds": 2, "initialDelaySeconds": 5, "failureThreshold": 2, "successThreshold": 2}
    st = ProbeState()
    assert not core.probe_due(probe, st, 100, 104) and core.probe_due(probe, st, 100, 105)
    st = core.probe_record("readiness", probe, st, True, 105)
    assert st.result is None and not core.probe_due(probe, st, 100, 106)
    st = core.probe_record("readiness", probe, st, True, 107)
    assert st.result is True
    st = core.probe_record("readiness", probe, st, False, 109)
    assert st.result is True
    st = core.probe_record("readiness", probe, st, False, 111)
    assert st.result is False
    c = {"name": "c0", "startupProbe": {}, "livenessProbe": {}, "readinessProbe": {}}
    view = core.probe_view(c, {"liveness": ProbeState(result=False)})
    assert view.kill == "" and not view.started and not view.ready  # startup gates liveness
    assert core.probes_to_run(c, view) == ["startup"]
    view = core.probe_view(c, {"startup": ProbeState(result=True), "liveness": ProbeState(result=False)})
    assert view.kill == "liveness probe failed"
    p = pod()
    p["spec"]["containers"][0]["livenessProbe"] = {}
    acts = core.plan_pod(p, rec("a"), {"sb": SANDBOX, "a": Observed("a", True)}, 0, CFG, {"c0": view})
    assert acts == [Action("kill", "u1", "c0", grace=30.0, reason="liveness probe failed")]


def test_conditions_keep_transition_times() -> None:
    r = rec("a")
    running = {"sb": SANDBOX, "a": Observed("a", True, started=101)}
    first = core.pod_status(pod(), r, running, 200, CFG, host_ip="h")
    assert first["podIP"] == "10.0.0.2" and first["conditions"][3]["status"] == "True"
    again = core.pod_status({**pod(), "status": first}, r, running, 300, CFG, host_ip="h")
    assert again == first and not core.status_differs(first, again)


def test_container_options_command_env_limits_mounts(tmp_path: Path) -> None:
    p = pod()
    c = {"name": "c", "image": "x:latest", "command": ["/bin/app"], "workingDir": "/w",
         "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "$(A)-2"},
                 {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                 {"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
         "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "P_"}],
         "resources": {"limits": {"cpu": "250m", "memory": "32Mi"}},
         "volumeMounts": [{"name": "v", "mountPath": "/data", "subPath": "sub"}, {"name": "s", "mountPath": "/s"}]}
    p["spec"]["volumes"] = [{"name": "v", "emptyDir": {}}, {"name": "s", "secret": {"secretName": "s"}}]
    cms = {"cm": {"data": {"x": "y"}}}
    secrets = {"s": {"data": {"k": base64.b64encode(b"v").decode()}}}
    plan = specs.volume_plan(p, tmp_path, cms, secrets)
    assert plan[1].files == (("k", b"v", 0o644),) and plan[1].read_only
    opts = specs.container_options(p, c, {"config": {"Entrypoint": ["/old"], "Cmd": ["x"]}}, plan, cms, secrets,
                                   "10.1.1.1", "h")
    assert opts.image_config["config"]["Entrypoint"] == ["/bin/app"] and opts.image_config["config"]["Cmd"] == []
    assert opts.env == ("P_x=y", "A=1", "B=1-2", "IP=10.1.1.1", "K=v")
    assert (opts.cpu, opts.memory, opts.pull_policy) == ("250m", "32Mi", "Always")
    assert opts.volumes == (f"{tmp_path}/volumes/v/sub:/data", f"{tmp_path}/volumes/s:/s:ro")
    with pytest.raises(specs.ConfigError):
        specs.container_options(p, c, {}, plan, cms, {}, "", "")
    with pytest.raises(specs.ConfigError):
        specs.volume_plan({"spec": {"volumes": [{"name": "n", "nfs": {}}]}}, tmp_path, {}, {})


def test_adopted_attempt_keeps_its_probe_results() -> None:
    c = {"name": "c0", "startupProbe": {}, "readinessProbe": {}}
    states = core.adopted_probe_states({"started": True, "ready": True})
    view = core.probe_view(c, states)
    assert view.started and view.ready and core.probes_to_run(c, view) == ["readiness"]
    assert core.probe_view(c, core.adopted_probe_states({"started": True, "ready": False})).ready is False
    assert core.adopted_probe_states(None) == {}


def init_pod(policy: str = "Always") -> dict[str, Any]:
    p = pod(policy)
    p["spec"]["initContainers"] = [{"name": "i0", "image": "x:1"}, {"name": "i1", "image": "x:1"}]
    return p


def init_rec(*attempts: str | None) -> PodRecord:
    r = rec(None)
    for i, a in enumerate(attempts):
        r.containers[f"i{i}"] = ContainerRecord(uuid=a)
    return r


def test_init_containers_run_one_by_one_before_the_app() -> None:
    obs = {"sb": SANDBOX}
    assert core.plan_pod(init_pod(), init_rec(None, None), obs, 0, CFG) == [Action("start", "u1", "i0")]
    obs["a"] = Observed("a", True, started=1)
    assert core.plan_pod(init_pod(), init_rec("a", None), obs, 2, CFG) == []
    status = core.pod_status(init_pod(), init_rec("a", None), obs, 2, CFG, host_ip="h")
    assert status["phase"] == "Pending" and status["conditions"][1]["status"] == "False"
    assert status["containerStatuses"][0]["state"]["waiting"]["reason"] == "PodInitializing"
    obs["a"] = Observed("a", False, exit_code=0, started=1, finished=2)
    assert core.plan_pod(init_pod(), init_rec("a", None), obs, 3, CFG) == [Action("start", "u1", "i1")]
    obs["b"] = Observed("b", False, exit_code=0, started=3, finished=4)
    assert core.plan_pod(init_pod(), init_rec("a", "b"), obs, 5, CFG) == [Action("start", "u1", "c0")]
    status = core.pod_status(init_pod(), init_rec("a", "b"), obs, 5, CFG, host_ip="h")
    assert status["conditions"][1]["status"] == "True"
    assert [s["ready"] for s in status["initContainerStatuses"]] == [True, True]


def test_failed_init_container_restarts_or_fails_the_pod() -> None:
    obs = {"sb": SANDBOX, "a": Observed("a", False, exit_code=1, started=1, finished=2)}
    assert core.plan_pod(init_pod("Always"), init_rec("a"), obs, 3, CFG) == [Action("start", "u1", "i0")]
    assert core.plan_pod(init_pod("Never"), init_rec("a"), obs, 3, CFG) == [Action("stop-sandbox", "u1")]
    assert core.pod_status(init_pod("Never"), init_rec("a"), obs, 3, CFG, host_ip="h")["phase"] == "Failed"


def test_ended_attempt_survives_its_runtime_pod() -> None:
    crec = ContainerRecord(uuid="a", final=core.final_of(Observed("a", False, exit_code=0, started=1, finished=2)))
    r = rec(None)
    r.containers["c0"] = crec
    assert core.pod_status(pod("Never"), r, {"sb": SANDBOX}, 3, CFG, host_ip="h")["phase"] == "Succeeded"


def test_capabilities_and_host_network() -> None:
    default = frozenset({0, 5, 13})
    assert specs.capabilities({}, default) is None
    assert specs.capabilities({"securityContext": {"capabilities": {"drop": ["ALL"], "add": ["CAP_NET_RAW"]}}},
                              default) == frozenset({13})
    assert specs.capabilities({"securityContext": {"capabilities": {"add": ["sys_time"], "drop": ["KILL"]}}},
                              default) == frozenset({0, 13, 25})
    assert len(specs.capabilities({"securityContext": {"privileged": True}}, default) or ()) == 41
    with pytest.raises(specs.ConfigError):
        specs.capabilities({"securityContext": {"capabilities": {"add": ["FLY"]}}}, default)
    p = pod()
    p["spec"]["hostNetwork"] = True
    status = core.pod_status(p, rec("a"), {"sb": Observed("sb", True), "a": Observed("a", True)}, 1, CFG,
                             host_ip="192.0.2.1")
    assert status["podIP"] == "192.0.2.1"


def test_changed_image_restarts_a_running_container() -> None:
    r = rec("a")
    r.containers["c0"].image = "x:0"
    running = {"sb": SANDBOX, "a": Observed("a", True, started=1)}
    assert core.plan_pod(pod(), r, running, 5, CFG) == [
        Action("kill", "u1", "c0", grace=30.0, reason="definition changed")]
    assert core.plan_pod(pod("Never"), r, running, 5, CFG) == []
    r.containers["c0"].image = "x:1"
    assert core.plan_pod(pod(), r, running, 5, CFG) == []
