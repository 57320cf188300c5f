"""The layer indexer: layered views (whiteouts, opaque directories, symlinks), the per-layer
cache, and hostile or broken input becoming warnings without reads outside the image."""

from __future__ import annotations

import gzip
import io
import json
import os
from pathlib import Path

import pytest

from gifee.scan import interesting
from gifee.scan.layercache import LayerCache
from gifee.scan.scanner import Timing, image_inventory, root_inventory, scan_image
from gifee.scan.tarindex import index_layer
from gifee.scan.vulndb.store import VulnDB
from tests.scan.layers import WHEEZY_OS_RELEASE, Layer, digest, image_of, wheezy_status

SITE = "usr/lib/python3/dist-packages"


def base_layer() -> bytes:
    return (Layer().dir("etc").file("usr/lib/os-release", WHEEZY_OS_RELEASE).symlink("etc/os-release", "../usr/lib/os-release")
            .file("var/lib/dpkg/status", wheezy_status("1.0.1e-2+deb7u4"))
            .file(f"{SITE}/Jinja2-2.10.dist-info/METADATA", "Name: Jinja2\nVersion: 2.10\n")
            .file(f"{SITE}/requests-2.19.1.dist-info/METADATA", "Name: requests\nVersion: 2.19.1\n")
            .file("app/node_modules/lodash/package.json", '{"name": "lodash", "version": "4.17.4"}')
            .gzip_bytes())


def names(inv_packages: list[object]) -> set[str]:
    return {p.name for p in inv_packages}  # type: ignore[attr-defined]


def test_layers_whiteouts_opaque_and_symlinks(tmp_path: Path) -> None:
    top = (Layer().whiteout(f"{SITE}/Jinja2-2.10.dist-info")
           .file(f"{SITE}/Jinja2-2.11.3.dist-info/METADATA", "Name: Jinja2\nVersion: 2.11.3\n")
           .opaque("app/node_modules").file("app/node_modules/left-pad/package.json", '{"name":"left-pad","version":"1.3.0"}')
           .gzip_bytes())
    inv = image_inventory(image_of(base_layer(), top), LayerCache(None))
    assert inv.distro is not None and inv.distro.version_id == "7"
    versions = {(p.kind, p.name): p.version for p in inv.packages}
    assert versions[("python", "Jinja2")] == "2.11.3" and versions[("python", "requests")] == "2.19.1"
    assert ("npm", "lodash") not in versions and versions[("npm", "left-pad")] == "1.3.0"
    assert versions[("deb", "openssl")] == "1.0.1e-2+deb7u4"
    layer_of = {p.name: p.layer for p in inv.packages}
    assert layer_of["openssl"] == digest(base_layer()) and layer_of["left-pad"] == digest(top)


def test_deleted_and_replaced_package_database() -> None:
    gone = image_inventory(image_of(base_layer(), Layer().whiteout("var/lib/dpkg").gzip_bytes()), LayerCache(None))
    assert not [p for p in gone.packages if p.kind == "deb"]
    newer = Layer().file("var/lib/dpkg/status", wheezy_status("1.0.1e-2+deb7u5")).gzip_bytes()
    inv = image_inventory(image_of(base_layer(), newer), LayerCache(None))
    assert {p.version for p in inv.packages if p.kind == "deb"} == {"1.0.1e-2+deb7u5"}
    # a symlink over the database directory hides the lower database too
    moved = Layer().symlink("var/lib/dpkg", "/nowhere").gzip_bytes()
    assert not [p for p in image_inventory(image_of(base_layer(), moved), LayerCache(None)).packages if p.kind == "deb"]


def test_rpm_database_through_a_symlinked_directory(tmp_path: Path) -> None:
    from tests.scan.test_pkgdb import make_rpmdb, needs_rpm

    if needs_rpm.args[0]:
        pytest.skip("rpm tools missing")
    db = make_rpmdb(tmp_path, [("openssl-libs", "1.0.2k", "19.el7", 1)]).read_bytes()
    layer = (Layer().file("etc/os-release", 'ID="centos"\nVERSION_ID="7"\n')
             .symlink("var/lib/rpm", "../../usr/lib/sysimage/rpm")
             .file("usr/lib/sysimage/rpm/rpmdb.sqlite", db).gzip_bytes())
    inv = image_inventory(image_of(layer), LayerCache(None))
    assert [(p.kind, p.name, p.version) for p in inv.packages] == [("rpm", "openssl-libs", "1:1.0.2k-19.el7")]


