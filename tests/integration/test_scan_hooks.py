"""The scanner wired into the other parts: the registry scans what is pushed and serves
the report (quay's security endpoint), and `gifee run --fail-on-severity` refuses a
vulnerable image before anything runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from gifee.image.build import build_from_rootfs
from gifee.image.store import ImageStore
from gifee.scan.vulndb.store import database_path
from tests.registry.harness import RegistryProcess
from tests.scan.layers import wheezy_root


def gifee(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gifee", "--dir", str(data_dir), *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def wheezy_dir(tmp_path: Path, vulndb_dir: Path) -> Path:
    data = tmp_path / "gifee"
    data.mkdir()
    shutil.copy(database_path(vulndb_dir), database_path(data))
    store = ImageStore(data / "images")
    build_from_rootfs(store, wheezy_root(tmp_path / "u4", "1.0.1e-2+deb7u4"), "example.com/wheezy:u4", epoch=0)
    build_from_rootfs(store, wheezy_root(tmp_path / "u5", "1.0.1e-2+deb7u5"), "example.com/wheezy:u5", epoch=0)
    return data


def security(registry: RegistryProcess, repo: str, digest: str) -> dict[str, object]:
    url = f"http://{registry.address}/api/v1/repository/{repo}/manifest/{digest}/security"
    with urllib.request.urlopen(url, timeout=10) as response:
        data: dict[str, object] = json.load(response)
        return data


def test_registry_scans_on_push(wheezy_dir: Path, tmp_path: Path) -> None:
    registry = RegistryProcess("gifee", extra_args=["--vulndb", str(database_path(wheezy_dir))],
                               workdir=tmp_path / "registry")
    registry.start()
    try:
        reports = {}
        for tag in ("u4", "u5"):
            name = f"{registry.address}/debian/wheezy:{tag}"
            digest = ImageStore(wheezy_dir / "images").resolve(f"example.com/wheezy:{tag}").manifest_digest
            assert gifee(wheezy_dir, "image", "copy", f"example.com/wheezy:{tag}", f"docker://{name}").returncode == 0
            deadline = time.monotonic() + 60
            answer = security(registry, "debian/wheezy", digest)
            while answer["status"] != "scanned" and time.monotonic() < deadline:
                time.sleep(0.2)
                answer = security(registry, "debian/wheezy", digest)
            assert answer["status"] == "scanned", answer
            reports[tag] = answer["data"]
        ids = {a for f in reports["u4"]["findings"] for a in [f["id"], *f["aliases"]]}  # type: ignore[index]
        assert "CVE-2014-0160" in ids
        assert not any("CVE-2014-0160" in f["aliases"] for f in reports["u5"]["findings"])  # type: ignore[index]
        with pytest.raises(urllib.error.HTTPError) as missing:
            security(registry, "debian/wheezy", "sha256:" + "0" * 64)
        assert missing.value.code == 404
    finally:
        registry.stop()


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="running a pod needs root")
def test_run_refuses_images_above_the_chosen_severity(wheezy_dir: Path) -> None:
    refused = gifee(wheezy_dir, "run", "--insecure-options=image", "--fail-on-severity=unknown",
                    "example.com/wheezy:u4", "--net=none", "--", "/bin/true")
    assert refused.returncode != 0
    assert "vulnerabilities at or above unknown" in refused.stderr and "openssl" in refused.stderr, refused.stderr
    assert not list((wheezy_dir / "pods" / "run").glob("*")) if (wheezy_dir / "pods").exists() else True
