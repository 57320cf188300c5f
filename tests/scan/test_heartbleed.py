"""Heartbleed in a Debian 7 root, built into images with gifee's builder and scanned through
the CLI: deb7u4 is flagged with CVE-2014-0160 and the fix deb7u5, deb7u5 is not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gifee.cli import main
from gifee.image.build import build_from_rootfs
from gifee.image.store import ImageStore
from gifee.scan.vulndb.store import database_path
from tests.scan.layers import wheezy_root


@pytest.fixture
def data_dir(tmp_path: Path, vulndb_dir: Path) -> Path:
    d = tmp_path / "gifee"
    d.mkdir()
    shutil.copy(database_path(vulndb_dir), database_path(d))
    store = ImageStore(d / "images")
    build_from_rootfs(store, wheezy_root(tmp_path / "u4", "1.0.1e-2+deb7u4"), "example.com/wheezy:u4", epoch=0)
    build_from_rootfs(store, wheezy_root(tmp_path / "u5", "1.0.1e-2+deb7u5"), "example.com/wheezy:u5", epoch=0)
    return d


def scan(data_dir: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    rc = main(["--dir", str(data_dir), "scan", *args])
    return rc, capsys.readouterr().out


def heartbleed(report: dict[str, object]) -> list[dict[str, object]]:
    findings = report["findings"]
    assert isinstance(findings, list)
    return [f for f in findings if "CVE-2014-0160" in f["aliases"]]


def test_vulnerable_openssl_is_flagged_with_the_debian_fix(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = scan(data_dir, capsys, "example.com/wheezy:u4", "--format", "json")
    assert rc == 0
    report = json.loads(out)
    assert report["namespace"] == "debian:7" and report["packages"] == 2
    found = {f["package"]: f for f in heartbleed(report)}
    assert set(found) == {"openssl", "libssl1.0.0"}
    assert found["openssl"]["id"] == "DSA-2896-1"
    assert found["openssl"]["installed"] == "1.0.1e-2+deb7u4"
    assert found["openssl"]["fixed"] == "1.0.1e-2+deb7u5"
    assert found["openssl"]["action"] == "upgrade openssl from 1.0.1e-2+deb7u4 to 1.0.1e-2+deb7u5"
    assert found["libssl1.0.0"]["action"] == "upgrade libssl1.0.0 from 1.0.1e-2+deb7u4 to 1.0.1e-2+deb7u5"
    assert found["libssl1.0.0"]["source_package"] == "openssl"
    assert found["openssl"]["path"] == "/var/lib/dpkg/status"
    assert found["openssl"]["layer"] == report["layers"][0]
    assert report["summary"]["findings"] == len(report["findings"]) > 2


def test_fixed_openssl_is_not_flagged(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = scan(data_dir, capsys, "example.com/wheezy:u5", "--format", "json")
    report = json.loads(out)
    assert rc == 0 and heartbleed(report) == []
    assert all(f["fixed"] != "1.0.1e-2+deb7u5" for f in report["findings"])
    assert report["findings"]  # later openssl advisories still apply to deb7u5


def test_table_and_fail_on(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = scan(data_dir, capsys, "example.com/wheezy:u4", "--fail-on", "unknown")
    assert rc == 1
    assert "DSA-2896-1 CVE-2014-0160" in out and "Summary:" in out
    assert "upgrade openssl from 1.0.1e-2+deb7u4 to 1.0.1t-1+deb7u4" in out  # the highest fix covers all
    rc, out = scan(data_dir, capsys, "example.com/wheezy:u4", "--fail-on", "high")
    assert rc == 0  # the Debian lists give no urgency for these advisories: severity unknown
    rc, out = scan(data_dir, capsys, "example.com/wheezy:u4", "--severity", "high", "--format", "json")
    assert json.loads(out)["findings"] == []


def test_sarif(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = scan(data_dir, capsys, "example.com/wheezy:u4", "--format", "sarif")
    sarif = json.loads(out)
    assert rc == 0 and sarif["version"] == "2.1.0" and "sarif-2.1.0" in sarif["$schema"]
    (run,) = sarif["runs"]
    rules = run["tool"]["driver"]["rules"]
    assert len({r["id"] for r in rules}) == len(rules)
    hits = [r for r in run["results"] if r["ruleId"] == "DSA-2896-1"]
    assert len(hits) == 2
    for r in run["results"]:
        assert rules[r["ruleIndex"]]["id"] == r["ruleId"]
        assert r["level"] in ("error", "warning", "note")
        assert r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "var/lib/dpkg/status"
    assert any("upgrade openssl from 1.0.1e-2+deb7u4 to 1.0.1e-2+deb7u5" in r["message"]["text"] for r in hits)


def test_root_directory_and_layout_targets(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = scan(data_dir, capsys, str(tmp_path / "u4"), "--format", "json")
    assert rc == 0 and {f["package"] for f in heartbleed(json.loads(out))} == {"openssl", "libssl1.0.0"}
    assert main(["--dir", str(data_dir), "image", "export", "example.com/wheezy:u4", str(tmp_path / "layout")]) == 0
    capsys.readouterr()
    rc, out = scan(data_dir, capsys, f"oci:{tmp_path / 'layout'}", "--format", "json")
    assert rc == 0 and len(heartbleed(json.loads(out))) == 2


def test_scan_errors_exit_2(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dir", str(data_dir), "scan", "example.com/nope:1"]) == 2
    assert main(["--dir", str(tmp_path / "empty"), "scan", "example.com/wheezy:u4"]) == 2  # no vulndb
    assert main(["--dir", str(data_dir), "scan", "example.com/wheezy:u4", "--fail-on", "severe"]) == 2
    assert main(["--dir", str(data_dir), "scan", f"oci:{tmp_path / 'missing'}"]) == 2
    err = capsys.readouterr().err
    assert "gifee scan:" in err and "Traceback" not in err
