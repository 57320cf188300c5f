"""The control plane at scale: N hollow nodes, R replication controllers, P pods; time until every
pod is bound and Running, and single-object API latency meanwhile.

The seed's scale test (Kubernetes 1.3, 2016): 30,000 pods on 1,000 nodes. Targets: all Running in
under 60 s (>= 500 pods/s end to end) and p99 of single-object API calls under 1 s.

    python3 benchmarks/controlplane_bench.py [--nodes 1000] [--pods 30000] [--rcs 300]
        [--store gifee|etcd] [--json out.json] [--keep-logs]

Processes (each in its own session, all on 127.0.0.1, in one temp dir removed at the end):
  store          `gifee store` (or Debian's /usr/bin/etcd with --store etcd)
  apiserver      `gifee apiserver --etcd-servers ...`
  scheduler      `gifee scheduler`
  controllers    `gifee controller-manager`
  hollow nodes   `gifee hollow-node --count N`
The benchmark waits for N Ready nodes, then creates R RCs of P/R replicas each (pause pods, no
requests) and starts the clock. It counts pods from one watch of pods with
fieldSelector=status.phase=Running (one event per pod that starts, not every write), and stops the
clock when P distinct pods have been seen Running on a node. Meanwhile a probe makes, every 100 ms,
one GET and one PUT of a ConfigMap and one GET of a Node (sequentially, its own connection), and
reports p50/p99/max of each. CPU seconds used by every process during the run are reported too,
which tells which one is the bottleneck on this 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gifee.api.client import ApiClient  # noqa: E402
from gifee.api.errors import ApiError  # noqa: E402
from tests.procgroup import stop_group  # noqa: E402

HOST = "127.0.0.1"
PYTHON = [sys.executable, "-m", "gifee"]
ETCD = "/usr/bin/etcd"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its reaped children, plus its live descendants (store workers)."""
    total = 0.0
    pids = [pid]
    seen: set[int] = set()
    while pids:
        p = pids.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15]) / CLK_TCK
            for task in Path(f"/proc/{p}/task").iterdir():
                children = (task / "children").read_text().split()
                pids.extend(int(c) for c in children)
        except (OSError, ValueError):
            continue
    return total


@dataclass
class Proc:
    name: str
    cmd: list[str]
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "ETCDCTL_"))}
        env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent / "src")
        env.update(self.env)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True, cwd=self.workdir)

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid) if self.proc is not None else 0.0

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        stop_group(proc, grace=5.0)  # the group (store workers too), never a reused process group id


def store_cmd(kind: str, data_dir: Path, client: int, peer: int, grpc_workers: int) -> list[str]:
    cu, pu = f"http://{HOST}:{client}", f"http://{HOST}:{peer}"
    flags = ["--name", "bench", "--data-dir", str(data_dir), "--listen-client-urls", cu, "--advertise-client-urls",
             cu, "--listen-peer-urls", pu, "--initial-advertise-peer-urls", pu, "--initial-cluster", f"bench={pu}"]
    if kind == "etcd":
        return [ETCD, *flags, "--quota-backend-bytes", str(8 * 1024 ** 3)]
    return [*PYTHON, "store", *flags, "--grpc-workers", str(grpc_workers),
            "--quota-backend-bytes", str(8 * 1024 ** 3)]


