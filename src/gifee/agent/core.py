"""The node agent's decisions, as plain functions of what it observes and `now`.

Rules (the kubelet's, for one node):
- A Kubernetes pod is one sandbox runtime pod (the pod's network, UTS and IPC
  namespaces, a process that only waits) plus one runtime pod per container joined
  to it. The agent's memory of which runtime pods belong to which Kubernetes pod is
  a `PodRecord`; the runtime's pod directories say whether each one still runs.
- Init containers run first, one at a time in order, each to exit 0 (restarted on
  failure with back-off unless the policy is Never, which fails the pod); app
  containers start after the last one (Initialized condition).
- A container with no attempt yet is started once the sandbox runs. An exited
  attempt is restarted by the pod's restartPolicy: Always, OnFailure (exit code not
  0), Never. Restarts wait out an exponential back-off: none before the first
  restart, then base, 2*base, 4*base ... capped (10 s doubling to 5 min by default);
  an attempt that ran longer than `reset_after` restarts without waiting.
- A pod being deleted (deletionTimestamp) is terminated: preStop, SIGTERM, the grace
  period (metadata.deletionGracePeriodSeconds, else spec.terminationGracePeriodSeconds,
  else 30 s), SIGKILL; once nothing of it runs the agent cleans up and deletes the
  pod object with grace 0. A pod that vanished from the API is killed at once.
- A pod whose containers are all done (terminated and not to be restarted) is
  Succeeded (all exit codes 0) or Failed, and its sandbox is stopped.
- Probes: a startup probe gates liveness and readiness (an adopted attempt starts
  from the started/ready it was last reported with); liveness failing
  failureThreshold times in a row kills the attempt (then the restart policy
  applies); readiness needs successThreshold successes in a row and is lost after
  failureThreshold failures; without a readiness probe a running, started
  container is ready.
- A running container whose image was changed in the pod (the one mutable field of
  a container) is stopped and restarted from the new image, unless the policy is Never.
- Pod phase: Pending until every container has started once, Succeeded/Failed as
  above, else Running. Conditions PodScheduled, Initialized, ContainersReady and
  Ready; a condition keeps its lastTransitionTime while its status stays.

Theory of operation: the shell (agent.py) keeps desired pods (from a watch), the
records and the observed runtime pods, and on every tick or event calls
`plan_pod` for each pod: the returned actions are carried out (slow ones in the
background, never twice at once). `pod_status` turns the same inputs into the
status the shell writes when it differs from the last one written. Probe
scheduling is `probe_due` / `probe_record`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

Obj = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Config:
    backoff_base: float = 10.0
    backoff_cap: float = 300.0
    reset_after: float = 600.0


@dataclasses.dataclass(frozen=True)
class Observed:
    """One runtime pod as the runtime's directories show it."""

    uuid: str
    running: bool
    exit_code: int | None = None
    signal: int | None = None
    oom: bool = False
    started: float | None = None
    finished: float | None = None
    ip: str | None = None


@dataclasses.dataclass
class ContainerRecord:
    uuid: str | None = None          # the current attempt's runtime pod
    previous: str | None = None      # the attempt before it (kept for logs --previous)
    restart_count: int = 0
    last_state: Obj | None = None    # its terminated state, once replaced
    image_id: str = ""
    error: str = ""                  # why it cannot start (e.g. ErrImagePull: ...)
    error_reason: str = ""
    final: Obj | None = None         # how the current attempt ended (final_of), once it has
    image: str = ""                  # the image reference the current attempt was started from

    def to_json(self) -> Obj:
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> ContainerRecord:
        fields = {f.name for f in dataclasses.fields(ContainerRecord)}
        return ContainerRecord(**{k: v for k, v in data.items() if k in fields})


@dataclasses.dataclass
class PodRecord:
    uid: str
    namespace: str
    name: str
    sandbox: str | None = None
    start_time: float | None = None
    containers: dict[str, ContainerRecord] = dataclasses.field(default_factory=dict)

    def to_json(self) -> Obj:
        return {"uid": self.uid, "namespace": self.namespace, "name": self.name, "sandbox": self.sandbox,
                "start_time": self.start_time, "containers": {k: v.to_json() for k, v in self.containers.items()}}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> PodRecord:
        return PodRecord(uid=data["uid"], namespace=data["namespace"], name=data["name"], sandbox=data.get("sandbox"),
                         start_time=data.get("start_time"),
                         containers={k: ContainerRecord.from_json(v) for k, v in (data.get("containers") or {}).items()})

    def uuids(self) -> list[str]:
        out = [self.sandbox] if self.sandbox else []
        for c in self.containers.values():
            out += [u for u in (c.uuid, c.previous) if u]
        return out


