"""Compare `gifee store` with Debian's etcd 3.4 under the same kvbench loads.

Each round runs every selected workload against both servers, one after the
other, the order flipping between rounds so that neither server always runs
first on a warm (or tired) machine. Every run gets a fresh server in a fresh
temporary data dir on free 127.0.0.1 ports. Results are quoted as the median of
per-round ratios gifee/etcd, because this machine is shared and absolute
figures drift; see benchmarks/README.md.

    python benchmarks/store_bench.py [--rounds N] [--only put,txn,...]
        [--gifee-cmd CMD] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_KVBENCH = REPO / "build" / "kvbench"
# shared/ lies beside the work tree (and beside CI's clone), see kvbench's README.
KVBENCH_BUILD = REPO.parent / "shared" / "tools" / "kvbench" / "build.sh"
HOST = "127.0.0.1"  # never listen anywhere else
KVBENCH_TIMEOUT_S = 300  # kvbench's own limit; the default 120 s is tight for a slow server's seeding
STOP_GRACE_S = 10.0
MEMORY_KEYS = 100_000
MEMORY_SETTLE_S = 2.0
SIZES = "-key-size 8 -val-size 256"


@dataclass(frozen=True)
class Workload:
    name: str
    metric: str  # a kvbench JSON field, or "rss_mib" for the memory workload
    higher_is_better: bool
    target: float  # bound on the gifee/etcd ratio of `metric`
    flags: str  # kvbench flags, space-separated

    @property
    def args(self) -> list[str]:
        return self.flags.split()


# The workloads and targets. range and txn need no preload: kvbench
# seeds min(key-space, total) keys itself before it starts the clock.
# For memory, `put` picks keys at random and would leave far fewer than 100,000
# distinct keys; `ackput` writes a unique key per request instead.
WORKLOADS: tuple[Workload, ...] = (
    Workload("put", "ops_per_sec", True, 0.45, f"-workload put -clients 64 -conns 4 -total 20000 {SIZES}"),
    Workload("txn", "ops_per_sec", True, 0.45, f"-workload txn -clients 64 -total 20000 {SIZES}"),
    Workload(
        "range", "ops_per_sec", True, 0.25, f"-workload range -consistency l -clients 64 -total 30000 {SIZES}"
    ),
    Workload("put-latency", "p50_ms", False, 1.3, f"-workload put -clients 1 -conns 1 -total 2000 {SIZES}"),
    Workload("watch", "p99_ms", False, 2.0, "-workload watch -clients 10 -total 2000"),
    Workload(
        "memory",
        "rss_mib",
        False,
        3.0,
        f"-workload ackput -clients 64 -conns 4 -total {MEMORY_KEYS} -val-size 256",
    ),
)
BY_NAME = {w.name: w for w in WORKLOADS}


class RunFailed(Exception):
    """A server or a load run misbehaved; the run is recorded as failed."""


class Interrupted(BaseException):
    """Raised on SIGINT/SIGTERM/SIGHUP; a BaseException so that only the `finally` blocks catch it."""


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def server_flags(data_dir: Path, client: int, peer: int) -> list[str]:
    peer_url = f"http://{HOST}:{peer}"
    client_url = f"http://{HOST}:{client}"
    return [
        "--name",
        "bench",
        "--data-dir",
        str(data_dir),
        "--listen-client-urls",
        client_url,
        "--advertise-client-urls",
        client_url,
        "--listen-peer-urls",
        peer_url,
        "--initial-advertise-peer-urls",
        peer_url,
        "--initial-cluster",
        f"bench={peer_url}",
    ]


def clean_env() -> dict[str, str]:
    # ETCD_* variables would silently override flags for etcd (and, being
    # compatible, for gifee); ETCDCTL_* would redirect our health checks.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "ETCDCTL_"))}
    env["ETCDCTL_API"] = "3"
    return env


def etcdctl(port: int, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    cmd = [
        "etcdctl",
        "--endpoints",
        f"{HOST}:{port}",
        "--dial-timeout",
        "1s",
        "--command-timeout",
        f"{max(int(timeout) - 2, 2)}s",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=clean_env())


def process_tree(root: int) -> list[int]:
    """root and all its descendants, from /proc (gifee may fork workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # the command name may hold spaces and parentheses: split after the last ')'
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def rss_kib(pid: int) -> int:
    total = 0
    for p in process_tree(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # the group is gone already


@dataclass
class Server:
    name: str
    cmd: list[str]
    workdir: Path
    startup_timeout: float
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    startup_s: float = 0.0
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.workdir / f"{self.name}.log"

    def start(self) -> None:
        # A free port can be taken by someone else before the server binds it;
        # only that case is worth another try.
        for attempt in range(3):
            self.port, peer = free_port(), free_port()
            t0 = time.monotonic()
            self._spawn(server_flags(self.workdir / f"data{attempt}", self.port, peer))
            try:
                self._wait_ready()
                self.startup_s = time.monotonic() - t0
                return
            except RunFailed:
                self.stop()
                if "address already in use" not in self.log_tail().lower():
                    raise
        raise RunFailed(f"{self.name}: ports kept being taken")

    def _spawn(self, flags: list[str]) -> None:
        with self.log.open("ab") as log:
            # Own session: Ctrl-C at the terminal does not reach the server
            # mid-run, and stop() can signal the whole group including children.
            self.proc = subprocess.Popen(
                [*self.cmd, *flags],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=clean_env(),
                start_new_session=True,
            )

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RunFailed(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if etcdctl(self.port, "endpoint", "health", timeout=5).returncode == 0:
                    return
            except subprocess.TimeoutExpired:
                pass
            time.sleep(0.2)
        raise RunFailed(f"{self.name} not healthy after {self.startup_timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        # Signal the whole group (start_new_session made its id the leader's pid),
        # so that workers a server forked go too, even if the leader died first.
        signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
        signal_group(proc.pid, signal.SIGKILL)  # a leader that ignored SIGTERM, or stragglers
        try:
            proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            print(f"warning: {self.name} pid {proc.pid} survived SIGKILL", file=sys.stderr)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextmanager
def running_server(name: str, cmd: list[str], startup_timeout: float) -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix=f"store-bench-{name}-") as tmp:
        server = Server(name, cmd, Path(tmp), startup_timeout)
        try:
            server.start()
            yield server
        finally:
            server.stop()


# ---------------------------------------------------------------- kvbench


def ensure_kvbench(path: Path) -> None:
    if path.is_file() and os.access(path, os.X_OK):
        return
    if not KVBENCH_BUILD.is_file():
        sys.exit(f"{path} is missing and {KVBENCH_BUILD} is not there to build it")
    print(f"building {path} ...", file=sys.stderr)
    subprocess.run(["sh", str(KVBENCH_BUILD), str(path)], check=True)


def kvbench(binary: Path, port: int, args: Sequence[str]) -> dict[str, Any]:
    cmd = [str(binary), "-endpoints", f"{HOST}:{port}", "-timeout", f"{KVBENCH_TIMEOUT_S}s", *args]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=KVBENCH_TIMEOUT_S + 60)
    except subprocess.TimeoutExpired as e:
        raise RunFailed(f"kvbench hung: {shlex.join(cmd)}") from e
    lines = out.stdout.strip().splitlines()
    if not lines:
        raise RunFailed(f"kvbench exit {out.returncode}: {out.stderr.strip()[-500:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    # exit 1 = errors or timeout: keep the figures, but the run does not count.
    if out.returncode != 0:
        result["failed"] = f"kvbench exit {out.returncode}: {result.get('first_error', '')}"
    return result


def key_count(port: int, prefix: str = "kvbench/") -> int:
    # etcdctl 3.4 has no --count-only; a Range's count is the full count even with a limit.
    out = etcdctl(port, "get", prefix, "--prefix", "--limit", "1", "-w", "json", timeout=30)
    if out.returncode != 0:
        raise RunFailed(f"etcdctl get failed: {out.stderr.strip()}")
    return int(json.loads(out.stdout).get("count", 0))


def measure(w: Workload, server: Server, binary: Path) -> dict[str, Any]:
    if w.name != "memory":
        result = kvbench(binary, server.port, w.args)
        result["value"] = result[w.metric]
        return result
    assert server.proc is not None
    idle = rss_kib(server.proc.pid)
    result = kvbench(binary, server.port, [*w.args, "-ack-file", str(server.workdir / "acks")])
    keys = key_count(server.port)
    if keys != MEMORY_KEYS:
        result["failed"] = f"{keys} keys stored, expected {MEMORY_KEYS}"
    time.sleep(MEMORY_SETTLE_S)  # let write buffers and background work settle
    rss = rss_kib(server.proc.pid)
    result.update(keys=keys, rss_idle_mib=idle / 1024, rss_mib=rss / 1024, value=rss / 1024)
    return result


def run_one(rnd: int, w: Workload, name: str, cmd: list[str], opts: argparse.Namespace) -> dict[str, Any]:
    record: dict[str, Any] = {
        "round": rnd,
        "workload": w.name,
        "server": name,
        "metric": w.metric,
        "server_cmd": cmd,
        "kvbench_args": w.args,
    }
    t0 = time.monotonic()
    try:
        with running_server(name, cmd, opts.startup_timeout) as server:
            record["startup_s"] = round(server.startup_s, 3)
            record["result"] = measure(w, server, opts.kvbench)
            record["error"] = record["result"].pop("failed", None)
    except (RunFailed, subprocess.SubprocessError, OSError, ValueError) as e:
        record["error"] = str(e)
    record["wall_s"] = round(time.monotonic() - t0, 2)
    record["value"] = None if record["error"] else record["result"]["value"]
    report_run(record)
    return record


def report_run(r: dict[str, Any]) -> None:
    shown = f"{r['metric']}={r['value']:.2f}" if r["value"] is not None else f"FAILED: {r['error']}"
    print(
        f"[round {r['round'] + 1}] {r['workload']:<12} {r['server']:<6} {shown} ({r['wall_s']:.0f} s)",
        file=sys.stderr,
        flush=True,
    )


# ---------------------------------------------------------------- summary


def summarize(w: Workload, runs: list[dict[str, Any]], rounds: int) -> dict[str, Any]:
    mine = [r for r in runs if r["workload"] == w.name]
    value = {(r["round"], r["server"]): r["value"] for r in mine}
    etcd = [v for (_, s), v in value.items() if s == "etcd" and v is not None]
    gifee = [v for (_, s), v in value.items() if s == "gifee" and v is not None]
    ratios = [
        value[(n, "gifee")] / value[(n, "etcd")]
        for n in range(rounds)
        if value.get((n, "gifee")) is not None and value.get((n, "etcd"))
    ]
    ratio = statistics.median(ratios) if ratios else None
    met = ratio is not None and (ratio >= w.target if w.higher_is_better else ratio <= w.target)
    failed = sum(1 for r in mine if r["value"] is None)
    return {
        "workload": w.name,
        "metric": w.metric,
        "etcd_median": statistics.median(etcd) if etcd else None,
        "gifee_median": statistics.median(gifee) if gifee else None,
        "ratios": ratios,
        "ratio_median": ratio,
        "target": f"{'>=' if w.higher_is_better else '<='} {w.target}",
        "failed_runs": failed,
        "pass": met and failed == 0 and len(ratios) == rounds,
    }


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}" if abs(x) < 10 else f"{x:.1f}"


def table_row(s: dict[str, Any]) -> tuple[str, ...]:
    spread = f"{min(s['ratios']):.2f}-{max(s['ratios']):.2f}" if s["ratios"] else "n/a"
    verdict = "PASS" if s["pass"] else "FAIL"
    if s["failed_runs"]:
        verdict += f" ({s['failed_runs']} failed run(s))"
    return (
        s["workload"],
        s["metric"],
        fmt(s["etcd_median"]),
        fmt(s["gifee_median"]),
        fmt(s["ratio_median"]),
        spread,
        s["target"],
        verdict,
    )


def print_table(summary: list[dict[str, Any]]) -> None:
    # A Markdown table, so that it reads in a terminal and pastes into the README as is.
    head = (
        "workload",
        "metric",
        "etcd median",
        "gifee median",
        "ratio (median)",
        "ratio min-max",
        "target",
        "result",
    )
    rows = [head] + [table_row(s) for s in summary]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for n, row in enumerate(rows):
        print("| " + " | ".join(c.ljust(wd) for c, wd in zip(row, widths, strict=True)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (wd + 2) for wd in widths) + "|")


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--only", default=",".join(BY_NAME), help=f"comma-separated subset of {','.join(BY_NAME)}")
    p.add_argument(
        "--gifee-cmd",
        default=shlex.join([sys.executable, "-m", "gifee", "store"]),
        help="command for the gifee server, before etcd's flags (e.g. 'etcd' to self-check)",
    )
    p.add_argument("--etcd-cmd", default="etcd")
    p.add_argument("--kvbench", type=Path, default=DEFAULT_KVBENCH)
    p.add_argument(
        "--startup-timeout", type=float, default=30.0, help="seconds until a server must be healthy"
    )
    p.add_argument("--json", type=Path, help="write every run's raw figures and the summary here")
    opts = p.parse_args(argv)
    unknown = set(opts.only.split(",")) - set(BY_NAME)
    if unknown or opts.rounds < 1:
        p.error(f"unknown workload(s) {sorted(unknown)}" if unknown else "--rounds must be >= 1")
    wanted = set(opts.only.split(","))
    opts.workloads = [w for w in WORKLOADS if w.name in wanted]
    return opts


def run_all(opts: argparse.Namespace, runs: list[dict[str, Any]]) -> None:
    servers = [("etcd", shlex.split(opts.etcd_cmd)), ("gifee", shlex.split(opts.gifee_cmd))]
    for rnd in range(opts.rounds):
        order = servers if rnd % 2 == 0 else servers[::-1]
        for w in opts.workloads:
            for name, cmd in order:
                runs.append(run_one(rnd, w, name, cmd, opts))


def write_json(
    opts: argparse.Namespace, runs: list[dict[str, Any]], summary: list[dict[str, Any]], complete: bool
) -> None:
    if opts.json is None:
        return
    meta = {
        "argv": sys.argv,
        "rounds": opts.rounds,
        "etcd_cmd": opts.etcd_cmd,
        "gifee_cmd": opts.gifee_cmd,
        "complete": complete,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "etcd_version": subprocess.run(
            [*shlex.split(opts.etcd_cmd), "--version"], capture_output=True, text=True
        ).stdout.splitlines()[:1],
    }
    opts.json.write_text(json.dumps({"meta": meta, "runs": runs, "summary": summary}, indent=1) + "\n")


def interrupt(signum: int, _frame: object) -> None:
    # Ignore repeats, so that a second Ctrl-C cannot cut the cleanup short.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    ensure_kvbench(opts.kvbench)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)
    runs: list[dict[str, Any]] = []
    complete = False
    try:
        run_all(opts, runs)
        complete = True
    except Interrupted:
        print("interrupted: servers stopped, temp dirs removed; partial results follow", file=sys.stderr)
    summary = [summarize(w, runs, opts.rounds) for w in opts.workloads]
    write_json(opts, runs, summary, complete)
    print_table(summary)
    return 0 if complete and all(s["pass"] for s in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