def test_cache_is_used_for_shared_layers(tmp_path: Path, db: VulnDB) -> None:
    base, extra = base_layer(), Layer().file("etc/motd", "hi").gzip_bytes()
    first, second = Timing(), Timing()
    r1 = scan_image(image_of(base), db, tmp_path / "cache", first)
    r2 = scan_image(image_of(base, extra), db, tmp_path / "cache", second)
    assert (first.indexed, first.cached, second.indexed, second.cached) == (1, 0, 1, 1)
    assert (tmp_path / "cache" / (digest(base).split(":")[1] + ".json")).is_file()
    assert {f.id for f in r1.findings} == {f.id for f in r2.findings} and "DSA-2896-1" in {f.id for f in r1.findings}
    assert {f.namespace for f in r1.findings} == {"debian:7", "PyPI"}  # Jinja2 2.10 and requests 2.19.1 too
    # a damaged cache file is a miss, not an error
    (tmp_path / "cache" / (digest(base).split(":")[1] + ".json")).write_text("{garbage")
    third = Timing()
    scan_image(image_of(base), db, tmp_path / "cache", third)
    assert third.indexed == 1


def test_truncated_and_corrupt_layers_are_warnings(tmp_path: Path) -> None:
    blob = base_layer()
    for cut in list(range(0, len(blob), max(1, len(blob) // 60))) + [len(blob) - 1]:
        index = index_layer(io.BytesIO(blob[:cut]), "gzip", digest(blob), "layer")
        assert not index.complete and index.warnings
    garbage = index_layer(io.BytesIO(os.urandom(5000)), "zstd", None, "layer")
    assert not garbage.complete and "corrupt" in garbage.warnings[0]
    cache = LayerCache(tmp_path)
    bad = image_of(blob[: len(blob) // 2])
    inv = image_inventory(bad, cache)
    assert inv.warnings and not list(tmp_path.iterdir())  # incomplete layers are never cached


def test_wrong_digest_is_not_trusted_or_cached(tmp_path: Path) -> None:
    claimed = "sha256:" + "1" * 64
    inv = image_inventory(image_of(base_layer(), claimed=[claimed]), LayerCache(tmp_path))
    assert any("hashes to" in w for w in inv.warnings) and not list(tmp_path.iterdir())


def test_escaping_entries_loops_and_huge_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(interesting.SIZE_CAPS, "dpkg-status", 1000)
    layer = (Layer().file("../../etc/shadow", "x").file("a/../../../escape", "x")
             .symlink("etc/os-release", "../etc/os-release")  # points at itself: a loop
             .symlink("lib", "../../../../usr/lib")  # climbs above the root: stays inside
             .file("usr/lib/apk/db/installed", "P:big\nV:1\n" + "X:" + "y" * 2000 + "\n")
             .file("var/lib/dpkg/status", "Package: big\n" + "X: " + "y" * 2000 + "\n")
             .gzip_bytes())
    inv = image_inventory(image_of(layer), LayerCache(None))
    text = "\n".join(inv.warnings)
    assert "leads outside the root" in text
    assert "more than 40 symlinks" in text
    assert "/var/lib/dpkg/status: 2017 bytes is more than the 1000-byte limit" in text
    assert [(p.name, p.path) for p in inv.packages] == [("big", "/usr/lib/apk/db/installed")]  # via lib -> usr/lib


def test_resolution_stays_inside() -> None:
    from gifee.scan.layerindex import resolve

    links = {"a": "../../../../b", "b": "/c/../../d", "d": "e", "loop1": "loop2", "loop2": "loop1"}
    assert resolve(links, "a/x") == ("e/x", None)
    assert resolve(links, "../../etc/passwd") == ("etc/passwd", None)
    assert resolve(links, "loop1/x")[0] is None


def test_hardlinked_database_and_bad_npm() -> None:
    layer = (Layer().file("tmp/status", wheezy_status("1.0.1e-2+deb7u4"))
             .file("var/lib/dpkg/status", wheezy_status("1.0.1e-2+deb7u4"))
             .hardlink("var/lib/dpkg/status.d/copy", "var/lib/dpkg/status")
             .file("n/node_modules/x/package.json", "{not json").gzip_bytes())
    inv = image_inventory(image_of(layer), LayerCache(None))
    assert sorted(p.path for p in inv.packages if p.name == "openssl") == ["/var/lib/dpkg/status", "/var/lib/dpkg/status.d/copy"]
    assert any("not valid JSON" in w for w in inv.warnings)


def test_root_directory_never_leaves_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "var/lib").mkdir(parents=True)
    os.symlink("/etc/os-release", root / "etc/os-release")  # absolute: means <root>/etc/os-release, a loop
    os.symlink("/var/lib/dpkg", root / "var/lib/dpkg")  # would be the host's database if followed
    (root / "usr/lib/x/node_modules/evil").mkdir(parents=True)
    os.symlink("/etc/passwd", root / "usr/lib/x/node_modules/evil/package.json")
    os.mkfifo(root / "etc/lsb-release")  # reading a FIFO would hang: it is not a regular file
    inv = root_inventory(root)
    assert inv.packages == [] and inv.distro is None
    assert any("symlinks" in w for w in inv.warnings)


def test_debian_testing_takes_the_version_from_debian_version() -> None:
    layer = (Layer().file("etc/os-release", 'ID=debian\nPRETTY_NAME="Debian GNU/Linux trixie/sid"\n')
             .file("etc/debian_version", "trixie/sid\n").gzip_bytes())
    inv = image_inventory(image_of(layer), LayerCache(None))
    assert inv.distro is not None and inv.distro.id == "debian" and inv.distro.version_id == ""


def test_layer_index_round_trips_through_json() -> None:
    from gifee.scan.layerindex import LayerIndex

    index = index_layer(io.BytesIO(base_layer()), "gzip", None, "layer")
    again = LayerIndex.from_dict(json.loads(json.dumps(index.to_dict())))
    assert again == index
    assert index_layer(io.BytesIO(gzip.decompress(base_layer())), "none", None, "l").files.keys() == index.files.keys()


def test_alpine_and_python_roots_are_matched(tmp_path: Path, db: VulnDB) -> None:
    from gifee.scan.scanner import scan_root

    root = tmp_path / "alpine"
    (root / "etc").mkdir(parents=True)
    (root / "lib/apk/db").mkdir(parents=True)
    (root / "etc/os-release").write_text('NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.10.2\n')
    installed = "P:libcrypto1.1\nV:{v}\nA:x86_64\no:openssl\n\nP:musl\nV:1.1.22-r3\no:musl\n"
    (root / "lib/apk/db/installed").write_text(installed.format(v="1.1.1c-r0"))
    site = root / "usr/lib/python3.7/site-packages/Jinja2-2.10.dist-info"
    site.mkdir(parents=True)
    (site / "METADATA").write_text("Name: Jinja2\nVersion: 2.10\n")
    report = scan_root(root, db)
    assert report.namespace == "alpine:v3.10"
    by = {(f.id, f.package): f for f in report.findings}
    crypto = by[("CVE-2019-1547", "libcrypto1.1")]
    assert crypto.fixed == "1.1.1d-r0" and crypto.source_package == "openssl"
    assert crypto.action == "upgrade libcrypto1.1 from 1.1.1c-r0 to 1.1.1d-r0"
    jinja = by[("PYSEC-2019-217", "Jinja2")]
    assert jinja.namespace == "PyPI" and jinja.fixed == "2.10.1" and "CVE-2019-10906" in jinja.aliases
    (root / "lib/apk/db/installed").write_text(installed.format(v="1.1.1d-r0"))
    assert ("CVE-2019-1547", "libcrypto1.1") not in {(f.id, f.package) for f in scan_root(root, db).findings}
