"""Requests per second through a service's cluster IP vs straight to its pods (root only).

Lab (tests/proxy/netlab.py): a store + API server on a test bridge, a node
namespace running `gifee proxy`, N pod namespaces behind the node's cbr0, each
running a small keep-alive HTTP server (asyncio, one process per pod). One
Service (cluster IP) with an Endpoints object naming the N pods.

Each round runs two measurements with the same load generator (wrk, inside the
node namespace), in alternating order:
- direct: N wrk processes at once, process i against pod i's IP:port;
- service: N wrk processes at once, all against the cluster IP (the kernel
  DNATs each connection to one of the N pods).
Same pods, same number of wrk processes, threads and connections. Reports the
per-round ratio service/direct and its median; the target is >= 0.9.

    sudo python3 benchmarks/service_bench.py [--pods 2] [--rounds 5] [--duration 5] [--connections 16]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.proxy.netlab import Lab, api, curl, wait_until  # noqa: E402

SERVER = r'''
import asyncio, sys
name = sys.argv[1].encode() + b"\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: " + str(len(name)).encode() + b"\r\nContent-Type: text/plain\r\n\r\n" + name
class P(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t; self.buf = b""
    def data_received(self, data):
        self.buf += data
        n = self.buf.count(b"\r\n\r\n")
        if n:
            self.buf = self.buf[self.buf.rfind(b"\r\n\r\n") + 4:]
            self.t.write(RESP * n)
async def main():
    s = await asyncio.get_running_loop().create_server(P, "0.0.0.0", int(sys.argv[2]), backlog=1024)
    await s.serve_forever()
asyncio.run(main())
'''


def wrk(ns: str, urls: list[str], duration: int, connections: int) -> float:
    """Total requests/s of len(urls) concurrent wrk processes (one per URL)."""
    procs = [subprocess.Popen(["ip", "netns", "exec", ns, "wrk", "-t1", f"-c{connections}", f"-d{duration}s", url],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for url in urls]
    total = 0.0
    for p in procs:
        out, _ = p.communicate(timeout=duration + 30)
        m = re.search(r"Requests/sec:\s+([\d.]+)", out)
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
        if m is None or p.returncode != 0:
            raise RuntimeError(f"wrk failed:\n{out}")
        if errors:
            print(f"  wrk reported: {errors.group(0)}", file=sys.stderr)
        total += float(m.group(1))
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pods", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=16, help="per wrk process")
    ap.add_argument("--target", type=float, default=0.9)
    args = ap.parse_args()
    lab = Lab()
    try:
        lab.start_control_plane()
        node = lab.node(1, "10.31.0.1/24")
        ips = [f"10.31.0.{11 + i}" for i in range(args.pods)]
        for i, ip in enumerate(ips):
            ns = lab.pod(node, f"bench{i}", f"{ip}/24", "10.31.0.1")
            lab.start(ns, "server", sys.executable, "-c", SERVER, f"bench{i}", "8000")
        for ip in ips:
            wait_until(lambda ip=ip: curl(node, f"http://{ip}:8000/", 1).startswith("bench"), 10)
        code, svc = api(lab.api_url, "POST", "/api/v1/namespaces/default/services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "bench"},
            "spec": {"selector": {"app": "bench"}, "ports": [{"name": "http", "port": 80, "targetPort": 8000}]}})
        assert code == 201, svc
        api(lab.api_url, "POST", "/api/v1/namespaces/default/endpoints", {
            "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "bench"},
            "subsets": [{"addresses": [{"ip": ip} for ip in ips],
                         "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}]}]})
        vip = svc["spec"]["clusterIP"]
        lab.start(node, "proxy", sys.executable, "-m", "gifee", "proxy", "--server", lab.api_url,
                  "--node-name", "node1")
        wait_until(lambda: curl(node, f"http://{vip}/", 1).startswith("bench"), 15)
        seen = {curl(node, f"http://{vip}/", 1) for _ in range(20)}
        print(f"cluster IP {vip} -> {sorted(seen)}")
        wrk(node, [f"http://{vip}/"] * args.pods, 2, args.connections)  # warm-up
        rounds = []
        for r in range(args.rounds):
            order = ["direct", "service"] if r % 2 == 0 else ["service", "direct"]
            got: dict[str, float] = {}
            for kind in order:
                urls = [f"http://{ip}:8000/" for ip in ips] if kind == "direct" else [f"http://{vip}/"] * args.pods
                got[kind] = wrk(node, urls, args.duration, args.connections)
                time.sleep(0.5)
            ratio = got["service"] / got["direct"]
            rounds.append({"direct": round(got["direct"]), "service": round(got["service"]),
                           "ratio": round(ratio, 3)})
            print(f"round {r + 1}: direct {got['direct']:.0f} req/s, service {got['service']:.0f} req/s, "
                  f"ratio {ratio:.3f}")
        ratios = [x["ratio"] for x in rounds]
        median = statistics.median(ratios)
        result = {"pods": args.pods, "wrk": f"{args.pods} x wrk -t1 -c{args.connections} -d{args.duration}s",
                  "rounds": rounds, "median_ratio": median, "min": min(ratios), "max": max(ratios),
                  "target": args.target, "pass": median >= args.target}
        print(json.dumps(result, indent=1))
        return 0 if median >= args.target else 1
    finally:
        lab.close()


if __name__ == "__main__":
    sys.exit(main())
