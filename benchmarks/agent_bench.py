"""Pod start latency on an idle node: create -> Running (status.phase as the API
server reports it), image present, one pod at a time, then a burst of pods created
at once. Starts a store, the API server and `gifee agent` on loopback with a
test-only runtime dir and bridge (tests/agent/harness.py), and cleans up.

    python3 benchmarks/agent_bench.py [--pods 20] [--burst 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.agent.harness import Node, make_node  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered) + 0.5)) - 1))
    return ordered[k]


class Watcher:
    """Records when each pod is first seen Running, from a watch on the API server."""

    def __init__(self, url: str) -> None:
        self.running: dict[str, float] = {}
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self.run, args=(url,), daemon=True)
        self.thread.start()

    def run(self, url: str) -> None:
        with urllib.request.urlopen(f"{url}/api/v1/namespaces/default/pods?watch=1", timeout=3600) as r:
            for line in r:
                event = json.loads(line)
                pod = event.get("object") or {}
                if (pod.get("status") or {}).get("phase") == "Running":
                    name = pod["metadata"]["name"]
                    with self.cond:
                        self.running.setdefault(name, time.monotonic())
                        self.cond.notify_all()

    def wait(self, name: str, timeout: float = 30) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: name in self.running, timeout):
                raise TimeoutError(f"{name} not Running after {timeout}s")
            return self.running[name]


def pod_body(name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "example.com/busybox:1",
                                                           "imagePullPolicy": "IfNotPresent",
                                                           "command": ["sleep", "3600"]}]}}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=20)
    ap.add_argument("--burst", type=int, default=10)
    args = ap.parse_args()
    gen = make_node()
    node: Node = next(gen)
    try:
        watcher = Watcher(node.cluster.url)
        time.sleep(0.5)
        # warm-up: the first pod pays for the bridge and the first unpack check
        node.api("POST", "/api/v1/namespaces/default/pods", pod_body("warm"))
        watcher.wait("warm")
        seq = []
        for i in range(args.pods):
            name = f"seq-{i}"
            t0 = time.monotonic()
            node.api("POST", "/api/v1/namespaces/default/pods", pod_body(name))
            seq.append(watcher.wait(name) - t0)
        burst_start: dict[str, float] = {}
        for i in range(args.burst):
            name = f"burst-{i}"
            burst_start[name] = time.monotonic()
            node.api("POST", "/api/v1/namespaces/default/pods", pod_body(name))
        burst = [watcher.wait(n, 120) - t for n, t in burst_start.items()]
        print(f"sequential, {len(seq)} pods: p50 {statistics.median(seq) * 1000:.0f} ms, "
              f"p99 {percentile(seq, 99) * 1000:.0f} ms, max {max(seq) * 1000:.0f} ms")
        assert node.agent.proc is not None
        with open(f"/proc/{node.agent.proc.pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        print(f"agent RSS with {args.pods + args.burst + 1} pods: {rss // 1024} MiB")
        print(f"burst of {len(burst)} (created at once, {args.pods + 1} pods already running): "
              f"p50 {statistics.median(burst) * 1000:.0f} ms, p99 {percentile(burst, 99) * 1000:.0f} ms")
    finally:
        for _ in gen:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
