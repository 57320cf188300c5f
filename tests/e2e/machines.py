"""Several "machines" on one host, for end-to-end tests (root only).

- a test bridge `ge<tag>` in the host with 10.32.0.1/24 (the test range: the test
  process reaches the API server through it);
- machine i: a network namespace `ge<tag>-m<i>` with eth0 on that bridge at
  10.32.0.<10+i>, ip_forward on, an on-link route for the service range (a real
  machine's default route does that), its own gifee data dir under /var/tmp
  (DIR/net.d/default.conf names its own pod bridge `ge<tag>p<i>`; the subnet is
  replaced by the node's podCIDR), the test web images in its image store;
- machine 1 runs `gifee up` (API on 10.32.0.11), the others `gifee node join`;
- a client namespace at 10.32.0.20 whose route to the service range goes via
  machine 1 (as a load balancer in front of a cluster would send it).

Everything is recorded and removed in `close()`: processes, pods (stopped with
SIGKILL and garbage-collected inside their machine's namespace), mounts,
namespaces (and the pod bridges in them), the test bridge, the directories.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gifee.api.kubeconfig import write_kubeconfig
from gifee.image.store import ImageStore
from tests.api.harness import KUBECTL_132, Proc
from tests.image.images import busybox_image

IMAGES = ("example.com/web:1", "example.com/web:2")
API_PORT = 8080
GIFEE = [sys.executable, "-m", "gifee"]
# `ip netns exec` mounts a fresh /sys (hiding the host's /sys/fs/cgroup the runtime needs): gifee commands
# enter only the machine's network namespace
def enter(ns: str) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{ns}", "--"]


NODE_FLAGS = ["--insecure-options", "image", "--lease-interval", "1", "--node-status-update-frequency", "1",
              "--backoff-base", "1", "--log-level", "info"]


def sh(*argv: str, check: bool = True, timeout: float = 60, input: str | None = None) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


@dataclass
class Machine:
    index: int
    ns: str
    ip: str
    data_dir: Path
    host_link: str
    proc: Proc | None = None

    @property
    def name(self) -> str:
        return f"m{self.index}"

    def gifee(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return sh(*enter(self.ns), *GIFEE, "--dir", str(self.data_dir), *args, check=check,
                  timeout=timeout)

    def running_pods(self) -> list[str]:
        out = self.gifee("list", "--format=json", check=False).stdout
        return [p["uuid"] for p in json.loads(out or "[]") if p["state"] in ("running", "preparing")]


@dataclass
class Machines:
    count: int = 3
    tag: str = field(default_factory=lambda: f"{os.getpid() % 10000}")
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gifee-e2e-", dir="/var/tmp")))
    machines: list[Machine] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)
    bridge: str = ""
    client_ns: str = ""

    @property
    def api_url(self) -> str:
        return f"http://10.32.0.11:{API_PORT}"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    # -- set-up

    def _netns(self, name: str, ip: str) -> tuple[str, str]:
        ns, host_link = f"ge{self.tag}-{name}", f"ge{self.tag}h{name}"
        sh("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        sh("ip", "link", "add", host_link, "type", "veth", "peer", "name", f"ge{self.tag}x{name}")
        sh("ip", "link", "set", f"ge{self.tag}x{name}", "netns", ns)
        for cmd in (["ip", "link", "set", f"ge{self.tag}x{name}", "name", "eth0"],
                    ["ip", "addr", "add", f"{ip}/24", "dev", "eth0"], ["ip", "link", "set", "eth0", "up"],
                    ["ip", "link", "set", "lo", "up"], ["sysctl", "-qw", "net.ipv4.ip_forward=1"]):
            sh("ip", "netns", "exec", ns, *cmd)
        sh("ip", "link", "set", host_link, "master", self.bridge)
        sh("ip", "link", "set", host_link, "up")
        return ns, host_link

    def create(self) -> None:
        os.chmod(self.workdir, 0o711)
        self.bridge = f"ge{self.tag}"
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", "10.32.0.1/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for i in range(1, self.count + 1):
            ip = f"10.32.0.{10 + i}"
            ns, host_link = self._netns(f"m{i}", ip)
            sh("ip", "netns", "exec", ns, "ip", "route", "add", "10.96.0.0/12", "dev", "eth0")
            data_dir = self.workdir / f"m{i}"
            (data_dir / "net.d").mkdir(parents=True)
            os.chmod(data_dir, 0o711)
            (data_dir / "net.d" / "default.conf").write_text(json.dumps(
                {"bridge": f"ge{self.tag}p{i}", "subnet": f"10.32.{100 + i}.0/24"}))
            store = ImageStore(data_dir / "images")
            for ref in IMAGES:
                busybox_image(store, ref)
            self.machines.append(Machine(i, ns, ip, data_dir, host_link))
        self.client_ns, _ = self._netns("c", "10.32.0.20")
        sh("ip", "netns", "exec", self.client_ns, "ip", "route", "add", "10.96.0.0/12", "via", "10.32.0.11")
        write_kubeconfig(str(self.kubeconfig), self.api_url)

    def start(self, control_plane_flags: list[str]) -> None:
        first = self.machines[0]
        first.proc = Proc([*enter(first.ns), *GIFEE, "--dir", str(first.data_dir), "up",
                           "--listen-client-urls", "http://127.0.0.1:2379", "--listen-peer-urls",
                           "http://127.0.0.1:2380", "--bind-address", first.ip, "--insecure-port", str(API_PORT),
                           "--node-ip", first.ip, "--hostname-override", first.name, *control_plane_flags,
                           *NODE_FLAGS], self.workdir / "logs", first.name)
        first.proc.start()
        self.procs.append(first.proc)
        self.wait("API server", lambda: self.http("GET", "/readyz")[0] == 200, 60, first.proc)
        self.wait("kube-dns", lambda: self.http("GET", "/api/v1/namespaces/kube-system/services/kube-dns")[0]
                  == 200, 30, first.proc)
        for m in self.machines[1:]:
            m.proc = Proc([*enter(m.ns), *GIFEE, "--dir", str(m.data_dir), "node", "join",
                           "--server", self.api_url, "--node-ip", m.ip, "--hostname-override", m.name,
                           *NODE_FLAGS], self.workdir / "logs", m.name)
            m.proc.start()
            self.procs.append(m.proc)
        names = [m.name for m in self.machines]

        def nodes_ready() -> bool:
            code, out = self.http("GET", "/api/v1/nodes")
            ready = {n["metadata"]["name"] for n in out.get("items", []) if n["spec"].get("podCIDR") and any(
                c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions") or [])}
            return code == 200 and ready >= set(names)

        self.wait("nodes Ready with podCIDRs", nodes_ready, 60)
        nodes = {n["metadata"]["name"]: n for n in self.http("GET", "/api/v1/nodes")[1]["items"]}
        for m in self.machines:  # each agent has taken its podCIDR as its pod subnet
            self.wait(f"{m.name} subnet", lambda m=m: json.loads((m.data_dir / "net.d" / "default.conf").read_text())
                      .get("subnet") == nodes[m.name]["spec"]["podCIDR"], 30)

    # -- helpers

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()}" for p in self.procs)

    def wait(self, what: str, fn: Callable[[], Any], timeout: float, proc: Proc | None = None) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = fn()
            except (KeyError, IndexError, TypeError, ValueError, OSError) as e:
                last = e
            else:
                if last:
                    return last
            if proc is not None and proc.proc is not None and proc.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}: {last!r}\n{self.logs()}")

    def http(self, method: str, path: str, body: Any = None,
             content_type: str = "application/json") -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.api_url + path, data=data, method=method,
                                     headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                raw, code = r.read(), r.status
        except urllib.error.HTTPError as e:
            raw, code = e.read(), e.code
        except OSError:
            return 0, {}
        try:
            return code, json.loads(raw) if raw else {}
        except ValueError:
            return code, {"text": raw.decode(errors="replace")}

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return sh(KUBECTL_132, "--kubeconfig", str(self.kubeconfig), *args, input=input, check=check,
                  timeout=timeout)

    def in_client(self, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.client_ns, *argv, check=check, timeout=timeout)

    # -- failure

    def kill(self, m: Machine) -> None:
        """The machine dies: its links are cut, its node process and its pods are SIGKILLed."""
        sh("ip", "link", "set", m.host_link, "down")
        sh("ip", "netns", "exec", m.ns, "ip", "link", "set", "eth0", "down")
        if m.proc is not None and m.proc.proc is not None:
            m.proc.proc.kill()
            m.proc.proc.wait(10)
        running = m.running_pods()
        if running:
            m.gifee("stop", "--force", *running, check=False)

    # -- tear-down

    def close(self) -> None:
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception:
                if p.proc is not None:
                    p.proc.kill()
        for m in self.machines:
            try:
                running = m.running_pods()
                if running:
                    m.gifee("stop", "--force", *running, check=False, timeout=120)
                m.gifee("gc", "--grace-period=0s", check=False, timeout=300)
            except Exception:
                pass
            with open("/proc/mounts") as f:
                mounts = [line.split()[1] for line in f]
            for target in reversed(mounts):
                if target.startswith(str(m.data_dir) + "/"):
                    subprocess.run(["umount", "-l", target], capture_output=True)
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "del", ns, check=False)
        if self.bridge:
            sh("ip", "link", "del", self.bridge, check=False)
        for m in self.machines:  # the host ends of the veths go with their namespaces; make sure
            sh("ip", "link", "del", m.host_link, check=False)
        keep = os.environ.get("GIFEE_E2E_KEEP_LOGS")  # a directory to copy the machines' logs to, for debugging
        if keep and (self.workdir / "logs").is_dir():
            shutil.copytree(self.workdir / "logs", Path(keep) / self.workdir.name, dirs_exist_ok=True)
        shutil.rmtree(self.workdir, ignore_errors=True)