@dataclasses.dataclass(frozen=True)
class Action:
    """start-sandbox | start | kill | terminate | stop-sandbox | finalize | forget."""

    kind: str
    uid: str
    container: str = ""
    grace: float = 0.0
    reason: str = ""

    @property
    def key(self) -> tuple[str, str]:
        """Actions with one key never run at once (a pod-wide one blocks its containers')."""
        return (self.uid, self.container if self.kind in ("start", "kill") else "*")


# -- small rules


def backoff_delay(restart_count: int, cfg: Config) -> float:
    if restart_count <= 0:
        return 0.0
    return float(min(cfg.backoff_cap, cfg.backoff_base * (2 ** min(restart_count - 1, 30))))


def restart_policy(pod: Obj) -> str:
    return str((pod.get("spec") or {}).get("restartPolicy") or "Always")


def containers_of(pod: Obj) -> list[Obj]:
    return list((pod.get("spec") or {}).get("containers") or [])


def is_deleting(pod: Obj) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def grace_period(pod: Obj) -> float:
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    value = meta.get("deletionGracePeriodSeconds")
    if value is None:
        value = spec.get("terminationGracePeriodSeconds")
    return float(30 if value is None else value)


def should_restart(policy: str, exit_code: int | None) -> bool:
    if policy == "Always":
        return True
    if policy == "OnFailure":
        return exit_code != 0
    return False


def container_decision(policy: str, rec: ContainerRecord, obs: Observed | None, now: float,
                       cfg: Config) -> tuple[str, float]:
    """("start" | "run" | "wait" | "done", seconds left to wait) for one container."""
    if rec.uuid is None:
        return "start", 0.0
    if obs is not None and obs.running:
        return "run", 0.0
    code = obs.exit_code if obs is not None else None
    if not should_restart(policy, code if obs is not None else 1):
        return "done", 0.0
    finished = (obs.finished if obs is not None else None) or now
    started = (obs.started if obs is not None else None) or finished
    delay = 0.0 if finished - started >= cfg.reset_after else backoff_delay(rec.restart_count, cfg)
    left = finished + delay - now
    return ("start", 0.0) if left <= 0 else ("wait", left)


def terminated_state(obs: Observed | None, uuid: str) -> Obj:
    """A containerStatuses[].state.terminated from an exited attempt."""
    if obs is None:
        return {"exitCode": 137, "reason": "ContainerStatusUnknown",
                "message": "The container could not be located when the pod was terminated",
                "containerID": f"gifee://{uuid}"}
    code = obs.exit_code if obs.exit_code is not None else 128 + (obs.signal or 9)
    reason = "OOMKilled" if obs.oom else ("Completed" if code == 0 else "Error")
    out: Obj = {"exitCode": code, "reason": reason, "containerID": f"gifee://{uuid}"}
    if obs.signal:
        out["signal"] = obs.signal
    if obs.started:
        out["startedAt"] = rfc3339(obs.started)
    if obs.finished:
        out["finishedAt"] = rfc3339(obs.finished)
    return out


