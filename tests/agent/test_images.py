"""Images from a registry: the agent pulls a pod's image from `gifee registry` on
loopback and runs it only if a key trusted for its name signed it (no
--insecure-options here); an unsigned image is refused with ErrImagePull."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gifee.image.store import ImageStore
from tests.agent.harness import Node, make_node
from tests.api.harness import Proc, free_port
from tests.image.images import busybox_image

pytestmark = [pytest.mark.root, pytest.mark.slow]


def gifee(data_dir: Path, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "gifee", "--dir", str(data_dir), *args], check=True,
                          capture_output=True, text=True, timeout=60).stdout


@pytest.fixture(scope="module")
def registry_node() -> Iterator[tuple[Node, str]]:
    work = Path(tempfile.mkdtemp(prefix="gifee-agent-reg-", dir="/var/tmp"))
    port = free_port()
    registry = Proc([sys.executable, "-m", "gifee", "--dir", str(work / "reg"), "registry", "--listen",
                     f"127.0.0.1:{port}"], work, "registry")
    registry.start()
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(registry.log()) from None
                time.sleep(0.1)
        host = f"127.0.0.1:{port}"
        builder = work / "builder"
        store = ImageStore(builder / "images")
        busybox_image(store, f"{host}/team/busybox:1")
        busybox_image(store, f"{host}/other/busybox:1")
        gifee(builder, "image", "keygen", "--out", str(work / "team"))
        gifee(builder, "image", "sign", f"{host}/team/busybox:1", "--key", str(work / "team.key"))
        for ref in (f"{host}/team/busybox:1", f"{host}/other/busybox:1"):
            gifee(builder, "image", "push", "-q", ref)

        def trust(data_dir: Path) -> None:
            gifee(data_dir, "trust", "--prefix", f"{host}/team", str(work / "team.pub"))

        gen = make_node("--insecure-registry", insecure=False, setup=trust)
        node = next(gen)
        try:
            yield node, host
        finally:
            for _ in gen:
                pass
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)


def test_signed_image_pulled_and_run(registry_node: tuple[Node, str]) -> None:
    node, host = registry_node
    node.create_pod("pulled", [{"name": "c", "image": f"{host}/team/busybox:1", "command": ["sh", "-c",
                                                                                          "echo pulled-ok; sleep 3600"]}])
    pod = node.wait_phase("pulled", "Running", timeout=60)
    assert pod["status"]["containerStatuses"][0]["imageID"].startswith("sha256:")
    assert "pulled-ok" in node.wait("log", lambda: node.kubectl("/usr/bin/kubectl", "logs", "pulled").stdout)
    names = gifee(node.data_dir, "image", "list")
    assert f"{host}/team/busybox" in names


def test_unsigned_image_refused(registry_node: tuple[Node, str]) -> None:
    node, host = registry_node
    node.create_pod("unsigned", [{"name": "c", "image": f"{host}/other/busybox:1", "command": ["true"]}])
    st = node.wait("ErrImagePull", lambda: (c := node.pod("unsigned")["status"]["containerStatuses"][0])
                   ["state"]["waiting"]["reason"] == "ErrImagePull" and c, timeout=60)
    assert "other/busybox" in st["state"]["waiting"]["message"] and "no key is trusted" in st["state"]["waiting"]["message"]
    assert node.pod("unsigned")["status"]["phase"] == "Pending"
