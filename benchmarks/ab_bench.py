"""Two gifee builds head to head: alternating fresh servers, kvbench figures and CPU per request.

store_bench.py measures gifee against etcd; on a shared machine etcd's own figure
moves by 2x between runs, which hides a 10% change in gifee. This compares two
gifee source trees (or two sets of flags) directly: every round starts a fresh
server of each (order flips between rounds), runs one kvbench workload, and
records the kvbench figure and the CPU time (user + system) that the server's
whole process group used per request. It reports the medians and the median
of the per-round ratios B/A.

    python benchmarks/ab_bench.py --rounds 10 --workload put \\
        A=/tmp/before/src  B=/tmp/after/src
    python benchmarks/ab_bench.py --workload latency "A=src:--grpc-workers 0" "B=src:--grpc-workers 2"

A side is NAME=SRC[:FLAGS]: SRC goes on PYTHONPATH (a tree with generated
protobuf modules), FLAGS are added to `python -m gifee store`. `--data-root
/dev/shm/x` puts the data dirs on tmpfs, taking the disk's fsync out of the
figures (CPU-bound instead of fsync-bound).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KVBENCH = ROOT / "build" / "kvbench"
WORKLOADS = {
    "put": ("ops_per_sec", "-workload put -clients 64 -conns 4 -total 20000 -key-size 8 -val-size 256"),
    "latency": ("p50_ms", "-workload put -clients 1 -conns 1 -total 2000 -key-size 8 -val-size 256"),
    "txn": ("ops_per_sec", "-workload txn -clients 64 -total 20000 -key-size 8 -val-size 256"),
    "range": (
        "ops_per_sec",
        "-workload range -consistency l -clients 64 -total 30000 -key-size 8 -val-size 256",
    ),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _group_cpu_seconds(pgid: int) -> float:
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def run_one(src: str, flags: list[str], workload: str, data_root: str | None) -> tuple[float, float]:
    """(kvbench figure, server CPU microseconds per request) for one fresh server."""
    key, load = WORKLOADS[workload]
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    data = tempfile.mkdtemp(prefix="gifee-ab-", dir=data_root)
    env = dict(os.environ, PYTHONPATH=src)
    cmd = [sys.executable, "-m", "gifee", "store", "--data-dir", f"{data}/d", "--listen-client-urls", url]
    cmd += ["--advertise-client-urls", url, *flags]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 30
        ctl_env = dict(os.environ, ETCDCTL_API="3")
        while subprocess.run(
            ["etcdctl", "--endpoints", f"127.0.0.1:{port}", "endpoint", "health"],
            capture_output=True,
            env=ctl_env,
        ).returncode:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"server did not start: {shlex.join(cmd)}")
            time.sleep(0.1)
        before = _group_cpu_seconds(proc.pid)
        out = subprocess.run(
            [str(KVBENCH), "-endpoints", f"127.0.0.1:{port}", *load.split()], capture_output=True, text=True
        )
        used = _group_cpu_seconds(proc.pid) - before
        result = json.loads(out.stdout.strip().splitlines()[-1])
        if result["errors"]:
            raise RuntimeError(f"kvbench reported {result['errors']} errors")
        return float(result[key]), used / result["total"] * 1e6
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)  # the server leads its own process group
            except ProcessLookupError:
                break
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                continue
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sides", nargs=2, metavar="NAME=SRC[:FLAGS]")
    p.add_argument("--workload", choices=sorted(WORKLOADS), default="put")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--data-root", help="parent of the data dirs (default: the system's temp dir)")
    args = p.parse_args()
    sides = []
    for side in args.sides:
        name, _, spec = side.partition("=")
        src, _, flags = spec.partition(":")
        sides.append((name, src, shlex.split(flags)))
    key = WORKLOADS[args.workload][0]
    figures: dict[str, list[float]] = {name: [] for name, _, _ in sides}
    cpu: dict[str, list[float]] = {name: [] for name, _, _ in sides}
    for rnd in range(args.rounds):
        for name, src, flags in sides if rnd % 2 == 0 else sides[::-1]:
            value, us = run_one(src, flags, args.workload, args.data_root)
            figures[name].append(value)
            cpu[name].append(us)
            print(f"[round {rnd + 1}] {name}: {key}={value:.3f} cpu_us_per_request={us:.0f}", flush=True)
    (a, _, _), (b, _, _) = sides
    print()
    for name in (a, b):
        print(
            f"{name}: median {key} {statistics.median(figures[name]):.3f}, CPU {statistics.median(cpu[name]):.0f} us/request"
        )
    ratio = statistics.median(y / x for x, y in zip(figures[a], figures[b], strict=True))
    cpu_ratio = statistics.median(y / x for x, y in zip(cpu[a], cpu[b], strict=True))
    print(f"{b}/{a} per round, median: {key} {ratio:.3f}, CPU per request {cpu_ratio:.3f}")


if __name__ == "__main__":
    main()
