"""Processes for the API tests: a store (gifee's or Debian's etcd) and `gifee apiserver`
on free loopback ports, each in a temp dir, always stopped; kubectl runners."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KUBECTL_132 = "/usr/bin/kubectl"
KUBECTL_120 = "/opt/gifee/kubectl-1.20/usr/bin/kubectl"
ETCD = "/usr/bin/etcd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    argv: list[str]
    workdir: Path
    name: str
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / f"{self.name}.log", "wb")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                                     env={**os.environ, **self.env}, start_new_session=True)
        log.close()

    def log(self) -> str:
        try:
            return (self.workdir / f"{self.name}.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def start_store(kind: str, workdir: Path) -> tuple[Proc, str]:
    client, peer = free_port(), free_port()
    curl, purl = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    if kind == "etcd":
        argv = [ETCD, "--name", "default", "--data-dir", str(workdir / "data"), "--listen-client-urls", curl,
                "--advertise-client-urls", curl, "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
                "--initial-cluster", f"default={purl}"]
    else:
        argv = [sys.executable, "-m", "gifee", "store", "--data-dir", str(workdir / "data"),
                "--listen-client-urls", curl, "--listen-peer-urls", purl, "--grpc-workers", "0"]
    proc = Proc(argv, workdir, kind)
    proc.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{curl}/health", timeout=1) as r:
                if json.loads(r.read()).get("health") in ("true", True):
                    return proc, f"127.0.0.1:{client}"
        except (OSError, ValueError):
            pass
        if proc.proc is not None and proc.proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.stop()
    raise RuntimeError(f"{kind} did not start:\n{proc.log()}")


def start_apiserver(endpoint: str, workdir: Path, *extra: str) -> tuple[Proc, str]:
    port = free_port()
    argv = [sys.executable, "-m", "gifee", "apiserver", "--etcd-servers", f"http://{endpoint}",
            "--insecure-port", str(port), "--bookmark-interval", "1", *extra]
    proc = Proc(argv, workdir, "apiserver")
    proc.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            pass
        if proc.proc is not None and proc.proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.stop()
    raise RuntimeError(f"apiserver did not start:\n{proc.log()}")


@dataclass
class Cluster:
    store_kind: str
    endpoint: str
    url: str
    kubeconfig: Path
    workdir: Path

    def kubectl(self, binary: str, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 30, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        p = subprocess.run([binary, "--kubeconfig", str(self.kubeconfig), *args], input=input, text=True,
                           capture_output=True, timeout=timeout, env={**os.environ, **(env or {})})
        if check and p.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        return p

    def http(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": content_type, **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                raw = r.read()
                code = r.status
        except urllib.error.HTTPError as e:
            raw, code = e.read(), e.code
        try:
            return code, json.loads(raw)
        except ValueError:
            return code, raw.decode(errors="replace")
