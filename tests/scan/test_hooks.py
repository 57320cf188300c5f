"""The hooks: the run policy (`check_image`) and the registry's scan of a pushed manifest."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gifee.image.build import build_from_rootfs
from gifee.image.store import ImageStore
from gifee.scan.policy import ScanPolicyError, check_image
from gifee.scan.registry_hook import latest_report, report_path, save_report, scan_manifest
from gifee.scan.vulndb.store import database_path
from tests.scan.layers import wheezy_root


@pytest.fixture
def data_dir(tmp_path: Path, vulndb_dir: Path) -> Path:
    d = tmp_path / "gifee"
    d.mkdir()
    shutil.copy(database_path(vulndb_dir), database_path(d))
    return d


def test_policy_refuses_and_allows(data_dir: Path, tmp_path: Path) -> None:
    store = ImageStore(data_dir / "images")
    image = build_from_rootfs(store, wheezy_root(tmp_path / "u4", "1.0.1e-2+deb7u4"), "example.com/wheezy:u4")
    with pytest.raises(ScanPolicyError) as refused:
        check_image(data_dir, store, image, "unknown")
    assert "vulnerabilities at or above unknown in libssl1.0.0, openssl" in str(refused.value)
    assert refused.value.report is not None and "DSA-2896-1" in {f.id for f in refused.value.report.findings}
    check_image(data_dir, store, image, "high")  # nothing known to be high: runs
    assert list((data_dir / "scan" / "layers").glob("*.json"))  # the next check only matches
    with pytest.raises(ScanPolicyError, match="unknown severity"):
        check_image(data_dir, store, image, "severe")
    database_path(data_dir).unlink()
    with pytest.raises(ScanPolicyError, match="cannot check"):
        check_image(data_dir, store, image, "critical")  # fails closed


def test_registry_scan_of_a_pushed_manifest(data_dir: Path, tmp_path: Path) -> None:
    store = ImageStore(data_dir / "images")
    image = build_from_rootfs(store, wheezy_root(tmp_path / "u4", "1.0.1e-2+deb7u4"), "example.com/wheezy:u4")
    registry = tmp_path / "registry"
    # the registry's layout (gifee.registry.storage): blobs/sha256/<hex[:2]>/<hex>
    for desc in [image.descriptor, image.manifest["config"], *image.layers]:
        hexdigest = desc["digest"].split(":")[1]
        target = registry / "blobs" / "sha256" / hexdigest[:2] / hexdigest
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(store.blob_path(desc["digest"]), target)
    report = scan_manifest(registry, "wheezy", image.manifest_digest, database_path(data_dir))
    assert any(f["id"] == "DSA-2896-1" and f["package"] == "openssl" for f in report["findings"])
    assert list((registry / "scan-cache").glob("*.json"))
    save_report(registry, image.manifest_digest, report)
    assert latest_report(registry, image.manifest_digest) == report
    assert report_path(registry, image.manifest_digest).parent == registry / "scan-reports" / "sha256"
    missing = scan_manifest(registry, "wheezy", "sha256:" + "2" * 64, database_path(data_dir))
    assert missing["findings"] == [] and "not scanned" in missing["warnings"][0]
    assert latest_report(registry, "sha256:" + "3" * 64) is None
    bad = scan_manifest(registry, "wheezy", "../../etc/passwd", database_path(data_dir))
    assert "not scanned" in bad["warnings"][0]
