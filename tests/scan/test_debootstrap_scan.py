"""A real Debian root (debootstrap minbase bookworm, cached by the image tests) built into an
image and scanned: the packages found are exactly the ones dpkg itself lists."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gifee.cli import main
from gifee.image.build import build_from_rootfs
from gifee.image.store import ImageStore
from gifee.scan.vulndb.store import database_path

pytestmark = [pytest.mark.slow, pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
              pytest.mark.skipif(shutil.which("debootstrap") is None, reason="debootstrap missing"),
              pytest.mark.timeout(1200)]


def dpkg_listing(root: Path) -> set[tuple[str, str, str]]:
    out = subprocess.run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W",
                          "-f", "${db:Status-Abbrev}\t${Package}\t${Version}\t${source:Package}\n"],
                         check=True, capture_output=True, text=True).stdout
    return {(name, version, source) for status, name, version, source in (line.split("\t") for line in out.splitlines())
            if status.strip() == "ii"}


def test_debootstrap_image(tmp_path: Path, vulndb_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.image.test_debootstrap import debian_root

    root = debian_root()
    data = tmp_path / "gifee"
    data.mkdir()
    shutil.copy(database_path(vulndb_dir), database_path(data))
    build_from_rootfs(ImageStore(data / "images"), root, "example.com/debian:bookworm", compression="zstd")
    assert main(["--dir", str(data), "scan", "example.com/debian:bookworm", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["namespace"] == "debian:12" and report["distro"]["id"] == "debian"
    assert any("no records for debian:12" in w for w in report["warnings"])  # the snapshot predates bookworm
    assert main(["--dir", str(data), "scan", str(root), "--format", "json"]) == 0
    direct = json.loads(capsys.readouterr().out)
    assert direct["packages"] == report["packages"] == len(dpkg_listing(root))
    from gifee.scan.layercache import LayerCache
    from gifee.scan.scanner import image_inventory
    from gifee.scan.targets import open_image

    inv = image_inventory(open_image(data, "example.com/debian:bookworm"), LayerCache(data / "scan" / "layers"))
    assert {(p.name, p.version, p.source_name) for p in inv.packages} == dpkg_listing(root)
