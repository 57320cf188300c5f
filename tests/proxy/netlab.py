"""A small network lab for the proxy, DNS and route tests (root only).

- a host bridge `gfb<n>` with 10.31.200.1/24: the "cluster network"; the store
  and the API server listen on 10.31.200.1 (and the store on loopback);
- "nodes": network namespaces with eth0 on that bridge (10.31.200.<10+i>), their
  own pod bridge cbr0 (the pod subnet's .1), ip_forward on;
- "pods": namespaces with eth0 veth'd into a node's cbr0, default route via .1,
  optionally running a tiny HTTP server that answers its own name.

Everything created is recorded and removed in `close()` (namespaces, the host
bridge, processes), whatever failed.
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

from tests.api.harness import Proc, free_port, start_store

HTTP_SERVER = r'''
import http.server, socketserver, sys
name = sys.argv[1].encode()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = name + b"\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
S(("0.0.0.0", int(sys.argv[2])), H).serve_forever()
'''


def sh(*argv: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def in_ns(ns: str, *argv: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", ns, *argv, check=check, timeout=timeout)


@dataclass
class Lab:
    tag: str = field(default_factory=lambda: f"{os.getpid() % 10000}")
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gifee-netlab-")))
    namespaces: list[str] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)
    bridge: str = ""
    api_url: str = ""
    _veths: int = 0

    # -- control plane

    def start_control_plane(self, *api_args: str) -> str:
        self.bridge = f"gfb{self.tag}"
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", "10.31.200.1/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        store, endpoint = start_store("gifee", self.workdir / "store")
        self.procs.append(store)
        port = free_port()
        api = Proc([sys.executable, "-m", "gifee", "apiserver", "--etcd-servers", f"http://{endpoint}",
                    "--bind-address", "10.31.200.1", "--insecure-port", str(port), "--bookmark-interval", "1",
                    *api_args], self.workdir / "api", "apiserver")
        api.start()
        self.procs.append(api)
        url = f"http://10.31.200.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=1) as r:
                    if r.status == 200:
                        self.api_url = url
                        return url
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"apiserver did not start:\n{api.log()}")

    # -- namespaces

    def netns(self, name: str) -> str:
        full = f"gf{self.tag}-{name}"
        sh("ip", "netns", "add", full)
        self.namespaces.append(full)
        in_ns(full, "ip", "link", "set", "lo", "up")
        return full

    def veth(self, a_ns: str, a_name: str, b_ns: str | None, b_name: str) -> None:
        """A veth pair: a_name in a_ns, b_name in b_ns (None: the host)."""
        self._veths += 1
        tmp_a, tmp_b = f"gv{self.tag}a{self._veths}", f"gv{self.tag}b{self._veths}"
        sh("ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b)
        sh("ip", "link", "set", tmp_a, "netns", a_ns)
        in_ns(a_ns, "ip", "link", "set", tmp_a, "name", a_name)
        if b_ns is not None:
            sh("ip", "link", "set", tmp_b, "netns", b_ns)
            in_ns(b_ns, "ip", "link", "set", tmp_b, "name", b_name)
        else:
            sh("ip", "link", "set", tmp_b, "name", b_name)

    def node(self, index: int, pod_cidr_gw: str = "") -> str:
        """A node namespace: eth0 on the host bridge at 10.31.200.<10+index>, cbr0 with pod_cidr_gw (e.g. 10.31.0.1/24)."""
        ns = self.netns(f"node{index}")
        host_end = f"gh{self.tag}n{index}"
        self.veth(ns, "eth0", None, host_end)
        sh("ip", "link", "set", host_end, "master", self.bridge)
        sh("ip", "link", "set", host_end, "up")
        in_ns(ns, "ip", "addr", "add", f"10.31.200.{10 + index}/24", "dev", "eth0")
        in_ns(ns, "ip", "link", "set", "eth0", "up")
        in_ns(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # the node's own connections to cluster IPs need a route before the output hook DNATs them (a real
        # node's default route does this); on-link, so nothing is ever forwarded beyond the lab bridge
        in_ns(ns, "ip", "route", "add", "10.96.0.0/12", "dev", "eth0")
        if pod_cidr_gw:
            in_ns(ns, "ip", "link", "add", "cbr0", "type", "bridge")
            in_ns(ns, "ip", "addr", "add", pod_cidr_gw, "dev", "cbr0")
            in_ns(ns, "ip", "link", "set", "cbr0", "up")
        return ns

    def pod(self, node_ns: str, name: str, address: str, gateway: str, serve_port: int = 0) -> str:
        """A pod namespace behind node_ns's cbr0 (address like 10.31.0.11/24)."""
        ns = self.netns(name)
        port_name = f"gp{self.tag}{len(self.namespaces)}"
        self.veth(ns, "eth0", node_ns, port_name)
        in_ns(node_ns, "ip", "link", "set", port_name, "master", "cbr0")
        # hairpin, as the runtime's CNI bridge config (hairpinMode) sets it: a pod reaching itself through
        # a service comes back out of the port it went in by
        in_ns(node_ns, "ip", "link", "set", port_name, "type", "bridge_slave", "hairpin", "on")
        in_ns(node_ns, "ip", "link", "set", port_name, "up")
        in_ns(ns, "ip", "addr", "add", address, "dev", "eth0")
        in_ns(ns, "ip", "link", "set", "eth0", "up")
        in_ns(ns, "ip", "route", "add", "default", "via", gateway)
        if serve_port:
            self.serve_http(ns, name, serve_port)
        return ns

    def serve_http(self, ns: str, name: str, port: int) -> Proc:
        p = Proc(["ip", "netns", "exec", ns, sys.executable, "-c", HTTP_SERVER, name, str(port)],
                 self.workdir / ns, "http")
        p.start()
        self.procs.append(p)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if in_ns(ns, "curl", "-s", "-m", "1", f"http://127.0.0.1:{port}/", check=False).stdout.strip() == name:
                return p
            time.sleep(0.1)
        raise RuntimeError(f"http server in {ns} did not start:\n{p.log()}")

    def start(self, ns: str | None, name: str, *argv: str) -> Proc:
        cmd = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
        p = Proc(cmd, self.workdir / (ns or "host"), name)
        p.start()
        self.procs.append(p)
        return p

    def close(self) -> None:
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception:
                pass
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "del", ns, check=False)
        if self.bridge:
            sh("ip", "link", "del", self.bridge, check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)


def curl(ns: str, url: str, timeout: float = 2) -> str:
    p = in_ns(ns, "curl", "-s", "-m", str(timeout), url, check=False, timeout=timeout + 5)
    return p.stdout.strip() if p.returncode == 0 else f"<curl rc={p.returncode}>"


def api(url: str, method: str, path: str, body: object = None,
        content_type: str = "application/json") -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw, code = r.read(), r.status
    except urllib.error.HTTPError as e:
        raw, code = e.read(), e.code
    return code, json.loads(raw) if raw else {}


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.05) -> float:
    """Seconds until pred() held; raises AssertionError after timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if pred():
            return time.monotonic() - start
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")
