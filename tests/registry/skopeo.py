"""Real clients: an OCI layout with a busybox layer (made by umoci) and skopeo runs."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

SKOPEO = "/usr/bin/skopeo"
UMOCI = "/usr/bin/umoci"


def require_tools() -> None:
    for tool in (SKOPEO, UMOCI):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")


def busybox_layout(directory: Path, tag: str = "v1") -> Path:
    """An OCI image layout holding one image: a busybox-static binary in one layer."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox is not installed")
    layout = directory / "layout"
    staging = directory / "staging"
    staging.mkdir(parents=True)
    shutil.copy(busybox, staging / "busybox")
    for args in (["init", "--layout", str(layout)],
                 ["new", "--image", f"{layout}:{tag}"],
                 ["insert", "--image", f"{layout}:{tag}", str(staging / "busybox"), "/bin/busybox"],
                 ["config", "--image", f"{layout}:{tag}", "--config.cmd", "/bin/busybox"]):
        subprocess.run([UMOCI, *args], check=True, capture_output=True, timeout=60)
    shutil.rmtree(staging)
    return layout


def skopeo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SKOPEO, "--insecure-policy", *args], capture_output=True, text=True, timeout=timeout)


def layout_manifest(layout: Path, tag: str) -> tuple[str, dict[str, object]]:
    index = json.loads((layout / "index.json").read_text())
    for m in index["manifests"]:
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            digest = m["digest"]
            body = (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()
            return digest, json.loads(body)
    raise KeyError(tag)
