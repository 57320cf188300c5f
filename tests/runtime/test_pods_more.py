"""Pods from a real Debian root and pods on a terminal. Needs root (CI is root)."""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from gifee.image.build import build_from_rootfs
from gifee.image.store import ImageStore
from tests.runtime.podtools import Gifee, make_runtime_dir

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def gifee(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gifee]:
    yield from make_runtime_dir(tmp_path_factory.mktemp("runtime-more"))


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.skipif(shutil.which("debootstrap") is None, reason="debootstrap missing")
def test_debian_pod_beside_a_busybox_pod(gifee: Gifee) -> None:
    """Two user lands side by side: Debian's bash and dpkg in one pod, busybox in another."""
    from tests.image.test_debootstrap import debian_root

    build_from_rootfs(ImageStore(gifee.dir / "images"), debian_root(), "example.com/debian:bookworm",
                      compression="zstd", cmd=["/bin/bash"])
    debian = gifee.pod("--memory=256Mi", "--", "/bin/bash", "-c",
                       "cat /etc/debian_version; dpkg-query -W -f='${Package}\\n' | wc -l; echo $BASH_VERSION",
                       image="example.com/debian:bookworm")
    assert debian.returncode == 0, debian.stderr
    version, packages, bash = debian.stdout.split()
    assert version.startswith("12") and int(packages) > 50 and bash.startswith("5.")
    busybox = gifee.pod("--", "/bin/sh", "-c", "ls /usr/bin/dpkg 2>&1; cat /etc/debian_version 2>&1")
    assert "No such file" in busybox.stdout


def _read_until(fd: int, text: bytes, timeout: float = 10) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while text not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    return seen


def test_interactive_pod_on_a_terminal(gifee: Gifee) -> None:
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gifee", "--dir", str(gifee.dir), "run", "--insecure-options=image",
         "--interactive", "example.com/busybox:latest", "--", "/bin/sh", "-i"],
        stdin=terminal, stdout=terminal, stderr=terminal, start_new_session=True)
    os.close(terminal)
    try:
        os.write(controller, b"echo inside-$((6*7)); tty; exit 5\n")
        out = _read_until(controller, b"inside-42")
        assert b"inside-42" in out, out
        assert proc.wait(timeout=20) == 5
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(controller)
