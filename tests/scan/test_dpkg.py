from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gifee.scan.versions import InvalidVersion, dpkg
from tests.scan import oracles
from tests.scan.strategies import dpkg_versions, zero_padded

pytestmark = pytest.mark.skipif(not oracles.have_dpkg(), reason="needs dpkg")

KNOWN = [
    ("1.0", "1.00", 0),
    ("1.0", "1.0-0", 0),
    ("0:1.0", "1.0", 0),
    ("1.0~rc1", "1.0", -1),
    ("1.0~~", "1.0~", -1),
    ("1.0~", "1.0", -1),
    ("1.0", "1.0a", -1),
    ("1.0a", "1.0+", -1),
    ("1.0+", "1.0.", -1),
    ("1:0.1", "2.0", 1),
    ("1.0.1e-2+deb7u4", "1.0.1e-2+deb7u5", -1),
    ("1.0.1e-2+deb7u5", "1.0.1e-2+deb7u10", -1),
    ("2.4.56-1~deb11u1", "2.4.56-1", -1),
    ("1.2-3", "1.2-3.1", -1),
    ("7.26.0-1+wheezy5", "7.26.0-1+wheezy13", -1),
]


@pytest.mark.parametrize("a,b,expected", KNOWN)
def test_known_orderings(a: str, b: str, expected: int) -> None:
    assert dpkg.compare(a, b) == expected
    assert dpkg.compare(b, a) == -expected


def test_known_orderings_agree_with_dpkg() -> None:
    assert oracles.dpkg_compare_many([(a, b) for a, b, _ in KNOWN]) == [e for _, _, e in KNOWN]


@settings(max_examples=12, deadline=None)
@given(st.lists(st.tuples(dpkg_versions(), dpkg_versions()), min_size=40, max_size=40))
def test_agrees_with_dpkg_compare_versions(pairs: list[tuple[str, str]]) -> None:
    assert [dpkg.compare(a, b) for a, b in pairs] == oracles.dpkg_compare_many(pairs)


@settings(max_examples=6, deadline=None)
@given(st.lists(dpkg_versions(), min_size=30, max_size=30))
def test_differently_written_equal_versions(versions: list[str]) -> None:
    pairs = [(v, zero_padded(v)) for v in versions]
    assert oracles.dpkg_compare_many(pairs) == [0] * len(pairs)
    for a, b in pairs:
        assert dpkg.parse(a) == dpkg.parse(b)
        assert hash(dpkg.parse(a)) == hash(dpkg.parse(b))


@pytest.mark.parametrize(
    "text",
    ["", "   ", "a1.0", "1.0-", ":1.0", "x:1.0", "1:", "1.0 2", "1.0_1", "1.0-a_b", "99999999999:1", "1.0-1:2"],
)
def test_malformed_versions_are_refused(text: str) -> None:
    with pytest.raises(InvalidVersion) as info:
        dpkg.parse(text)
    assert repr(text) in str(info.value)
