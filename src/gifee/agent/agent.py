"""The node agent's asyncio shell: node registration and heartbeats, the pod watch,
the level-triggered reconcile loop, probes and status writes.

Desired state is the set of pods bound to this node (list + watch on
spec.nodeName); actual state is the runtime's pod directories (read every
tick) plus the records in DIR/agent/state.json. core.plan_pod decides; this
module carries actions out as tasks, at most one per key at a time, and wakes
the loop when one finishes. Nothing is adopted or killed before the first
list has arrived, so a restarted agent finds its pods again instead of
killing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import shutil
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from gifee.agent import core, enter, specs
from gifee.agent.core import Action, ContainerRecord, Observed, PodRecord, ProbeState, ProbeView
from gifee.agent.enter import Entered
from gifee.agent.runtime import (
    ImageError,
    LaunchQueue,
    Runtime,
    StateFile,
    prepare_volumes,
    remove_pod_dir,
)
from gifee.api.client import ApiClient
from gifee.api.errors import ApiError

log = logging.getLogger("gifee.agent")
T = TypeVar("T")
Obj = dict[str, Any]
LEASE_NAMESPACE = "kube-node-lease"
VERSION = "v1.32.0-gifee"


@dataclasses.dataclass
class AgentOptions:
    data_dir: Path
    server: str
    node_name: str
    node_ip: str
    port: int = 10250
    bind_address: str = ""
    insecure_image: bool = False
    insecure_registry: bool = False
    lease_interval: float = 10.0
    status_interval: float = 10.0
    sync_interval: float = 1.0
    backoff_base: float = 10.0
    backoff_cap: float = 300.0
    max_pods: int = 110
    volume_refresh: float = 10.0
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    cluster_dns: tuple[str, ...] = ()   # the kubelet's --cluster-dns: nameservers of ClusterFirst pods
    cluster_domain: str = "cluster.local"


def _now() -> float:
    return time.time()


class Agent:
    def __init__(self, opts: AgentOptions) -> None:
        self.opts = opts
        self.cfg = core.Config(backoff_base=opts.backoff_base, backoff_cap=opts.backoff_cap)
        self.runtime = Runtime(opts.data_dir, insecure_image=opts.insecure_image,
                               insecure_registry=opts.insecure_registry)
        self.state = StateFile(opts.data_dir / "agent" / "state.json")
        self.pods_dir = opts.data_dir / "agent" / "pods"
        self.records: dict[str, PodRecord] = {}
        self.desired: dict[str, Obj] = {}
        self.observed: dict[str, Observed] = {}
        self.inflight: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.written: dict[str, Obj] = {}
        self.status_tasks: dict[str, asyncio.Task[None]] = {}
        self.probes: dict[tuple[str, str, str], ProbeState] = {}   # (attempt uuid, container, kind)
        self.probing: set[tuple[str, str, str]] = set()
        self.seeded: set[str] = set()   # attempts whose adopted probe results were set
        self.backoff_noted: set[str] = set()   # ended attempts whose back-off has an event
        self.start_failures: dict[tuple[str, str], tuple[int, float]] = {}
        self.listed = asyncio.Event()
        self.wake = asyncio.Event()
        self.launch_queue = LaunchQueue()
        self.api: ApiClient | None = None
        self.tasks: list[asyncio.Task[Any]] = []
        self.started_at = _now()
        self.background: set[asyncio.Task[None]] = set()

    # -- helpers

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def launching(self, priority: int, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) on the launch thread (0: a container, before 1: a sandbox)."""
        result: T = await asyncio.wrap_future(self.launch_queue.submit(priority, fn, *args))
        return result

    def save(self) -> None:
        self.state.save(self.records)

    def by_name(self, namespace: str, name: str) -> tuple[Obj | None, PodRecord | None]:
        for uid, pod in self.desired.items():
            meta = pod.get("metadata") or {}
            if meta.get("namespace") == namespace and meta.get("name") == name:
                return pod, self.records.get(uid)
        for rec in self.records.values():
            if rec.namespace == namespace and rec.name == name:
                return None, rec
        return None, None

    # -- main

    async def run(self, ready: asyncio.Event | None = None) -> None:
        from gifee.agent.server import AgentServer

        self.api = ApiClient(self.opts.server)
        await self.blocking(self.runtime.ensure_pause_image)
        self.records = self.state.load()
        await self.blocking(self.recover)
        self.observed = await self.blocking(self.runtime.observe)
        await self.register()
        server = AgentServer(self)
        await server.start(self.opts.bind_address or self.opts.node_ip, self.opts.port)
        self.tasks = [asyncio.create_task(f()) for f in (self.lease_loop, self.node_status_loop, self.watch_loop,
                                                          self.reconcile_loop, self.probe_loop,
                                                          self.volume_refresh_loop)]
        log.info("node %s: serving on %s:%d, %d pod records", self.opts.node_name,
                 self.opts.bind_address or self.opts.node_ip, self.opts.port, len(self.records))
        if ready is not None:
            ready.set()
        try:
            await asyncio.gather(*self.tasks)
        finally:
            for t in self.tasks:
                t.cancel()
            await server.stop()
            await self.api.close()
            self.launch_queue.shutdown()

    def recover(self) -> None:
        """Before adopting: finish what a killed agent left half-done (abandoned launches,
        runtime pods started but never recorded)."""
        self.runtime.remove_abandoned()
        known = {u for r in self.records.values() for u in r.uuids()}
        for uuid in self.runtime.orphans(known):
            log.info("removing runtime pod %s: launched by an agent that died before recording it", uuid)
            self.runtime.remove(uuid)
            self.runtime.untag(uuid)

    # -- node and lease

    def node_status(self) -> Obj:
        now = core.rfc3339(_now())
        since = core.rfc3339(self.started_at)
        cpus = os.cpu_count() or 1
        mem_kib = 0
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_kib = int(line.split()[1])
        capacity = {"cpu": str(cpus), "memory": f"{mem_kib}Ki", "pods": str(self.opts.max_pods),
                    "ephemeral-storage": f"{shutil.disk_usage(self.opts.data_dir).total // 1024}Ki"}
        conds = [{"type": t, "status": "False", "reason": r, "message": m, "lastHeartbeatTime": now,
                  "lastTransitionTime": since}
                 for t, r, m in (("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory"),
                                 ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                                 ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"))]
        conds.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                      "message": "kubelet is posting ready status", "lastHeartbeatTime": now,
                      "lastTransitionTime": since})
        uname = os.uname()
        return {"capacity": capacity, "allocatable": dict(capacity), "conditions": conds,
                "addresses": [{"type": "InternalIP", "address": self.opts.node_ip},
                              {"type": "Hostname", "address": self.opts.node_name}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": self.opts.port}},
                "nodeInfo": {"kubeletVersion": VERSION, "kubeProxyVersion": VERSION, "operatingSystem": "linux",
                             "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(uname.machine, uname.machine),
                             "kernelVersion": uname.release, "osImage": "gifee", "containerRuntimeVersion": "gifee://1",
                             "machineID": "", "systemUUID": "", "bootID": ""}}

    async def register(self) -> None:
        assert self.api is not None
        labels = {"kubernetes.io/hostname": self.opts.node_name, "kubernetes.io/os": "linux",
                  "kubernetes.io/arch": "amd64", **self.opts.labels}
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.opts.node_name, "labels": labels},
                "spec": {}, "status": self.node_status()}
        delay = 0.5
        while True:  # as the kubelet: keep trying until the API server answers
            try:
                try:
                    node = await self.api.create("nodes", body)
                except ApiError as e:
                    if e.code != 409:
                        raise
                    node = await self.api.get("nodes", self.opts.node_name)
                await self.api.patch("nodes", self.opts.node_name, {"status": self.node_status()},
                                     subresource="status")
                self.apply_pod_cidr(node)
                return
            except (ApiError, aiohttp.ClientError, OSError) as e:
                log.warning("registering node %s: %s", self.opts.node_name, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 7.0)

    def apply_pod_cidr(self, node: Obj) -> None:
        """spec.podCIDR (from the control plane's node IPAM) becomes this node's pod subnet,
        when no pod of this node is using the network yet."""
        import json

        cidr = (node.get("spec") or {}).get("podCIDR")
        if not cidr or self.records:
            return
        conf = self.opts.data_dir / "net.d" / "default.conf"
        try:
            data = json.loads(conf.read_text())
        except (FileNotFoundError, ValueError):
            data = {}
        if data.get("subnet") != cidr:
            data["subnet"] = cidr
            conf.parent.mkdir(parents=True, exist_ok=True)
            conf.write_text(json.dumps(data))

    async def lease_loop(self) -> None:
        assert self.api is not None
        name = self.opts.node_name
        while True:
            try:
                renew = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                spec = {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": renew}
                try:
                    lease = await self.api.get("leases", name, namespace=LEASE_NAMESPACE)
                    lease["spec"] = {**(lease.get("spec") or {}), **spec}
                    await self.api.update("leases", lease)
                except ApiError as e:
                    if e.code != 404:
                        raise
                    await self.api.create("leases", {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                                     "metadata": {"name": name, "namespace": LEASE_NAMESPACE},
                                                     "spec": spec})
            except (ApiError, aiohttp.ClientError, OSError) as e:
                log.warning("lease renewal: %s", e)
            await asyncio.sleep(self.opts.lease_interval)

    async def node_status_loop(self) -> None:
        assert self.api is not None
        while True:
            await asyncio.sleep(self.opts.status_interval)
            try:
                node = await self.api.patch("nodes", self.opts.node_name, {"status": self.node_status()},
                                            subresource="status")
                self.apply_pod_cidr(node)
            except ApiError as e:
                if e.code == 404:
                    await self.register()
                else:
                    log.warning("node status: %s", e)
            except (aiohttp.ClientError, OSError) as e:
                log.warning("node status: %s", e)

    # -- desired pods

    async def watch_loop(self) -> None:
        assert self.api is not None
        selector = f"spec.nodeName={self.opts.node_name}"
        while True:
            try:
                listed = await self.api.list("pods", field_selector=selector)
                self.desired = {core.uid_of(p): p for p in listed.get("items") or []}
                rv = str((listed.get("metadata") or {}).get("resourceVersion", ""))
                self.listed.set()
                self.wake.set()
                async for event in self.api.watch("pods", resource_version=rv, field_selector=selector,
                                                  timeout_seconds=300):
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        break
                    if kind == "BOOKMARK":
                        continue
                    uid = core.uid_of(obj)
                    if kind == "DELETED":
                        self.desired.pop(uid, None)
                    else:
                        self.desired[uid] = obj
                    self.wake.set()
            except (ApiError, aiohttp.ClientError, OSError, ValueError) as e:
                log.warning("pod watch: %s", e)
                await asyncio.sleep(1)

    # -- reconcile

    async def reconcile_loop(self) -> None:
        await self.listed.wait()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.opts.sync_interval)
            self.wake.clear()
            try:
                await self.sync_once()
            except Exception:
                log.exception("sync")

    def views(self, pod: Obj | None, rec: PodRecord | None) -> dict[str, ProbeView]:
        out: dict[str, ProbeView] = {}
        if pod is None or rec is None:
            return out
        for c in core.containers_of(pod):
            name = c.get("name", "")
            crec = rec.containers.get(name)
            if crec is None or crec.uuid is None:
                continue
            if crec.uuid not in self.seeded:
                self.seeded.add(crec.uuid)
                obs = self.observed.get(crec.uuid)
                if obs is not None and obs.started is not None and obs.started < self.started_at:
                    reported = next((cs for cs in (pod.get("status") or {}).get("containerStatuses") or []
                                     if cs.get("containerID") == f"gifee://{crec.uuid}"), None)
                    for kind, st in core.adopted_probe_states(reported).items():
                        self.probes.setdefault((crec.uuid, name, kind), st)
            states = {k: self.probes.get((crec.uuid, name, k), ProbeState())
                      for k in ("startup", "liveness", "readiness")}
            out[name] = core.probe_view(c, states)
        return out

    def blocked(self, a: Action) -> bool:
        if (a.uid, "*") in self.inflight:
            return True
        if a.key[1] == "*":
            return any(k[0] == a.uid for k in self.inflight)
        return a.key in self.inflight

    async def sync_once(self) -> None:
        self.observed = await self.blocking(self.runtime.observe)
        now = _now()
        ended = False
        for kept in self.records.values():  # remember how attempts ended: their runtime pods may be collected
            for crec in kept.containers.values():
                obs = self.observed.get(crec.uuid) if crec.uuid else None
                if obs is not None and not obs.running and crec.final is None:
                    crec.final = core.final_of(obs)
                    ended = True
        if ended:
            self.save()
        for uid in set(self.desired) | set(self.records):
            pod, rec = self.desired.get(uid), self.records.get(uid)
            views = self.views(pod, rec)
            for a in core.plan_pod(pod, rec, self.observed, now, self.cfg, views):
                if self.blocked(a):
                    continue
                if a.kind in ("start", "start-sandbox"):
                    failed = self.start_failures.get((uid, a.container or "*"))
                    if failed is not None and failed[1] > now:
                        continue
                self.spawn(a)
            if pod is not None and rec is not None and (uid, "*") not in self.inflight:
                self.write_status(pod, rec, views)
                for name, failed_attempt, left in core.backing_off(pod, rec, self.observed, now, self.cfg):
                    if failed_attempt not in self.backoff_noted:
                        self.backoff_noted.add(failed_attempt)
                        self.event(rec, name, "Warning", "BackOff",
                                   f"Back-off {left:.0f}s restarting failed container={name} pod={rec.name}")

    def spawn(self, a: Action) -> None:
        handler: Callable[[Action], Awaitable[None]] = getattr(self, "do_" + a.kind.replace("-", "_"))

        async def run() -> None:
            try:
                await handler(a)
            except Exception:
                log.exception("%s %s %s", a.kind, a.uid, a.container)
            finally:
                self.inflight.pop(a.key, None)
                self.wake.set()

        self.inflight[a.key] = asyncio.create_task(run())

    # -- actions

    async def fetch_refs(self, pod: Obj) -> tuple[dict[str, Obj], dict[str, Obj]]:
        assert self.api is not None
        ns = (pod.get("metadata") or {}).get("namespace", "default")
        cm_names, secret_names = specs.references(pod)
        cms: dict[str, Obj] = {}
        secrets: dict[str, Obj] = {}
        for names, plural, out in ((cm_names, "configmaps", cms), (secret_names, "secrets", secrets)):
            for n in names:
                try:
                    out[n] = await self.api.get(plural, n, namespace=ns)
                except ApiError as e:
                    if e.code != 404:
                        raise
        return cms, secrets

    async def do_start_sandbox(self, a: Action) -> None:
        pod = self.desired.get(a.uid)
        if pod is None:
            return
        meta = pod.get("metadata") or {}
        rec = self.records.get(a.uid)
        if rec is None:
            rec = PodRecord(a.uid, meta.get("namespace", "default"), meta.get("name", ""), start_time=_now())
            rec.containers = {c.get("name", ""): ContainerRecord()
                              for c in core.init_containers_of(pod) + core.containers_of(pod)}
            self.records[a.uid] = rec
        old = rec.sandbox
        if old:  # the sandbox died: its containers go with it (they restart by the policy)
            for crec in rec.containers.values():
                if crec.uuid and self.observed.get(crec.uuid, Observed("", False)).running:
                    await self.blocking(self.runtime.stop, crec.uuid, 0.0)
        try:
            cms, secrets = await self.fetch_refs(pod)
            volumes = specs.volume_plan(pod, self.pods_dir / a.uid, cms, secrets)
            await self.blocking(prepare_volumes, volumes)
            hostname = str(pod.get("spec", {}).get("hostname") or meta.get("name", ""))[:63]
            uuid, _ = await self.launching(1, self.runtime.launch_sandbox, hostname,
                                           {"uid": a.uid, "container": ""}, specs.host_network(pod))
        except Exception as e:
            config = isinstance(e, (specs.ConfigError, ApiError))
            for crec in rec.containers.values():
                if crec.uuid is None:
                    crec.error_reason = "CreateContainerConfigError" if config else "ContainerCreating"
                    crec.error = str(e)
            count = self.start_failures.get((a.uid, "*"), (0, 0.0))[0] + 1
            self.start_failures[(a.uid, "*")] = (count, _now() + max(1.0, core.backoff_delay(count, self.cfg)))
            self.event(rec, "", "Warning", "FailedMount" if config else "FailedCreatePodSandBox", str(e))
            log.warning("pod %s/%s: no sandbox: %s", rec.namespace, rec.name, e)
            return
        self.start_failures.pop((a.uid, "*"), None)
        rec.sandbox = uuid
        self.save()
        self.runtime.untag(uuid)
        if old:
            await self.blocking(self.runtime.remove, old)
        self.observed = await self.blocking(self.runtime.observe)

    async def do_start(self, a: Action) -> None:
        pod, rec = self.desired.get(a.uid), self.records.get(a.uid)
        if pod is None or rec is None or rec.sandbox is None:
            return
        container = next((c for c in core.init_containers_of(pod) + core.containers_of(pod)
                          if c.get("name") == a.container), None)
        if container is None:
            return
        crec = rec.containers.setdefault(a.container, ContainerRecord())
        sandbox = self.observed.get(rec.sandbox)
        pod_ip = (sandbox.ip if sandbox else None) or (self.opts.node_ip if specs.host_network(pod) else "")
        try:
            cms, secrets = await self.fetch_refs(pod)
            volumes = specs.volume_plan(pod, self.pods_dir / a.uid, cms, secrets)
            opts = specs.container_options(pod, container, {}, volumes, cms, secrets, pod_ip, self.opts.node_ip)
            hostname = str(pod.get("spec", {}).get("hostname") or rec.name)[:63]
            dns = specs.dns_settings(pod, self.opts.cluster_dns, self.opts.cluster_domain)
            spec, image = await self.blocking(self.runtime.container_spec, rec.sandbox, hostname, opts, dns)
            uuid = await self.launching(0, self.runtime.launch, spec, image, {"uid": a.uid, "container": a.container})
        except (specs.ConfigError, ImageError, Exception) as e:
            reason = ("CreateContainerConfigError" if isinstance(e, specs.ConfigError)
                      else e.reason if isinstance(e, ImageError) else "RunContainerError")
            count = self.start_failures.get((a.uid, a.container), (0, 0.0))[0] + 1
            delay = core.backoff_delay(count, self.cfg)
            self.start_failures[(a.uid, a.container)] = (count, _now() + delay)
            if crec.uuid is None:
                crec.error_reason, crec.error = reason, str(e)
            log.warning("pod %s/%s container %s: %s: %s", rec.namespace, rec.name, a.container, reason, e)
            self.event(rec, a.container, "Warning", "Failed", f"Error: {reason}: {e}")
            return
        self.start_failures.pop((a.uid, a.container), None)
        self.event(rec, a.container, "Normal", "Started", f"Started container {a.container} (gifee://{uuid})")
        old = crec.uuid
        if old is not None:
            crec.last_state = core.terminated_state(self.observed.get(old), old)
            crec.restart_count += 1
            if crec.previous:
                await self.blocking(self.runtime.remove, crec.previous)
            crec.previous = old
        crec.uuid = uuid
        crec.final = None
        crec.image = str(container.get("image", ""))
        crec.image_id = image.manifest_digest
        crec.error = crec.error_reason = ""
        self.save()
        self.runtime.untag(uuid)
        self.observed = await self.blocking(self.runtime.observe)

    async def do_kill(self, a: Action) -> None:
        rec = self.records.get(a.uid)
        if rec is None or a.container not in rec.containers:
            return
        crec = rec.containers[a.container]
        if crec.uuid:
            log.info("pod %s/%s container %s: %s, killing it", rec.namespace, rec.name, a.container, a.reason)
            self.event(rec, a.container, "Normal", "Killing",
                       f"Container {a.container} {a.reason}, will be restarted")
            await self.blocking(self.runtime.stop, crec.uuid, a.grace)

    async def do_terminate(self, a: Action) -> None:
        rec = self.records.get(a.uid)
        if rec is None:
            return
        for name, crec in rec.containers.items():
            if crec.uuid and self.observed.get(crec.uuid, Observed("", False)).running:
                self.event(rec, name, "Normal", "Killing", f"Stopping container {name}")
        pod = self.desired.get(a.uid)
        specs_by_name = {c.get("name"): c for c in core.containers_of(pod)} if pod is not None else {}
        deadline = time.monotonic() + a.grace

        async def stop_one(name: str, crec: ContainerRecord) -> None:
            if not crec.uuid or not self.runtime.is_running(crec.uuid):
                return
            hook = ((specs_by_name.get(name) or {}).get("lifecycle") or {}).get("preStop") or {}
            if "exec" in hook and a.grace > 0:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.exec_in(crec.uuid, list(hook["exec"].get("command") or [])),
                                           max(0.1, deadline - time.monotonic()))
            await self.blocking(self.runtime.stop, crec.uuid, max(0.0, deadline - time.monotonic()))

        await asyncio.gather(*(stop_one(n, c) for n, c in rec.containers.items()))
        if rec.sandbox:
            await self.blocking(self.runtime.stop, rec.sandbox, 0.0)

    async def do_stop_sandbox(self, a: Action) -> None:
        rec = self.records.get(a.uid)
        if rec is not None and rec.sandbox:
            await self.blocking(self.runtime.stop, rec.sandbox, 0.0)

    async def cleanup(self, uid: str) -> None:
        rec = self.records.get(uid)
        if rec is not None:
            for u in rec.uuids():
                await self.blocking(self.runtime.remove, u)
        await self.blocking(remove_pod_dir, self.pods_dir / uid)
        self.records.pop(uid, None)
        self.written.pop(uid, None)
        self.save()

    async def do_finalize(self, a: Action) -> None:
        assert self.api is not None
        pod = self.desired.get(a.uid)
        await self.cleanup(a.uid)
        if pod is not None:
            meta = pod.get("metadata") or {}
            with contextlib.suppress(ApiError):
                await self.api.delete("pods", meta.get("name", ""), namespace=meta.get("namespace", ""),
                                      options={"gracePeriodSeconds": 0, "preconditions": {"uid": a.uid}})

    async def do_forget(self, a: Action) -> None:
        await self.cleanup(a.uid)

    async def volume_refresh_loop(self) -> None:
        """configMap and secret volumes of running pods follow their sources (files are
        replaced atomically; a subPath mount keeps what it got, as in Kubernetes)."""
        while True:
            await asyncio.sleep(self.opts.volume_refresh)
            for uid, pod in list(self.desired.items()):
                rec = self.records.get(uid)
                if rec is None or core.is_deleting(pod) or any(k[0] == uid for k in self.inflight):
                    continue
                if not any("configMap" in v or "secret" in v for v in (pod.get("spec") or {}).get("volumes") or []):
                    continue
                try:
                    cms, secrets = await self.fetch_refs(pod)
                    plan = [v for v in specs.volume_plan(pod, self.pods_dir / uid, cms, secrets)
                            if v.kind in ("configMap", "secret")]
                    await self.blocking(prepare_volumes, plan)
                except (specs.ConfigError, ApiError, aiohttp.ClientError, OSError) as e:
                    log.warning("refreshing volumes of %s/%s: %s", rec.namespace, rec.name, e)

    # -- events

    def event(self, rec: PodRecord, container: str, kind: str, reason: str, message: str) -> None:
        """A core/v1 Event about a pod's container, as the kubelet records them (best effort)."""
        if self.api is None:
            return
        stamp = core.rfc3339(_now())
        body = {"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": f"{rec.name}.{time.time_ns():x}", "namespace": rec.namespace},
                "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": rec.namespace, "name": rec.name,
                                   "uid": rec.uid, **({"fieldPath": f"spec.containers{{{container}}}"}
                                                       if container else {})},
                "type": kind, "reason": reason, "message": message, "count": 1, "firstTimestamp": stamp,
                "lastTimestamp": stamp, "source": {"component": "kubelet", "host": self.opts.node_name},
                "reportingComponent": "kubelet", "reportingInstance": self.opts.node_name}
        api = self.api

        async def post() -> None:
            with contextlib.suppress(ApiError, aiohttp.ClientError, OSError):
                await api.create("events", body, namespace=rec.namespace)

        task = asyncio.create_task(post())
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    # -- status

    def write_status(self, pod: Obj, rec: PodRecord, views: dict[str, ProbeView]) -> None:
        uid = rec.uid
        base = dict(pod)
        if uid in self.written:
            base = {**pod, "status": self.written[uid]}
        status = core.pod_status(base, rec, self.observed, _now(), self.cfg, host_ip=self.opts.node_ip, views=views)
        if not core.status_differs(self.written.get(uid) or (pod.get("status") or {}), status):
            return
        if uid in self.status_tasks:
            return  # the next sync writes the newest status
        self.written[uid] = status
        meta = pod.get("metadata") or {}

        async def write() -> None:
            assert self.api is not None
            try:
                await self.api.patch("pods", meta.get("name", ""), {"status": status},
                                     namespace=meta.get("namespace", ""), subresource="status")
            except (ApiError, aiohttp.ClientError, OSError) as e:
                log.warning("status of %s/%s: %s", meta.get("namespace"), meta.get("name"), e)
                self.written.pop(uid, None)
            finally:
                self.status_tasks.pop(uid, None)
                self.wake.set()  # a newer status may have waited for this write

        self.status_tasks[uid] = asyncio.create_task(write())

    # -- probes

    async def probe_loop(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            now = _now()
            live_attempts = set()
            for uid, pod in list(self.desired.items()):
                rec = self.records.get(uid)
                if rec is None or core.is_deleting(pod):
                    continue
                views = self.views(pod, rec)
                for c in core.containers_of(pod):
                    name = c.get("name", "")
                    crec = rec.containers.get(name)
                    if crec is None or crec.uuid is None:
                        continue
                    obs = self.observed.get(crec.uuid)
                    if obs is None or not obs.running or obs.started is None:
                        continue
                    live_attempts.add(crec.uuid)
                    for kind in core.probes_to_run(c, views.get(name, ProbeView())):
                        key = (crec.uuid, name, kind)
                        probe = c[f"{kind}Probe"]
                        if key in self.probing or not core.probe_due(probe, self.probes.get(key, ProbeState()),
                                                                      obs.started, now):
                            continue
                        self.probing.add(key)
                        asyncio.create_task(self.run_probe(key, kind, probe, c, rec))
            for key in [k for k in self.probes if k[0] not in live_attempts]:
                del self.probes[key]

    async def run_probe(self, key: tuple[str, str, str], kind: str, probe: Obj, container: Obj,
                        rec: PodRecord) -> None:
        try:
            _, _, timeout, _, _ = core.probe_params(probe)
            sandbox = self.observed.get(rec.sandbox or "")
            ip = (sandbox.ip if sandbox else None) or "127.0.0.1"
            try:
                ok = await asyncio.wait_for(self.probe_once(probe, container, key[0], ip), timeout)
            except (TimeoutError, OSError, aiohttp.ClientError):
                ok = False
            before = self.probes.get(key, ProbeState())
            after = core.probe_record(kind, probe, before, ok, _now())
            self.probes[key] = after
            if not ok:
                self.event(rec, key[1], "Warning", "Unhealthy", f"{kind.capitalize()} probe failed")
            if after.result != before.result:
                self.wake.set()
        finally:
            self.probing.discard(key)

    async def probe_once(self, probe: Obj, container: Obj, uuid: str, ip: str) -> bool:
        def port_of(value: Any) -> int:
            if isinstance(value, int) or str(value).isdigit():
                return int(value)
            for p in container.get("ports") or []:
                if p.get("name") == value:
                    return int(p["containerPort"])
            raise OSError(f"no port named {value}")

        if "httpGet" in probe:
            h = probe["httpGet"]
            host = h.get("host") or ip
            url = f"{str(h.get('scheme') or 'HTTP').lower()}://{host}:{port_of(h.get('port'))}{h.get('path') or '/'}"
            headers = {x["name"]: x["value"] for x in h.get("httpHeaders") or []}
            async with aiohttp.ClientSession() as s, s.get(url, headers=headers, allow_redirects=False) as r:
                return 200 <= r.status < 400
        if "tcpSocket" in probe:
            t = probe["tcpSocket"]
            _, writer = await asyncio.open_connection(t.get("host") or ip, port_of(t.get("port")))
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True
        if "exec" in probe:
            return await self.exec_in(uuid, list(probe["exec"].get("command") or [])) == 0
        return True

    async def exec_in(self, uuid: str, command: list[str]) -> int:
        """Run a command in a running container (no input; output discarded); its exit code."""
        proc = await self.spawn_in(uuid, command, stdin=False)
        try:
            return await proc.wait()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            raise

    async def spawn_in(self, uuid: str, command: list[str], *, stdin: bool, capture: bool = False) -> Entered:
        """A command in a running container (enter.py), with pipes as asked."""
        found = self.runtime.spec_of(uuid)
        if found is None:
            raise OSError(f"container {uuid} is not running")
        spec, pid = found
        return await enter.spawn(uuid, pid, spec, command, stdin=stdin, capture=capture)

    async def spawn_tty(self, uuid: str, command: list[str]) -> tuple[Entered, int]:
        """A command in a running container on a new terminal; (process, the terminal's master)."""
        found = self.runtime.spec_of(uuid)
        if found is None:
            raise OSError(f"container {uuid} is not running")
        spec, pid = found
        return enter.spawn_tty(uuid, pid, spec, command)


def default_node_ip() -> str:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"
