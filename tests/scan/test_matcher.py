from __future__ import annotations

from gifee.scan.versions import dpkg, pep440, semver
from gifee.scan.vulndb import Advisory, Event, Range, affected, fixed_version
from gifee.scan.vulndb.model import FIXED, NOT_AFFECTED, RANGES, UNFIXED


def osv_advisory(*events: tuple[str, str], kind: str = "ECOSYSTEM", versions: tuple[str, ...] = ()) -> Advisory:
    return Advisory("X-1", "PyPI", "p", RANGES, ranges=(Range(kind, tuple(Event(k, v) for k, v in events)),),
                    versions=versions)


def test_introduced_fixed_intervals() -> None:
    a = osv_advisory(("fixed", "2.0"), ("introduced", "1.5"), ("introduced", "0"), ("fixed", "1.0"))
    cmp = pep440.compare
    assert [affected(a, v, cmp) for v in ["0.1", "1.0rc1", "1.0", "1.4", "1.5", "1.9.9", "2.0", "3"]] == [
        True, True, False, False, True, True, False, False]
    assert fixed_version(a, "0.5", cmp) == "1.0"
    assert fixed_version(a, "1.6", cmp) == "2.0"


def test_last_affected_and_open_ranges() -> None:
    cmp = pep440.compare
    a = osv_advisory(("introduced", "1.0"), ("last_affected", "1.2"))
    assert [affected(a, v, cmp) for v in ["0.9", "1.0", "1.2", "1.2.post1"]] == [False, True, True, False]
    assert fixed_version(a, "1.1", cmp) is None
    b = osv_advisory(("introduced", "3.0"))
    assert affected(b, "99", cmp) and not affected(b, "2.9", cmp)


def test_listed_versions_match_by_value() -> None:
    a = osv_advisory(kind="GIT", versions=("0.12", "legacy-version"))
    assert affected(a, "0.12.0", pep440.compare)
    assert not affected(a, "0.13", pep440.compare)


def test_semver_ranges_use_semver() -> None:
    a = osv_advisory(("introduced", "1.0.0-rc.1"), ("fixed", "1.0.0"), kind="SEMVER")
    assert affected(a, "1.0.0-rc.2", semver.compare)
    assert not affected(a, "1.0.0", semver.compare)


def test_distribution_fix_wins_over_upstream_ranges() -> None:
    # Upstream says 1.0.1 through 1.0.1f are vulnerable; Debian patched 1.0.1e in deb7u5.
    upstream = (Range("ECOSYSTEM", (Event("introduced", "1.0.1"), Event("fixed", "1.0.1g"))),)
    a = Advisory("DSA-2896-1", "debian:7", "openssl", FIXED, fixed="1.0.1e-2+deb7u5", ranges=upstream)
    assert affected(a, "1.0.1e-2+deb7u4", dpkg.compare)
    assert not affected(a, "1.0.1e-2+deb7u5", dpkg.compare)
    assert not affected(a, "1.0.1e-2+deb7u10", dpkg.compare)
    assert fixed_version(a, "1.0.1e-2+deb7u4", dpkg.compare) == "1.0.1e-2+deb7u5"


def test_statuses() -> None:
    assert not affected(Advisory("A", "debian:7", "p", NOT_AFFECTED), "1.0", dpkg.compare)
    unfixed = Advisory("A", "debian:7", "p", UNFIXED)
    assert affected(unfixed, "99:1.0", dpkg.compare) and fixed_version(unfixed, "1.0", dpkg.compare) is None
