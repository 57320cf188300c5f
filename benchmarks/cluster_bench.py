"""Compare a 3-member gifee store with a 3-member Debian etcd 3.4 on this machine.

Each round starts a fresh 3-member cluster of each (same flags, same
heartbeat and election timeouts, all on 127.0.0.1), runs the selected
workloads against both, the order flipping between rounds, and quotes the
median of per-round ratios gifee/etcd (see benchmarks/README.md):

- put: kvbench, 64 clients over all three endpoints;
- range: kvbench, linearizable ranges, 64 clients over all three endpoints;
- failover: SIGKILL the leader while one client writes through the two other
  members; the time from the kill until a write succeeds again.

    python benchmarks/cluster_bench.py [--rounds N] [--only put,range,failover] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from store_bench import (  # noqa: E402
    DEFAULT_KVBENCH,
    HOST,
    KVBENCH_TIMEOUT_S,
    SIZES,
    RunFailed,
    clean_env,
    ensure_kvbench,
    etcdctl,
    free_port,
    signal_group,
)

MEMBERS = 3
HEARTBEAT_MS = 100
ELECTION_MS = 1000
WORKLOADS = {
    "put": ("ops_per_sec", True, 0.5, f"-workload put -clients 64 -conns 4 -total 20000 {SIZES}"),
    "range": ("ops_per_sec", True, 0.25, f"-workload range -consistency l -clients 64 -total 30000 {SIZES}"),
    "failover": ("seconds", False, 1.0, ""),
}


@dataclass
class Member:
    name: str
    client: int
    peer: int
    proc: subprocess.Popen[bytes] | None = None


@dataclass
class Cluster:
    kind: str
    cmd: list[str]
    workdir: Path
    members: list[Member] = field(default_factory=list)

    def start(self) -> None:
        self.members = [Member(f"m{i}", free_port(), free_port()) for i in range(MEMBERS)]
        initial = ",".join(f"{m.name}=http://{HOST}:{m.peer}" for m in self.members)
        for m in self.members:
            self._spawn(m, initial)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all(etcdctl(m.client, "endpoint", "health", timeout=5).returncode == 0 for m in self.members):
                if self.leader() is not None:
                    return
            time.sleep(0.3)
        raise RunFailed(f"{self.kind} cluster not healthy: {self.log_tail()}")

    def _spawn(self, m: Member, initial: str) -> None:
        client_url, peer_url = f"http://{HOST}:{m.client}", f"http://{HOST}:{m.peer}"
        flags = [
            "--name", m.name, "--data-dir", str(self.workdir / m.name),
            "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", initial, "--initial-cluster-token", f"bench-{self.kind}",
            "--heartbeat-interval", str(HEARTBEAT_MS), "--election-timeout", str(ELECTION_MS),
        ]  # fmt: skip
        log = (self.workdir / f"{m.name}.log").open("ab")
        m.proc = subprocess.Popen(
            [*self.cmd, *flags], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=clean_env(), start_new_session=True,
        )  # fmt: skip

    def leader(self) -> Member | None:
        for m in self.members:
            if m.proc is None or m.proc.poll() is not None:
                continue
            out = etcdctl(m.client, "endpoint", "status", "-w", "json", timeout=5)
            if out.returncode != 0:
                continue
            status = json.loads(out.stdout)[0]["Status"]
            if status["leader"] == status["header"]["member_id"]:
                return m
        return None

    def endpoints(self) -> str:
        return ",".join(f"{HOST}:{m.client}" for m in self.members if m.proc is not None)

    def stop(self) -> None:
        for m in self.members:
            if m.proc is not None:
                signal_group(m.proc.pid, signal.SIGKILL)
                m.proc.wait(10)
                m.proc = None

    def log_tail(self) -> str:
        out = []
        for m in self.members:
            path = self.workdir / f"{m.name}.log"
            if path.exists():
                out.append(f"--- {m.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-8:]))
        return "\n".join(out)


def kvbench(binary: Path, endpoints: str, flags: str) -> dict[str, Any]:
    cmd = [str(binary), "-endpoints", endpoints, "-timeout", f"{KVBENCH_TIMEOUT_S}s", *flags.split()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=KVBENCH_TIMEOUT_S + 60)
    lines = out.stdout.strip().splitlines()
    if not lines:
        raise RunFailed(f"kvbench exit {out.returncode}: {out.stderr.strip()[-500:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    if out.returncode != 0:
        result["failed"] = f"kvbench exit {out.returncode}: {result.get('first_error', '')}"
    return result


def failover(cluster: Cluster) -> dict[str, Any]:
    leader = cluster.leader()
    if leader is None or leader.proc is None:
        raise RunFailed("no leader to kill")
    others = [m for m in cluster.members if m is not leader]
    endpoints = ",".join(f"{HOST}:{m.client}" for m in others)
    env = clean_env()
    # Short attempts, so that the figure is not rounded up to a whole attempt's timeout.
    put = ["etcdctl", "--endpoints", endpoints, "--dial-timeout", "200ms", "--command-timeout", "200ms", "put", "fo", "x"]
    if subprocess.run(put, capture_output=True, env=env, timeout=20).returncode != 0:
        raise RunFailed("writes fail before the kill")
    signal_group(leader.proc.pid, signal.SIGKILL)
    killed = time.monotonic()
    leader.proc.wait(10)
    leader.proc = None
    while time.monotonic() - killed < 30:
        if subprocess.run(put, capture_output=True, env=env, timeout=20).returncode == 0:
            return {"seconds": time.monotonic() - killed}
        time.sleep(0.02)
    raise RunFailed("no successful write within 30 s of killing the leader")


def run_one(kind: str, cmd: list[str], workload: str, binary: Path) -> dict[str, Any]:
    metric, _, _, flags = WORKLOADS[workload]
    with tempfile.TemporaryDirectory(prefix=f"cluster-bench-{kind}-") as tmp:
        cluster = Cluster(kind, cmd, Path(tmp))
        try:
            cluster.start()
            if workload == "failover":
                result = failover(cluster)
            else:
                result = kvbench(binary, cluster.endpoints(), flags)
            result["value"] = result[metric]
            return result
        finally:
            cluster.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="put,range,failover")
    parser.add_argument("--gifee-cmd", default="gifee store --grpc-workers 1")
    parser.add_argument("--etcd-cmd", default="etcd")
    parser.add_argument("--kvbench", type=Path, default=DEFAULT_KVBENCH)
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args(argv)
    ensure_kvbench(opts.kvbench)
    selected = [w.strip() for w in opts.only.split(",") if w.strip()]
    servers = {"etcd": opts.etcd_cmd.split(), "gifee": opts.gifee_cmd.split()}
    runs: list[dict[str, Any]] = []
    for rnd in range(1, opts.rounds + 1):
        for workload in selected:
            order = ["etcd", "gifee"] if rnd % 2 else ["gifee", "etcd"]
            for kind in order:
                try:
                    result = run_one(kind, servers[kind], workload, opts.kvbench)
                except RunFailed as e:
                    result = {"failed": str(e)[-800:]}
                result.update(round=rnd, workload=workload, server=kind)
                runs.append(result)
                shown = result.get("value", result.get("failed"))
                print(f"[round {rnd}] {workload:9s} {kind:5s} {shown}", flush=True)
    print("| workload | metric | etcd median | gifee median | ratio (median) | target | result |")
    print("|---|---|---|---|---|---|---|")
    summary = []
    for workload in selected:
        metric, higher, target, _ = WORKLOADS[workload]
        ratios, values = [], {"etcd": [], "gifee": []}
        for rnd in range(1, opts.rounds + 1):
            pair = {r["server"]: r for r in runs if r["round"] == rnd and r["workload"] == workload}
            if all(k in pair and "failed" not in pair[k] for k in ("etcd", "gifee")):
                ratios.append(pair["gifee"]["value"] / pair["etcd"]["value"])
                for k in values:
                    values[k].append(pair[k]["value"])
        if not ratios:
            print(f"| {workload} | {metric} | - | - | - | - | no complete round |")
            continue
        ratio = statistics.median(ratios)
        ok = ratio >= target if higher else ratio <= target
        bound = f"{'>=' if higher else '<='} {target}"
        em, gm = statistics.median(values["etcd"]), statistics.median(values["gifee"])
        print(
            f"| {workload} | {metric} | {em:.3g} | {gm:.3g} | {ratio:.3f} | {bound} | {'PASS' if ok else 'FAIL'} |"
        )
        summary.append({"workload": workload, "ratio": ratio, "etcd": em, "gifee": gm, "target": target})
    if opts.json:
        opts.json.write_text(json.dumps({"runs": runs, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("ETCDCTL_API", "3")
    sys.exit(main())