def rfc3339(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- probes


@dataclasses.dataclass(frozen=True)
class ProbeState:
    successes: int = 0
    failures: int = 0
    last_run: float | None = None
    result: bool | None = None      # None until decided


def probe_params(probe: Obj) -> tuple[float, float, float, int, int]:
    """initialDelaySeconds, periodSeconds, timeoutSeconds, successThreshold, failureThreshold."""
    return (float(probe.get("initialDelaySeconds") or 0), float(probe.get("periodSeconds") or 10),
            float(probe.get("timeoutSeconds") or 1), int(probe.get("successThreshold") or 1),
            int(probe.get("failureThreshold") or 3))


def probe_due(probe: Obj, st: ProbeState, started_at: float, now: float) -> bool:
    delay, period, _, _, _ = probe_params(probe)
    if now < started_at + delay:
        return False
    return st.last_run is None or now - st.last_run >= period


def probe_record(kind: str, probe: Obj, st: ProbeState, ok: bool, now: float) -> ProbeState:
    """The state after one probe outcome; `result` flips at the thresholds."""
    _, _, _, success_t, failure_t = probe_params(probe)
    if kind in ("liveness", "startup"):
        success_t = 1
    successes = st.successes + 1 if ok else 0
    failures = 0 if ok else st.failures + 1
    result = st.result
    if successes >= success_t:
        result = True
    elif failures >= failure_t:
        result = False
    return ProbeState(successes, failures, now, result)


@dataclasses.dataclass(frozen=True)
class ProbeView:
    """What the probes say of one running attempt."""

    started: bool = True     # startup probe passed (or none)
    ready: bool = True       # readiness (True without a probe once started)
    kill: str = ""           # non-empty: liveness or startup failed; the reason


def probe_view(container: Obj, states: Mapping[str, ProbeState]) -> ProbeView:
    startup = states.get("startup", ProbeState())
    started = "startupProbe" not in container or startup.result is True
    kill = ""
    if "startupProbe" in container and startup.result is False:
        kill = "startup probe failed"
    live = states.get("liveness", ProbeState())
    if started and "livenessProbe" in container and live.result is False:
        kill = "liveness probe failed"
    ready = started and ("readinessProbe" not in container or states.get("readiness", ProbeState()).result is True)
    return ProbeView(started, ready, kill)


def adopted_probe_states(status: Obj | None) -> dict[str, ProbeState]:
    """Probe results an agent restarted beside a running attempt starts from: what the
    status it reported last said (started, ready), so that adopting a pod neither
    makes it unready nor re-runs its startup gate."""
    out: dict[str, ProbeState] = {}
    if not status:
        return out
    if status.get("started"):
        out["startup"] = ProbeState(successes=1, result=True)
    if status.get("ready"):
        out["readiness"] = ProbeState(successes=1, result=True)
    return out


def probes_to_run(container: Obj, view: ProbeView) -> list[str]:
    """Which probes are active for a running attempt: startup first, then the others."""
    if "startupProbe" in container and not view.started:
        return ["startup"]
    return [k for k in ("liveness", "readiness") if f"{k}Probe" in container]


# -- plans


def init_containers_of(pod: Obj) -> list[Obj]:
    return list((pod.get("spec") or {}).get("initContainers") or [])


def attempt(crec: ContainerRecord, observed: Mapping[str, Observed]) -> Observed | None:
    """The current attempt as observed, or as recorded when it ended (its runtime pod may
    have been collected since)."""
    if not crec.uuid:
        return None
    obs = observed.get(crec.uuid)
    if obs is None and crec.final:
        f = crec.final
        return Observed(crec.uuid, False, exit_code=f.get("exit_code"), signal=f.get("signal"),
                        oom=bool(f.get("oom")), started=f.get("started"), finished=f.get("finished"))
    return obs


def final_of(obs: Observed) -> Obj:
    """What the record keeps of an ended attempt."""
    return {"exit_code": obs.exit_code, "signal": obs.signal, "oom": obs.oom, "started": obs.started,
            "finished": obs.finished}


def init_progress(pod: Obj, rec: PodRecord, observed: Mapping[str, Observed], now: float,
                  cfg: Config) -> tuple[str, str, float]:
    """Where the init containers stand: ("done", "", 0) once each has exited 0 in order,
    ("failed", name, 0) when one failed for good (restartPolicy Never), else the
    decision for the current one: ("start" | "run" | "wait", name, seconds left).
    Init containers restart on failure unless the pod's policy is Never."""
    policy = "Never" if restart_policy(pod) == "Never" else "OnFailure"
    for c in init_containers_of(pod):
        name = c.get("name", "")
        crec = rec.containers.get(name, ContainerRecord())
        obs = attempt(crec, observed)
        decision, left = container_decision(policy, crec, obs, now, cfg)
        if decision == "done":
            if obs is not None and obs.exit_code == 0:
                continue
            return "failed", name, 0.0
        return decision, name, left
    return "done", "", 0.0


def plan_pod(pod: Obj | None, rec: PodRecord | None, observed: Mapping[str, Observed], now: float, cfg: Config,
             views: Mapping[str, ProbeView] | None = None) -> list[Action]:
    """What to do next for one pod (desired `pod`, None when it left the API or the node)."""
    views = views or {}
    if rec is None:
        if pod is None or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return []
        if is_deleting(pod):
            return [Action("finalize", uid_of(pod))]
        return [Action("start-sandbox", uid_of(pod))]
    running = [u for u in rec.uuids() if (o := observed.get(u)) is not None and o.running]
    if pod is None:
        return [Action("terminate", rec.uid, grace=0.0, reason="gone")] if running else [Action("forget", rec.uid)]
    if is_deleting(pod):
        if running:
            return [Action("terminate", rec.uid, grace=grace_period(pod), reason="deleted")]
        return [Action("finalize", rec.uid)]
    sandbox = observed.get(rec.sandbox) if rec.sandbox else None
    if pod_done(pod, rec, observed, now, cfg):
        return [Action("stop-sandbox", rec.uid)] if sandbox is not None and sandbox.running else []
    if sandbox is None or not sandbox.running:
        return [Action("start-sandbox", rec.uid)]
    stage, init_name, _ = init_progress(pod, rec, observed, now, cfg)
    if stage == "start":
        return [Action("start", rec.uid, init_name)]
    if stage != "done":
        return []
    actions = []
    policy = restart_policy(pod)
    for c in containers_of(pod):
        name = c.get("name", "")
        crec = rec.containers.get(name, ContainerRecord())
        decision, _ = container_decision(policy, crec, attempt(crec, observed), now, cfg)
        if decision == "start":
            actions.append(Action("start", rec.uid, name))
        elif decision == "run":
            grace = float((pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
            if (view := views.get(name)) is not None and view.kill:
                actions.append(Action("kill", rec.uid, name, grace=grace, reason=view.kill))
            elif crec.image and crec.image != c.get("image") and policy != "Never":
                actions.append(Action("kill", rec.uid, name, grace=grace, reason="definition changed"))
    return actions


def pod_done(pod: Obj, rec: PodRecord, observed: Mapping[str, Observed], now: float, cfg: Config) -> bool:
    stage = init_progress(pod, rec, observed, now, cfg)[0]
    if stage != "done":
        return stage == "failed"
    return all(d == "done" for d, _ in _decisions(pod, rec, observed, now, cfg).values())


def _decisions(pod: Obj, rec: PodRecord, observed: Mapping[str, Observed], now: float,
               cfg: Config) -> dict[str, tuple[str, float]]:
    policy = restart_policy(pod)
    out = {}
    for c in containers_of(pod):
        name = c.get("name", "")
        crec = rec.containers.get(name, ContainerRecord())
        out[name] = container_decision(policy, crec, attempt(crec, observed), now, cfg)
    return out


def backing_off(pod: Obj, rec: PodRecord, observed: Mapping[str, Observed], now: float,
                cfg: Config) -> list[tuple[str, str, float]]:
    """(container, ended attempt, seconds left) for each app container waiting out a back-off."""
    out = []
    for name, (decision, left) in _decisions(pod, rec, observed, now, cfg).items():
        crec = rec.containers.get(name)
        if decision == "wait" and crec is not None and crec.uuid:
            out.append((name, crec.uuid, left))
    return out


def uid_of(pod: Obj) -> str:
    return str((pod.get("metadata") or {}).get("uid", ""))


# -- status


def _container_status(c: Obj, crec: ContainerRecord, obs: Observed | None, decision: str, view: ProbeView,
                      rec: PodRecord, cfg: Config, now: float, *, init: bool, initializing: bool) -> Obj:
    name = c.get("name", "")
    state: Obj
    ready = started = False
    if crec.uuid is None:
        reason = crec.error_reason or ("PodInitializing" if initializing else "ContainerCreating")
        state = {"waiting": {"reason": reason, **({"message": crec.error} if crec.error else {})}}
    elif obs is not None and obs.running:
        state = {"running": {"startedAt": rfc3339(obs.started or now)}}
        started, ready = (True, False) if init else (view.started, view.ready)
    elif decision == "wait":
        state = {"waiting": {"reason": "CrashLoopBackOff",
                             "message": f"back-off {int(backoff_delay(crec.restart_count, cfg))}s restarting "
                                        f"failed container={name} pod={rec.name}_{rec.namespace}({rec.uid})"}}
    else:
        state = {"terminated": terminated_state(obs, crec.uuid)}
        ready = init and obs is not None and obs.exit_code == 0
    last: Obj = {}
    if decision == "wait" and crec.uuid:
        last = {"terminated": terminated_state(obs, crec.uuid)}
    elif crec.last_state:
        last = {"terminated": crec.last_state}
    status: Obj = {"name": name, "image": c.get("image", ""), "imageID": crec.image_id,
                   "restartCount": crec.restart_count, "ready": ready, "started": started,
                   "state": state, "lastState": last}
    if crec.uuid:
        status["containerID"] = f"gifee://{crec.uuid}"
    return status


def pod_status(pod: Obj, rec: PodRecord | None, observed: Mapping[str, Observed], now: float, cfg: Config, *,
               host_ip: str, views: Mapping[str, ProbeView] | None = None) -> Obj:
    """The status the node reports for `pod` (phase, conditions, IPs, init and app containerStatuses)."""
    views = views or {}
    old = pod.get("status") or {}
    if rec is None:
        return dict(old)
    sandbox = observed.get(rec.sandbox) if rec.sandbox else None
    stage, _, _ = init_progress(pod, rec, observed, now, cfg)
    decisions = _decisions(pod, rec, observed, now, cfg)
    init_policy = "Never" if restart_policy(pod) == "Never" else "OnFailure"
    init_statuses = []
    for c in init_containers_of(pod):
        crec = rec.containers.get(c.get("name", ""), ContainerRecord())
        obs = attempt(crec, observed)
        decision = container_decision(init_policy, crec, obs, now, cfg)[0]
        init_statuses.append(_container_status(c, crec, obs, decision, ProbeView(), rec, cfg, now, init=True,
                                               initializing=True))
    statuses = []
    for c in containers_of(pod):
        name = c.get("name", "")
        crec = rec.containers.get(name, ContainerRecord())
        view = views.get(name, ProbeView(started=True, ready="readinessProbe" not in c and "startupProbe" not in c))
        statuses.append(_container_status(c, crec, attempt(crec, observed), decisions[name][0], view, rec, cfg, now,
                                          init=False, initializing=stage != "done"))
    if stage == "failed":
        phase = "Failed"
    elif stage != "done":
        phase = "Pending"
    else:
        phase = pod_phase(decisions, rec, observed)
    initialized = stage == "done"
    all_ready = (bool(statuses) and all(s["ready"] for s in statuses) and phase not in ("Succeeded", "Failed")
                 and initialized)
    conds = [("PodScheduled", True, ""), ("Initialized", initialized, "" if initialized else "ContainersNotInitialized"),
             ("ContainersReady", all_ready, "" if all_ready else "ContainersNotReady"),
             ("Ready", all_ready, "" if all_ready else "ContainersNotReady")]
    if phase == "Succeeded":
        conds[2] = ("ContainersReady", False, "PodCompleted")
        conds[3] = ("Ready", False, "PodCompleted")
    out: Obj = {"phase": phase, "conditions": conditions(old.get("conditions") or [], conds, now),
                "hostIP": host_ip, "hostIPs": [{"ip": host_ip}], "containerStatuses": statuses}
    if init_statuses:
        out["initContainerStatuses"] = init_statuses
    ip = (sandbox.ip if sandbox is not None else None) or old.get("podIP")
    if (pod.get("spec") or {}).get("hostNetwork"):
        ip = host_ip
    if ip:
        out["podIP"] = ip
        out["podIPs"] = [{"ip": ip}]
    if rec.start_time:
        out["startTime"] = rfc3339(rec.start_time)
    out["qosClass"] = qos_class(pod)
    return out


def pod_phase(decisions: Mapping[str, tuple[str, float]], rec: PodRecord, observed: Mapping[str, Observed]) -> str:
    if decisions and all(d == "done" for d, _ in decisions.values()):
        failed = False
        for name in decisions:
            obs = attempt(rec.containers.get(name, ContainerRecord()), observed)
            if obs is None or obs.exit_code != 0:
                failed = True
        return "Failed" if failed else "Succeeded"
    if any(rec.containers.get(n, ContainerRecord()).uuid is None for n in decisions):
        return "Pending"
    return "Running"


def conditions(old: Sequence[Obj], wanted: Sequence[tuple[str, bool, str]], now: float) -> list[Obj]:
    previous = {c.get("type"): c for c in old}
    out = []
    for kind, ok, reason in wanted:
        status = "True" if ok else "False"
        prev = previous.get(kind)
        changed = prev is None or prev.get("status") != status
        cond: Obj = {"type": kind, "status": status, "lastProbeTime": None,
                     "lastTransitionTime": rfc3339(now) if changed or prev is None else prev.get("lastTransitionTime")}
        if reason:
            cond["reason"] = reason
        out.append(cond)
    return out


def qos_class(pod: Obj) -> str:
    cs = containers_of(pod)
    reqs = [((c.get("resources") or {}).get("requests") or {}) for c in cs]
    lims = [((c.get("resources") or {}).get("limits") or {}) for c in cs]
    if not any(reqs) and not any(lims):
        return "BestEffort"
    if all(lim.get("cpu") and lim.get("memory") and req.get("cpu", lim["cpu"]) == lim["cpu"]
           and req.get("memory", lim["memory"]) == lim["memory"] for req, lim in zip(reqs, lims, strict=True)):
        return "Guaranteed"
    return "Burstable"


def status_differs(old: Obj, new: Obj) -> bool:
    """Whether `new` says something `old` does not (ignoring condition probe times)."""
    return {k: old.get(k) for k in new} != new
