"""A load generator that counts every failure: N threads, each a loop of one HTTP/1.0
request per new TCP connection (so every request is balanced anew by the service
rules), for a given time or until a stop file appears. One JSON line per request:
{"t": start (unix seconds), "d": duration, "ok": bool, "body": first line, "err": ...
(with the client's source port)}.

    python3 loadgen.py HOST PORT PATH SECONDS THREADS OUT [STOPFILE]

`summarize` (pure) turns the lines and phase windows into counts per phase.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any

TIMEOUT = 10.0  # as a patient client: a SYN to a dead pod is retried by TCP and balanced anew


def one(host: str, port: int, path: str) -> dict[str, Any]:
    t0 = time.time()
    local = ""
    try:
        with socket.socket() as s:
            s.settimeout(TIMEOUT)
            try:
                s.connect((host, port))
            finally:
                local = str(s.getsockname()[1])  # the source port, bound even when connect fails
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = head.split(b" ", 2)[1:2]
        ok = status == [b"200"]
        return {"t": t0, "d": time.time() - t0, "ok": ok, "body": body.decode(errors="replace").strip(),
                "err": "" if ok else f"status {head[:40]!r}"}
    except OSError as e:
        return {"t": t0, "d": time.time() - t0, "ok": False, "body": "",
                "err": f"{type(e).__name__}: {e} (from port {local})"}


def main(argv: list[str]) -> int:
    host, port, path, seconds, threads, out = argv[:6]
    stopfile = argv[6] if len(argv) > 6 else ""
    deadline = time.time() + float(seconds)
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def loop() -> None:
        while time.time() < deadline and not (stopfile and os.path.exists(stopfile)):
            r = one(host, int(port), path)
            with lock:
                results.append(r)

    workers = [threading.Thread(target=loop) for _ in range(int(threads))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    with open(out, "w") as f:
        for r in sorted(results, key=lambda r: r["t"]):
            f.write(json.dumps(r) + "\n")
    return 0


def summarize(results: Iterable[dict[str, Any]], phases: dict[str, tuple[float, float]]) -> dict[str, dict[str, Any]]:
    """{phase: {requests, failed, errors: {kind: n}, failed_at, failures, p50_ms, p99_ms, backends}} for
    requests that started in each phase's [start, end) window (failed_at: when each failed request started,
    seconds after the window's start, or the first request's for "between"; failures: the first few failed
    requests' start, duration and error text); requests outside every window go to "between"."""
    out: dict[str, dict[str, Any]] = {}
    results = list(results)
    first = min((r["t"] for r in results), default=0.0)
    buckets: dict[str, list[dict[str, Any]]] = {name: [] for name in [*phases, "between"]}
    for r in results:
        name = next((n for n, (a, b) in phases.items() if a <= r["t"] < b), "between")
        buckets[name].append(r)
    for name, rs in buckets.items():
        lat = sorted(r["d"] for r in rs if r["ok"])
        errors: dict[str, int] = {}
        for r in rs:
            if not r["ok"]:
                kind = str(r["err"]).split(":")[0]
                errors[kind] = errors.get(kind, 0) + 1
        backends: dict[str, int] = {}
        for r in rs:
            if r["ok"]:
                backends[r["body"]] = backends.get(r["body"], 0) + 1
        start = phases[name][0] if name in phases else first
        out[name] = {"requests": len(rs), "failed": sum(1 for r in rs if not r["ok"]), "errors": errors,
                     "failed_at": [round(r["t"] - start, 2) for r in rs if not r["ok"]],
                     "failures": [f"+{r['t'] - start:.2f}s {r['d']:.2f}s {r['err']}" for r in rs if not r["ok"]][:8],
                     "p50_ms": round(1000 * lat[len(lat) // 2], 1) if lat else None,
                     "p99_ms": round(1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1) if lat else None,
                     "backends": backends}
    return out


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
