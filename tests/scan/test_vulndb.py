"""The database built from (a part of) the shared real data, through the update command."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gifee import cli
from gifee.scan.vulndb import VulnDB, VulnDBError, database_path, match_package
from gifee.scan.vulndb.update import update

VULNDATA = Path("/work/shared/vulndata")
pytestmark = pytest.mark.skipif(not VULNDATA.is_dir(), reason="needs the shared vulnerability data")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Debian lists, one Alpine release and a few PyPI packages, plus corrupt files."""
    root = tmp_path_factory.mktemp("vulndata")
    shutil.copytree(VULNDATA / "debian-security-tracker", root / "debian-security-tracker")
    shutil.copytree(VULNDATA / "alpine-secdb" / "v3.11", root / "alpine-secdb" / "v3.11")
    for name in ("flask", "werkzeug", "jinja2"):
        shutil.copytree(VULNDATA / "osv-pypi" / "vulns" / name, root / "osv" / name)
    (root / "osv" / "corrupt.yaml").write_text("id: PYSEC-1\naffected: [\n  - {unclosed")
    (root / "osv" / "truncated.json").write_text('{"id": "PYSEC-2", "affected": [')
    (root / "osv" / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage")
    return root


@pytest.fixture(scope="module")
def db_file(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = database_path(tmp_path_factory.mktemp("gifee"))
    report = update(data_dir, path)
    assert set(report.sources) == {"debian-dsa", "debian-dla", "alpine-secdb", "osv"}
    assert any("corrupt.yaml" in w for w in report.warnings)
    assert any("truncated.json" in w for w in report.warnings)
    return path


def test_heartbleed_in_debian_7(db_file: Path) -> None:
    with VulnDB(db_file) as db:
        findings, warnings = match_package(db, "debian:7", "openssl", "1.0.1e-2+deb7u4")
        assert warnings == []
        heartbleed = [f for f in findings if "CVE-2014-0160" in f.advisory.ids]
        assert len(heartbleed) == 1
        assert heartbleed[0].advisory.id == "DSA-2896-1" and heartbleed[0].fixed == "1.0.1e-2+deb7u5"
        findings, _ = match_package(db, "debian:7", "openssl", "1.0.1e-2+deb7u5")
        assert not [f for f in findings if "CVE-2014-0160" in f.advisory.ids]
        assert findings  # later wheezy advisories (DLAs) still apply to deb7u5
        findings, _ = match_package(db, "debian:7", "openssl", "1.0.1t-1+deb7u4")
        assert findings == []


def test_alpine_and_pypi(db_file: Path) -> None:
    with VulnDB(db_file) as db:
        findings, _ = match_package(db, "alpine:v3.11", "openssl", "1.1.1d-r2")
        assert {f.fixed for f in findings if "CVE-2019-1551" in f.advisory.ids} == {"1.1.1d-r3"}
        findings, _ = match_package(db, "alpine:v3.11", "openssl", "1.1.1d-r3")
        assert not [f for f in findings if "CVE-2019-1551" in f.advisory.ids]
        findings, _ = match_package(db, "PyPI", "Flask", "0.12.2")
        assert "PYSEC-2018-66" in {f.advisory.id for f in findings}
        assert {f.fixed for f in findings if f.advisory.id == "PYSEC-2018-66"} == {"0.12.3"}
        findings, _ = match_package(db, "PyPI", "flask", "2.3.3")
        assert "PYSEC-2018-66" not in {f.advisory.id for f in findings}


def test_bad_input_is_a_warning(db_file: Path) -> None:
    with VulnDB(db_file) as db:
        findings, warnings = match_package(db, "debian:7", "openssl", "not a version")
        assert findings == [] and "not a version" in warnings[0]
        findings, warnings = match_package(db, "gentoo", "openssl", "1.0")
        assert findings == [] and "gentoo" in warnings[0]


def test_lookup_by_alias_and_stats(db_file: Path) -> None:
    with VulnDB(db_file) as db:
        assert {(a.id, a.namespace) for a in db.lookup("CVE-2014-0160")} >= {("DSA-2896-1", "debian:7")}
        stats = db.stats()
        assert stats["advisories"] > 10000 and "debian:7" in stats["namespaces"]


def test_update_replaces_atomically(data_dir: Path, tmp_path: Path) -> None:
    path = database_path(tmp_path)
    small = tmp_path / "small" / "DSA"
    small.mkdir(parents=True)
    (small / "list").write_text("[07 Apr 2014] DSA-2896-1 openssl - security update\n\t{CVE-2014-0160}\n"
                                "\t[wheezy] - openssl 1.0.1e-2+deb7u5\n")
    update(small.parent, path)
    old = VulnDB(path)
    assert len(old.advisories("debian:7", "openssl")) == 1
    update(data_dir, path)
    assert len(old.advisories("debian:7", "openssl")) == 1  # an open reader keeps its snapshot
    with VulnDB(path) as new:
        assert len(new.advisories("debian:7", "openssl")) > 1
    old.close()
    with pytest.raises(FileNotFoundError):
        update(tmp_path / "missing", path)
    with VulnDB(path) as still:
        assert len(still.advisories("debian:7", "openssl")) > 1
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_missing_or_corrupt_database(tmp_path: Path) -> None:
    with pytest.raises(VulnDBError, match="vulndb update"):
        VulnDB(tmp_path / "none.sqlite")
    (tmp_path / "junk.sqlite").write_bytes(b"not sqlite" * 100)
    with pytest.raises(VulnDBError):
        VulnDB(tmp_path / "junk.sqlite")


def test_cli(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gdir = str(tmp_path / "g")
    assert cli.main(["--dir", gdir, "vulndb", "update", "--from", str(data_dir)]) == 0
    out = capsys.readouterr()
    assert "debian-dsa" in out.out and "records written" in out.out and "corrupt.yaml" in out.err
    assert cli.main(["--dir", gdir, "vulndb", "show", "CVE-2014-0160"]) == 0
    assert "1.0.1e-2+deb7u5" in capsys.readouterr().out
    assert cli.main(["--dir", gdir, "vulndb", "check", "debian:7", "openssl", "1.0.1e-2+deb7u4"]) == 0
    assert "CVE-2014-0160 (fixed in 1.0.1e-2+deb7u5)" in capsys.readouterr().out
    assert cli.main(["--dir", gdir, "vulndb", "stats"]) == 0
    assert cli.main(["--dir", str(tmp_path / "empty"), "vulndb", "stats"]) == 1
