"""Property tests of the agent's plan and status over random pods, records and runtime states."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gifee.agent import core
from gifee.agent.core import Config, ContainerRecord, Observed, PodRecord

CFG = Config(backoff_base=10, backoff_cap=300)
# an attempt: None (never started), "run", or an exit code
ATTEMPT = st.one_of(st.none(), st.just("run"), st.integers(0, 2))


@st.composite
def scenarios(draw: Any) -> tuple[dict[str, Any], PodRecord, dict[str, Observed], float]:
    policy = draw(st.sampled_from(["Always", "OnFailure", "Never"]))
    n_init, n_app = draw(st.integers(0, 2)), draw(st.integers(1, 3))
    pod = {"metadata": {"name": "p", "namespace": "d", "uid": "u"},
           "spec": {"restartPolicy": policy,
                    "initContainers": [{"name": f"i{i}", "image": "x"} for i in range(n_init)],
                    "containers": [{"name": f"c{i}", "image": "x"} for i in range(n_app)]}}
    if draw(st.booleans()):
        pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    rec = PodRecord("u", "d", "p", sandbox="sb", start_time=0)
    observed = {"sb": Observed("sb", draw(st.booleans()), ip="10.0.0.9")}
    for name in [f"i{i}" for i in range(n_init)] + [f"c{i}" for i in range(n_app)]:
        a = draw(ATTEMPT)
        crec = ContainerRecord(restart_count=draw(st.integers(0, 6)))
        if a is not None:
            crec.uuid = f"{name}-a"
            observed[crec.uuid] = (Observed(crec.uuid, True, started=1) if a == "run" else
                                   Observed(crec.uuid, False, exit_code=a, started=1, finished=draw(st.floats(1, 50))))
        rec.containers[name] = crec
    return pod, rec, observed, draw(st.floats(50, 500))


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_plan_invariants(case: tuple[dict[str, Any], PodRecord, dict[str, Observed], float]) -> None:
    pod, rec, observed, now = case
    actions = core.plan_pod(pod, rec, observed, now, CFG)
    keys = [a.key for a in actions]
    assert len(keys) == len(set(keys))
    kinds = {a.kind for a in actions}
    if core.is_deleting(pod):
        assert kinds <= {"terminate", "finalize"}
        return
    starts = [a.container for a in actions if a.kind == "start"]
    if not observed["sb"].running:
        assert kinds <= {"start-sandbox"}  # nothing joins a dead sandbox
        return
    inits = [c["name"] for c in pod["spec"]["initContainers"]]
    assert len([s for s in starts if s in inits]) <= 1
    if any(s in inits for s in starts):
        assert all(s in inits for s in starts)  # apps wait for every init container
    init_ok = all((o := core.attempt(rec.containers[n], observed)) is not None and not o.running and o.exit_code == 0
                  for n in inits)
    if not init_ok:
        assert not [s for s in starts if s not in inits]
    for s in starts:
        crec = rec.containers[s]
        obs = core.attempt(crec, observed)
        assert obs is None or not obs.running  # never a second attempt beside a running one
        if crec.uuid is not None and pod["spec"]["restartPolicy"] == "Never":
            raise AssertionError(f"restarted {s} under Never")
    status = core.pod_status(pod, rec, observed, now, CFG, host_ip="h")
    assert status["phase"] in ("Pending", "Running", "Succeeded", "Failed")
    if status["phase"] == "Succeeded":
        assert all(observed[rec.containers[c["name"]].uuid or ""].exit_code == 0 for c in pod["spec"]["containers"])
        assert kinds <= {"stop-sandbox"}
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")["status"] == "True"
    if ready:
        assert status["phase"] == "Running" and all(s["ready"] for s in status["containerStatuses"])