def rc_body(i: int, replicas: int) -> dict[str, Any]:
    labels = {"app": f"bench-{i}"}
    return {"apiVersion": "v1", "kind": "ReplicationController",
            "metadata": {"name": f"bench-{i}", "namespace": "default"},
            "spec": {"replicas": replicas, "selector": labels,
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.9"}]}}}}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


class Probe:
    """Single-object calls every `interval` seconds on its own connection: GET+PUT configmap, GET node."""

    def __init__(self, server: str, node: str, interval: float = 0.1) -> None:
        self.server, self.node, self.interval = server, node, interval
        self.samples: dict[str, list[float]] = {"GET configmap": [], "PUT configmap": [], "GET node": []}
        self.errors = 0

    async def run(self, stop: asyncio.Event) -> None:
        async with ApiClient(self.server) as api:
            cm = await api.create("configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                                                 "metadata": {"name": "bench-probe"}, "data": {"n": "0"}},
                                  namespace="default")
            n = 0
            while not stop.is_set():
                t_next = time.monotonic() + self.interval
                try:
                    t0 = time.monotonic()
                    cm = await api.get("configmaps", "bench-probe", namespace="default")
                    t1 = time.monotonic()
                    n += 1
                    cm["data"] = {"n": str(n)}
                    cm = await api.update("configmaps", cm)
                    t2 = time.monotonic()
                    await api.get("nodes", self.node)
                    t3 = time.monotonic()
                    self.samples["GET configmap"].append(t1 - t0)
                    self.samples["PUT configmap"].append(t2 - t1)
                    self.samples["GET node"].append(t3 - t2)
                except (TimeoutError, ApiError, OSError) as e:
                    self.errors += 1
                    print(f"probe: {e}", file=sys.stderr)
                delay = t_next - time.monotonic()
                if delay > 0:
                    try:
                        await asyncio.wait_for(stop.wait(), delay)
                    except TimeoutError:
                        pass

    def summary(self) -> dict[str, dict[str, float]]:
        return {k: {"n": len(v), "p50_ms": percentile(v, 0.5) * 1000, "p99_ms": percentile(v, 0.99) * 1000,
                    "max_ms": max(v, default=float("nan")) * 1000} for k, v in self.samples.items()}


async def wait_nodes(api: ApiClient, count: int, procs: list[Proc], timeout: float) -> float:
    t0 = time.monotonic()
    while True:
        for p in procs:
            p.check()
        try:
            nodes = await api.list("nodes")
            ready = sum(1 for n in nodes.get("items") or []
                        for c in (n.get("status") or {}).get("conditions") or []
                        if c.get("type") == "Ready" and c.get("status") == "True")
            if ready >= count:
                return time.monotonic() - t0
        except (ApiError, OSError):
            pass
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"only some of {count} nodes became Ready within {timeout:.0f} s")
        await asyncio.sleep(1.0)


async def wait_api(server: str, procs: list[Proc], timeout: float) -> None:
    t0 = time.monotonic()
    async with ApiClient(server, timeout=2) as api:
        while True:
            for p in procs:
                p.check()
            try:
                await api.get("namespaces", "default")
                return
            except (TimeoutError, ApiError, OSError):
                pass
            if time.monotonic() - t0 > timeout:
                raise RuntimeError("the API server did not answer")
            await asyncio.sleep(0.3)


async def measure(args: argparse.Namespace, server: str, procs: list[Proc]) -> dict[str, Any]:
    per_rc = args.pods // args.rcs
    total = per_rc * args.rcs
    async with ApiClient(server, timeout=120) as api:
        print(f"waiting for {args.nodes} Ready nodes ...", flush=True)
        nodes_s = await wait_nodes(api, args.nodes, procs, args.timeout)
        print(f"{args.nodes} nodes Ready after {nodes_s:.1f} s", flush=True)
        idle: dict[str, float] = {}
        if args.idle > 0:
            # the nodes' own traffic (leases, node checks, controllers' resyncs) without pods: its CPU per
            # second, subtracted from the run's to tell what the pods cost on a loaded, noisy machine
            c0, t0 = {p.name: p.cpu() for p in procs}, time.monotonic()
            await asyncio.sleep(args.idle)
            c1, dt_idle = {p.name: p.cpu() for p in procs}, time.monotonic() - t0
            idle = {k: (c1[k] - c0[k]) / dt_idle for k in c1}
            print("idle CPU per second: " + ", ".join(f"{k} {v:.2f}" for k, v in idle.items()), flush=True)
        listing = await api.list("pods", namespace="default", limit=1)
        rv = str(listing["metadata"]["resourceVersion"])
        rv_start = int(rv)
        stop = asyncio.Event()
        probe = Probe(server, "hollow-node-0")
        probe_task = asyncio.create_task(probe.run(stop))
        running: set[str] = set()
        bound_at: list[float] = []
        done = asyncio.Event()
        t_start = time.monotonic()

        async def watch() -> None:
            nonlocal rv
            while not done.is_set():
                try:
                    async for ev in api.watch("pods", namespace="default", resource_version=rv,
                                              field_selector="status.phase=Running", timeout_seconds=600):
                        obj = ev.get("object") or {}
                        new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                        if ev.get("type") == "ERROR":
                            raise RuntimeError(f"watch: {obj}")
                        if new_rv:
                            rv = str(new_rv)
                        if ev.get("type") in ("ADDED", "MODIFIED") and (obj.get("spec") or {}).get("nodeName"):
                            name = obj["metadata"]["name"]
                            if name not in running:
                                running.add(name)
                                bound_at.append(time.monotonic() - t_start)
                                if len(running) >= total:
                                    done.set()
                                    return
                except (aiohttp_errors()) as e:
                    print(f"watch: {e}; again from {rv}", file=sys.stderr)

        watch_task = asyncio.create_task(watch())
        await asyncio.sleep(0.2)  # the watch is registered before the first pod appears
        cpu0 = {p.name: p.cpu() for p in procs}
        t_start = time.monotonic()
        sem = asyncio.Semaphore(8)

        async def create(i: int) -> None:
            async with sem:
                await api.create("replicationcontrollers", rc_body(i, per_rc), namespace="default")

        await asyncio.gather(*(create(i) for i in range(args.rcs)))
        created_s = time.monotonic() - t_start
        print(f"{args.rcs} RCs created in {created_s:.2f} s; waiting for {total} pods Running", flush=True)
        last_report = time.monotonic()
        last_cpu, last_running = dict(cpu0), 0
        while not done.is_set():
            try:
                await asyncio.wait_for(done.wait(), 1.0)
            except TimeoutError:
                pass
            for p in procs:
                p.check()
            if watch_task.done() and not done.is_set():
                watch_task.result()
            elapsed = time.monotonic() - t_start
            if time.monotonic() - last_report >= args.progress:
                last_report = time.monotonic()
                # CPU ms per pod that started in this interval, per process: where a slowdown comes from
                cpu_now = {p.name: p.cpu() for p in procs}
                started = len(running) - last_running
                per = ", ".join(f"{k} {(cpu_now[k] - last_cpu[k]) * 1000 / max(started, 1):.1f}" for k in cpu_now)
                print(f"  {elapsed:6.1f} s: {len(running)} Running (+{started}; CPU ms per pod: {per})", flush=True)
                last_cpu, last_running = cpu_now, len(running)
            if elapsed > args.timeout:
                break
        elapsed = time.monotonic() - t_start
        cpu1 = {p.name: p.cpu() for p in procs}
        # store revisions during the run: every write (pods, bindings, statuses, leases, RC statuses)
        end = await api.list("pods", namespace="default", limit=1)
        writes = int(end["metadata"]["resourceVersion"]) - rv_start
        stop.set()
        await probe_task
        watch_task.cancel()
        await asyncio.gather(watch_task, return_exceptions=True)
    finished = len(running) >= total
    milestones = {f"t{int(q * 100)}_s": round(bound_at[int(q * total) - 1], 2)
                  for q in (0.1, 0.5, 0.9, 1.0) if len(bound_at) >= int(q * total) > 0}
    return {
        "nodes": args.nodes, "rcs": args.rcs, "pods": total, "store": args.store,
        "finished": finished, "running": len(running), "seconds": round(elapsed, 2),
        "pods_per_s": round(len(running) / elapsed, 1), "nodes_ready_s": round(nodes_s, 1),
        "rc_create_s": round(created_s, 2), "milestones": milestones,
        "latency": probe.summary(), "probe_errors": probe.errors,
        "cpu_s": {k: round(cpu1[k] - cpu0[k], 1) for k in cpu1},
        "store_writes": writes, "writes_per_pod": round(writes / max(len(running), 1), 2),
        "idle_cpu_per_s": {k: round(v, 3) for k, v in idle.items()},
    }


def aiohttp_errors() -> tuple[type[BaseException], ...]:
    import aiohttp
    return (aiohttp.ClientError, TimeoutError, ConnectionError)


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="gifee-cpbench-"))
    procs: list[Proc] = []

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        client, peer, api_port = free_port(), free_port(), free_port()
        store = Proc("store", store_cmd(args.store, workdir / "store", client, peer, args.store_grpc_workers), workdir)
        store.start()
        procs.append(store)
        server = f"http://{HOST}:{api_port}"
        master = ["--master", server]
        procs.append(Proc("apiserver", [*PYTHON, "apiserver", "--etcd-servers", f"http://{HOST}:{client}",
                                        "--insecure-port", str(api_port), "--log-level", "warn"], workdir))
        procs[-1].start()
        asyncio.run(wait_api(server, procs, 60))
        procs.append(Proc("scheduler", [*PYTHON, "scheduler", *master, "--v", "0"], workdir))
        procs.append(Proc("controllers", [*PYTHON, "controller-manager", *master, "--v", "0"], workdir))
        per = -(-args.nodes // args.hollow_procs)
        for i in range(args.hollow_procs):
            count = min(per, args.nodes - i * per)
            if count > 0:
                procs.append(Proc(f"hollow{i}", [*PYTHON, "hollow-node", *master, "--count", str(count),
                                                 "--start-index", str(i * per), "--v", "0",
                                                 "--name-prefix", "hollow-node-"], workdir))
        for p in procs[2:]:
            p.start()
        result = asyncio.run(measure(args, server, procs))
        return result
    finally:
        for p in reversed(procs):
            p.stop()
        if args.keep_logs:
            print(f"logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def report(r: dict[str, Any]) -> None:
    verdict = "met" if r["finished"] and r["pods_per_s"] >= 500 else "NOT met"
    print(f"\n{r['pods']} pods ({r['rcs']} RCs) on {r['nodes']} hollow nodes, store {r['store']}: "
          f"{'all' if r['finished'] else r['running']} Running in {r['seconds']:.1f} s = {r['pods_per_s']:.0f} pods/s"
          f" (>= 500 pods/s, i.e. 30,000 in < 60 s: {verdict})")
    print(f"  milestones: {r['milestones']}; RCs created in {r['rc_create_s']} s; nodes Ready in "
          f"{r['nodes_ready_s']} s")
    worst = 0.0
    for k, v in r["latency"].items():
        worst = max(worst, v["p99_ms"])
        print(f"  {k:14s} n={v['n']:5d} p50 {v['p50_ms']:7.1f} ms  p99 {v['p99_ms']:7.1f} ms  max {v['max_ms']:7.1f} ms")
    print(f"  API p99 < 1 s: {'met' if worst < 1000 else 'NOT met'}; probe errors: {r['probe_errors']}")
    print("  CPU seconds during the run: " + ", ".join(f"{k} {v}" for k, v in r["cpu_s"].items()))
    running = max(r["running"], 1)
    print("  CPU ms per Running pod: " + ", ".join(f"{k} {v * 1000 / running:.1f}" for k, v in r["cpu_s"].items()))
    if r["idle_cpu_per_s"]:
        print("  CPU ms per Running pod beyond the idle nodes' rate: " + ", ".join(
            f"{k} {(v - r['idle_cpu_per_s'][k] * r['seconds']) * 1000 / running:.1f}" for k, v in r["cpu_s"].items()))
    print(f"  store writes during the run: {r['store_writes']} ({r['writes_per_pod']} per Running pod)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--pods", type=int, default=30000)
    p.add_argument("--rcs", type=int, default=300)
    p.add_argument("--store", choices=["gifee", "etcd"], default="gifee")
    p.add_argument("--store-grpc-workers", type=int, default=0,
                   help="gifee store --grpc-workers (0: gRPC in the store's core process; one client needs no more)")
    p.add_argument("--hollow-procs", type=int, default=1, help="processes to spread the hollow nodes over")
    p.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    p.add_argument("--progress", type=float, default=5.0, help="seconds between progress lines")
    p.add_argument("--idle", type=float, default=0.0,
                   help="first measure the nodes' CPU per second for this long without pods (0: skip)")
    p.add_argument("--json", default="", help="write the result here")
    p.add_argument("--keep-logs", action="store_true", help="keep the temp dir with the processes' logs")
    args = p.parse_args()
    if args.store == "etcd" and not Path(ETCD).exists():
        print(f"{ETCD} not found", file=sys.stderr)
        return 2
    result = run(args)
    report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    ok = result["finished"] and result["pods_per_s"] >= 500 and all(v["p99_ms"] < 1000 for v in result["latency"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
