"""`gifee up`: the single-machine cluster in one process, driven by kubectl."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

KUBECTLS = {"1.32": "/usr/bin/kubectl", "1.20": "/opt/gifee/kubectl-1.20/usr/bin/kubectl"}

RC = """
apiVersion: v1
kind: ReplicationController
metadata: {name: web}
spec:
  replicas: 5
  selector: {env: prod, app: web}
  template:
    metadata: {labels: {env: prod, app: web}}
    spec:
      containers: [{name: web, image: example.com/web:1}]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Up:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.ports = [free_port() for _ in range(3)]
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        client, peer, api = self.ports
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gifee", "up", "--data-dir", str(self.data_dir),
             "--listen-client-urls", f"http://127.0.0.1:{client}", "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--insecure-port", str(api), "--hollow-nodes", "3", "--no-agent", "--log-level", "warn"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert "cluster ready" in line, line + self.proc.stdout.read()

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def kubectl(self, *args: str, version: str = "1.32", input: str | None = None) -> str:
        result = subprocess.run([KUBECTLS[version], "--kubeconfig", str(self.data_dir / "kubeconfig"), *args],
                                capture_output=True, text=True, input=input, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def web_pods(self, version: str = "1.32") -> list[dict[str, object]]:
        out = json.loads(self.kubectl("get", "pods", "-l", "env=prod,app=web", "-o", "json", version=version))
        return [p for p in out["items"] if not p["metadata"].get("deletionTimestamp")]

    def wait_for(self, count: int, running: bool = True, timeout: float = 30) -> list[dict[str, object]]:
        deadline = time.monotonic() + timeout
        while True:
            pods = self.web_pods()
            if len(pods) == count and (not running or all(p["status"].get("phase") == "Running" for p in pods)):
                return pods
            assert time.monotonic() < deadline, f"wanted {count} running pods, have {pods}"
            time.sleep(0.3)


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    cluster = Up(tmp_path / "cluster")
    cluster.start()
    try:
        yield cluster
    finally:
        if cluster.proc is not None and cluster.proc.poll() is None:
            cluster.proc.kill()
            cluster.proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("version", ["1.32", "1.20"])
def test_replication_controller_keeps_five_pods(up: Up, version: str) -> None:
    assert len(up.kubectl("get", "nodes", "--no-headers", version=version).splitlines()) == 3
    up.kubectl("apply", "-f", "-", input=RC, version=version)
    pods = up.wait_for(5)
    victims = [str(p["metadata"]["name"]) for p in pods[:2]]  # type: ignore[index]
    up.kubectl("delete", "pod", *victims, "--wait=false", version=version)
    pods = up.wait_for(5)
    assert not {p["metadata"]["name"] for p in pods} & set(victims)  # type: ignore[index]
    # select(env=prod,app=web) finds exactly the matching pods, nothing else
    up.kubectl("run", "other", "--image=example.com/other:1", "--labels=env=prod,app=db", version=version)
    assert len(up.web_pods(version)) == 5
    up.kubectl("scale", "rc", "web", "--replicas=2", version=version)
    up.wait_for(2)


@pytest.mark.slow
def test_state_survives_a_restart(up: Up) -> None:
    up.kubectl("apply", "-f", "-", input=RC)
    up.wait_for(5)
    assert up.stop() == 0
    up.start()
    assert "web" in up.kubectl("get", "rc", "-o", "name")
    up.wait_for(5)
