"""Helpers for the runtime's process tests: a gifee data directory with a busybox image,
the `gifee` command run as a real process, and a clean-up that leaves no pod, cgroup,
mount, address or bridge behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gifee.image.store import ImageStore
from tests.image.images import busybox_image

TEST_BRIDGE = "gifeert0"
TEST_SUBNET = "10.24.0.0/24"
IMAGE = "example.com/busybox:latest"


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: namespaces, mounts, cgroups")


class Gifee:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir

    def run(self, *args: str, check: bool = True, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "gifee", "--dir", str(self.dir), *args],
                                capture_output=True, text=True, timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise AssertionError(f"gifee {' '.join(args)} exited {result.returncode}:\n"
                                 f"stdout: {result.stdout}\nstderr: {result.stderr}")
        return result

    def pod(self, *args: str, image: str = IMAGE) -> subprocess.CompletedProcess[str]:
        """A foreground pod of the busybox image (signature checks off unless asked)."""
        return self.run("run", "--insecure-options=image", image, *args, check=False)

    def detach(self, *args: str, image: str = IMAGE) -> str:
        result = self.run("run", "--insecure-options=image", "--detach", image, *args)
        return result.stdout.strip().splitlines()[-1]

    def status(self, uuid: str, wait: bool = False) -> dict[str, Any]:
        args = ["status", "--format=json", uuid] + (["--wait", "--wait-timeout", "30"] if wait else [])
        data: dict[str, Any] = json.loads(self.run(*args).stdout)
        return data

    def logs(self, uuid: str) -> str:
        return self.run("logs", uuid).stdout

    def wait_for_log(self, uuid: str, text: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while True:
            out = self.logs(uuid)
            if text in out or time.monotonic() > deadline:
                return out
            time.sleep(0.05)

    def cleanup(self) -> None:
        listed = json.loads(self.run("list", "--format=json").stdout)
        running = [p["uuid"] for p in listed if p["state"] == "running"]
        if running:
            self.run("stop", "--force", *running, check=False)
        self.run("gc", "--grace-period=0s", check=False)


def make_runtime_dir(base: Path) -> Iterator[Gifee]:
    """A data directory whose parents others may search (pods in user namespaces run as
    unprivileged host uids that must reach it), removed afterwards."""
    require_root()
    import shutil
    import tempfile

    del base  # pytest's own temporary directories are private (0700)
    data_dir = Path(tempfile.mkdtemp(prefix="gifee-runtime-", dir="/var/tmp")) / "gifee"
    os.chmod(data_dir.parent, 0o711)
    try:
        yield from _runtime_dir(data_dir)
    finally:
        shutil.rmtree(data_dir.parent, ignore_errors=True)


def _runtime_dir(data_dir: Path) -> Iterator[Gifee]:
    (data_dir / "net.d").mkdir(parents=True)
    (data_dir / "net.d" / "default.conf").write_text(json.dumps({"bridge": TEST_BRIDGE, "subnet": TEST_SUBNET}))
    busybox_image(ImageStore(data_dir / "images"), IMAGE)
    gifee = Gifee(data_dir)
    try:
        yield gifee
    finally:
        gifee.cleanup()
        from gifee.runtime.network import PodNetwork

        PodNetwork(state_dir=data_dir / "net", bridge=TEST_BRIDGE, subnet=TEST_SUBNET).remove_bridge()
        leftover = list((data_dir / "pods" / "run").glob("*")) if (data_dir / "pods" / "run").exists() else []
        assert not leftover, f"pods left behind: {leftover}"


def shim_pid_of(first_pid: int) -> int:
    with open(f"/proc/{first_pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
