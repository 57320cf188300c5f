from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gifee.scan.versions import InvalidVersion, rpm
from tests.scan import oracles
from tests.scan.strategies import rpm_versions

pytestmark = pytest.mark.skipif(not oracles.have_rpm(), reason="needs rpm")

KNOWN = [
    ("1.0", "1.0", 0),
    ("1.0", "1_0", 0),
    ("1.0", "1..0", 0),
    ("1.0", "1.0.", 0),
    ("1.01", "1.1", 0),
    ("1.0a", "1.0.a", 0),
    ("1.0", "1.0a", -1),
    ("1.0a", "1.0.1", -1),
    ("a", "1", -1),
    ("1.0~rc1", "1.0", -1),
    ("1.0~rc1", "1.0~rc2", -1),
    ("1.0^", "1.0", 1),
    ("1.0^git1", "1.0.1", -1),
    ("1.0^git1", "1.0~rc1", 1),
    ("1:1.0-1", "2.0-1", 1),
    ("1.0-1", "1.0-2", -1),
    ("2.0.1-1.el7", "2.0.1-1.el7_9", -1),
]


@pytest.mark.parametrize("a,b,expected", KNOWN)
def test_known_orderings(a: str, b: str, expected: int) -> None:
    assert rpm.compare(a, b) == expected
    assert rpm.compare(b, a) == -expected


def test_known_orderings_agree_with_rpm() -> None:
    assert oracles.rpm_compare_many([(a, b) for a, b, _ in KNOWN]) == [e for _, _, e in KNOWN]


# rpm skips the release when one side lacks it (not a total order); our order puts a missing
# release first, so only pairs that agree on having one are comparable with rpm's.
comparable_pairs = st.booleans().flatmap(lambda release: st.tuples(rpm_versions(release), rpm_versions(release)))


@settings(max_examples=12, deadline=None)
@given(st.lists(comparable_pairs, min_size=60, max_size=60))
def test_agrees_with_rpm_vercmp(pairs: list[tuple[str, str]]) -> None:
    assert [rpm.compare(a, b) for a, b in pairs] == oracles.rpm_compare_many(pairs)


@settings(max_examples=6, deadline=None)
@given(st.lists(st.tuples(rpm_versions(), rpm_versions()), min_size=60, max_size=60))
def test_bare_vercmp_agrees_with_rpm(pairs: list[tuple[str, str]]) -> None:
    # Compare whole strings as one rpmvercmp part: hyphens and colons are then separators.
    bare = [(a.replace(":", "."), b.replace(":", ".")) for a, b in pairs]
    wrapped = [(f"0:{a}-1", f"0:{b}-1") for a, b in bare]
    # rpm.vercmp would parse hyphens: keep only pairs with none inside the bare strings.
    kept = [(w, p) for w, p in zip(wrapped, bare, strict=True) if "-" not in p[0] and "-" not in p[1]]
    expected = oracles.rpm_compare_many([w for w, _ in kept])
    assert [rpm.vercmp(a, b) for _, (a, b) in kept] == expected


def test_missing_release_sorts_first() -> None:
    assert rpm.compare("1.0", "1.0-1") == -1


@pytest.mark.parametrize("text", ["", "1.0-", "x:1.0", "1.0 1", "1:2:3", "-1", "1.0\x00"])
def test_malformed_versions_are_refused(text: str) -> None:
    with pytest.raises(InvalidVersion):
        rpm.parse(text)
