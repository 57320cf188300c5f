"""A node for the agent tests: store + API server (tests/api/harness) + `gifee agent` on
loopback with a test-only runtime dir under /var/tmp, bridge and subnet; all cleaned up."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gifee.api.kubeconfig import write_kubeconfig
from gifee.image.store import ImageStore
from tests.api.harness import Cluster, Proc, free_port, start_apiserver, start_store
from tests.image.images import busybox_image

TEST_BRIDGE = "gifeeag0"
TEST_SUBNET = "10.25.0.0/24"
IMAGE = "example.com/busybox:1"
NODE = "node-a"


@dataclass
class Node:
    cluster: Cluster
    data_dir: Path
    workdir: Path
    agent: Proc
    port: int

    def start_agent(self, *extra: str) -> None:
        self.agent.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1):
                    return
            except OSError:
                pass
            if self.agent.proc is not None and self.agent.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"agent did not start:\n{self.agent.log()}")

    def kill_agent(self) -> None:
        if self.agent.proc is not None and self.agent.proc.poll() is None:
            self.agent.proc.kill()
            self.agent.proc.wait(10)

    def api(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        code, out = self.cluster.http(method, path, body, content_type)
        assert code < 300, (code, out)
        return out

    def create_pod(self, name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
        for c in containers:
            c.setdefault("image", IMAGE)
            c.setdefault("imagePullPolicy", "IfNotPresent")
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
                "spec": {"nodeName": NODE, "containers": containers, **spec}}
        return dict(self.api("POST", "/api/v1/namespaces/default/pods", body))

    def pod(self, name: str) -> dict[str, Any]:
        code, out = self.cluster.http("GET", f"/api/v1/namespaces/default/pods/{name}")
        return dict(out) if code == 200 else {}

    def wait(self, what: str, fn: Callable[[], Any], timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = fn()
            except (KeyError, IndexError, TypeError, AssertionError) as e:
                last = e
            else:
                if last:
                    return last
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}: {last!r}\n--- agent log\n{self.agent.log()}")

    def wait_phase(self, name: str, phase: str, timeout: float = 30) -> dict[str, Any]:
        return dict(self.wait(f"{name} {phase}", lambda: (p := self.pod(name)) and
                              p.get("status", {}).get("phase") == phase and p, timeout))

    def kubectl(self, binary: str, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(binary, *args, **kw)

    def runtime_pods(self) -> list[dict[str, Any]]:
        out = subprocess.run([sys.executable, "-m", "gifee", "--dir", str(self.data_dir), "list", "--format=json"],
                             capture_output=True, text=True, check=True).stdout
        return list(json.loads(out))


def make_node(*agent_args: str, insecure: bool = True, setup: Callable[[Path], None] | None = None) -> Iterator[Node]:
    if os.geteuid() != 0:
        import pytest

        pytest.skip("needs root")
    workdir = Path(tempfile.mkdtemp(prefix="gifee-agent-", dir="/var/tmp"))
    os.chmod(workdir, 0o711)
    data_dir = workdir / "gifee"
    (data_dir / "net.d").mkdir(parents=True)
    (data_dir / "net.d" / "default.conf").write_text(json.dumps({"bridge": TEST_BRIDGE, "subnet": TEST_SUBNET}))
    busybox_image(ImageStore(data_dir / "images"), IMAGE)
    if setup is not None:
        setup(data_dir)
    store, endpoint = start_store("gifee", workdir / "store")
    api: Proc | None = None
    agent: Proc | None = None
    try:
        api, url = start_apiserver(endpoint, workdir / "api")
        kc = workdir / "kubeconfig"
        write_kubeconfig(str(kc), url)
        port = free_port()
        argv = [sys.executable, "-m", "gifee", "--dir", str(data_dir), "agent", "--master", url,
                "--hostname-override", NODE, "--node-ip", "127.0.0.1", "--port", str(port),
                *(["--insecure-options=image"] if insecure else []), "--lease-interval", "1", "--node-status-update-frequency", "2",
                *agent_args]
        agent = Proc(argv, workdir / "agentlog", "agent")
        node = Node(Cluster("gifee", endpoint, url, kc, workdir), data_dir, workdir, agent, port)
        node.start_agent()
        yield node
    finally:
        if agent is not None:
            agent.stop()
            if agent.proc is not None and agent.proc.poll() is None:
                agent.proc.kill()
        cleanup_runtime(data_dir)
        if api is not None:
            api.stop()
        store.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def cleanup_runtime(data_dir: Path) -> None:
    gifee = [sys.executable, "-m", "gifee", "--dir", str(data_dir)]
    listed = json.loads(subprocess.run([*gifee, "list", "--format=json"], capture_output=True, text=True).stdout or "[]")
    running = [p["uuid"] for p in listed if p["state"] in ("running", "preparing")]
    if running:
        subprocess.run([*gifee, "stop", "--force", *running], capture_output=True)
    subprocess.run([*gifee, "gc", "--grace-period=0s"], capture_output=True)
    # the agent's tmpfs volumes (emptyDir medium Memory) of pods it did not get to delete
    with open("/proc/mounts") as f:
        mounts = [line.split()[1] for line in f]
    for target in reversed(mounts):
        if target.startswith(str(data_dir) + "/"):
            subprocess.run(["umount", "-l", target], capture_output=True)
    from gifee.runtime.network import PodNetwork

    PodNetwork(state_dir=data_dir / "net", bridge=TEST_BRIDGE, subnet=TEST_SUBNET).remove_bridge()
    run_dir = data_dir / "pods" / "run"
    leftover = list(run_dir.glob("*")) if run_dir.exists() else []
    assert not leftover, f"pods left behind: {leftover}"
