"""The package-database and release-file parsers: real formats, and bad input as warnings."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from gifee.scan import osrelease
from gifee.scan.facts import read_facts
from gifee.scan.interesting import kind_of
from gifee.scan.inventory import Distro
from gifee.scan.pkgdb import apk, dpkg, npm, python, rpmdb
from gifee.scan.pkgdb.rpmheader import BadHeader, parse_header, source_name


def test_dpkg_status_source_and_states() -> None:
    text = """Package: libssl1.0.0
Status: install ok installed
Source: openssl (1.0.1e-2+deb7u4)
Version: 1.0.1e-2+deb7u4+b1
Architecture: amd64
Description: x
 continued

Package: gone
Status: deinstall ok config-files
Version: 1

Package: nover
Status: install ok installed

garbage line without colon
Package: plain
Status: install ok installed
Version: 2.0-1
"""
    packages, warnings = dpkg.parse_status(text, "/var/lib/dpkg/status")
    by = {p.name: p for p in packages}
    assert set(by) == {"libssl1.0.0", "plain"}
    assert (by["libssl1.0.0"].source_name, by["libssl1.0.0"].source_version) == ("openssl", "1.0.1e-2+deb7u4")
    assert by["libssl1.0.0"].version == "1.0.1e-2+deb7u4+b1"
    assert (by["plain"].match_name, by["plain"].match_version) == ("plain", "2.0-1")
    assert any("nover" in w for w in warnings) and any("line 16" in w for w in warnings)
    distroless, w2 = dpkg.parse_status("Package: base-files\nVersion: 12.4\n", "status.d/base", require_status=False)
    assert [p.name for p in distroless] == ["base-files"] and not w2


def test_apk_installed_uses_origin() -> None:
    text = "C:Q1abc=\nP:libcrypto1.1\nV:1.1.1d-r3\nA:x86_64\no:openssl\nF:lib\nR:libcrypto.so.1.1\n\nP:busybox\nV:1.31.1-r9\n\nX\nV:1\n"
    packages, warnings = apk.parse_installed(text, "/lib/apk/db/installed")
    assert [(p.name, p.match_name, p.version) for p in packages] == [
        ("libcrypto1.1", "openssl", "1.1.1d-r3"), ("busybox", "busybox", "1.31.1-r9")]
    assert len(warnings) == 2  # the bad line, and the entry without P:


def test_python_and_npm_metadata() -> None:
    (p,), _ = python.parse_metadata("Metadata-Version: 2.1\nName: Jinja2\nVersion: 2.10\n\nName: body\n", "m", "Jinja2-2.10.dist-info")
    assert (p.name, p.version, p.kind) == ("Jinja2", "2.10", "python")
    (q,), _ = python.parse_metadata("", "m", "requests-2.19.1.dist-info")
    assert (q.name, q.version) == ("requests", "2.19.1")
    assert python.parse_metadata("", "m", "weird.dist-info")[1]
    (n,), _ = npm.parse_package_json(json.dumps({"name": "@scope/lodash", "version": "4.17.4"}).encode(), "p")
    assert (n.name, n.version) == ("@scope/lodash", "4.17.4")
    for bad in (b"[1]", b"{", b"{\"name\": 3}", b"[" * 100000, b"\xff\xfe"):
        assert npm.parse_package_json(bad, "p") == ([], npm.parse_package_json(bad, "p")[1])
        assert npm.parse_package_json(bad, "p")[1]


def test_wanted_paths() -> None:
    assert kind_of("var/lib/dpkg/status") == "dpkg-status"
    assert kind_of("var/lib/dpkg/status.d/base") == "dpkg-status.d"
    assert kind_of("var/lib/dpkg/status.d/base.md5sums") is None
    assert kind_of("usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA") == "python-metadata"
    assert kind_of("usr/lib/python3/dist-packages/foo-1.0.egg-info") == "python-metadata"
    assert kind_of("usr/lib/python3/dist-packages/foo-1.0.egg-info/PKG-INFO") == "python-metadata"
    assert kind_of("app/node_modules/lodash/package.json") == "npm-package"
    assert kind_of("app/node_modules/@babel/core/package.json") == "npm-package"
    assert kind_of("app/node_modules/lodash/lib/package.json") is None
    assert kind_of("app/package.json") is None
    assert kind_of("etc/passwd") is None


@pytest.mark.parametrize(("kind", "text", "namespace"), [
    ("os-release", 'ID=debian\nVERSION_ID="7"\n', "debian:7"),
    ("os-release", "ID=debian\nPRETTY_NAME='Debian trixie/sid'\n", "debian:unstable"),
    ("os-release", 'ID="alpine"\nVERSION_ID=3.18.4\n', "alpine:v3.18"),
    ("os-release", "ID=alpine\nVERSION_ID=3.19_alpha20230901\n", "alpine:edge"),
    ("os-release", 'ID=ubuntu\nVERSION_ID="22.04"\n', "ubuntu:22.04"),
    ("os-release", 'ID="centos"\nVERSION_ID="7"\n', "centos:7"),
    ("debian_version", "6.0.10\n", "debian:6"),
    ("alpine-release", "3.11.6\n", "alpine:v3.11"),
    ("redhat-release", "CentOS release 6.10 (Final)\n", "centos:6"),
    ("redhat-release", "Red Hat Enterprise Linux Server release 7.9 (Maipo)\n", "rhel:7"),
    ("lsb-release", "DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=14.04\n", "ubuntu:14.04"),
])
def test_release_files_and_namespaces(kind: str, text: str, namespace: str) -> None:
    facts = read_facts(kind, "etc/x", text.encode())
    assert facts.distro is not None and osrelease.namespace(facts.distro) == namespace


def test_release_garbage() -> None:
    for kind in ("os-release", "debian_version", "alpine-release", "redhat-release", "lsb-release"):
        for data in (b"", b"\x00\xff\xfe" * 50, b"=\n==\nID\n", b"jessie/sid"):
            facts = read_facts(kind, "etc/x", data)
            assert facts.distro is None or isinstance(facts.distro, Distro)
    assert osrelease.namespace(Distro("fedora", "")) is None


def _header(entries: list[tuple[int, int, bytes]]) -> bytes:
    index, store = b"", b""
    for tag, kind, data in entries:
        index += struct.pack(">IIiI", tag, kind, len(store), 1)
        store += data
    return struct.pack(">II", len(entries), len(store)) + index + store


def test_rpm_header_structure_and_damage() -> None:
    blob = _header([(1000, 6, b"bash\x00"), (1001, 6, b"4.2.46\x00"), (1002, 6, b"34.el7\x00"),
                    (1003, 4, struct.pack(">i", 2)), (1044, 6, b"bash-4.2.46-34.el7.src.rpm\x00")])
    tags = parse_header(blob)
    assert tags == {1000: "bash", 1001: "4.2.46", 1002: "34.el7", 1003: 2, 1044: "bash-4.2.46-34.el7.src.rpm"}
    assert parse_header(b"\x8e\xad\xe8\x01\x00\x00\x00\x00" + blob) == tags
    assert source_name("openssl-1.0.2k-19.el7.src.rpm") == "openssl" and source_name("junk") == ""
    for cut in range(len(blob)):
        try:
            parse_header(blob[:cut])
        except BadHeader:
            pass
    with pytest.raises(BadHeader):
        parse_header(struct.pack(">II", 1 << 30, 0))
    with pytest.raises(BadHeader):
        parse_header(_header([(1000, 6, b"unterminated")]))


needs_rpm = pytest.mark.skipif(shutil.which("rpm") is None or shutil.which("rpmbuild") is None, reason="rpm tools missing")
SPEC = """Name: {name}
Version: {version}
Release: {release}
{epoch}Summary: test package
License: MIT
BuildArch: noarch
%description
test
%files
"""


def make_rpmdb(tmp: Path, packages: list[tuple[str, str, str, int | None]]) -> Path:
    """A real rpmdb.sqlite written by rpm itself, holding hand-made (empty) packages."""
    top, db = tmp / "top", tmp / "db"
    db.mkdir(parents=True)
    define = ["--define", "_db_backend sqlite", "--dbpath", str(db)]
    subprocess.run(["rpm", *define, "--initdb"], check=True, capture_output=True)
    for name, version, release, epoch in packages:
        spec = tmp / f"{name}.spec"
        spec.write_text(SPEC.format(name=name, version=version, release=release,
                                    epoch=f"Epoch: {epoch}\n" if epoch is not None else ""))
        subprocess.run(["rpmbuild", "-bb", "--define", f"_topdir {top}", str(spec)], check=True, capture_output=True)
    rpms = sorted(str(p) for p in (top / "RPMS").rglob("*.rpm"))
    subprocess.run(["rpm", *define, "-i", "--justdb", "--nodeps", "--noscripts", "--ignorearch", "--ignoreos", *rpms],
                   check=True, capture_output=True)
    return db / "rpmdb.sqlite"


@needs_rpm
def test_real_rpmdb(tmp_path: Path) -> None:
    path = make_rpmdb(tmp_path, [("openssl-libs", "1.0.2k", "19.el7", 1), ("bash", "4.2.46", "34.el7", None)])
    packages, warnings = rpmdb.parse_rpmdb(path.read_bytes(), "/var/lib/rpm/rpmdb.sqlite")
    assert not warnings
    assert sorted((p.name, p.version, p.arch) for p in packages) == [
        ("bash", "4.2.46-34.el7", "noarch"), ("openssl-libs", "1:1.0.2k-19.el7", "noarch")]
    data = path.read_bytes()
    for cut in (0, 50, 100, 4096, len(data) // 2):
        pk, w = rpmdb.parse_rpmdb(data[:cut], "x")
        assert w or pk  # truncated: a warning (or, if SQLite still reads it, packages) — never an exception
    assert rpmdb.parse_rpmdb(b"SQLite format 3\x00" + b"\xff" * 5000, "x")[1]
    assert rpmdb.parse_rpmdb(b"not sqlite at all", "x")[1]
