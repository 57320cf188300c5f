from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.version import InvalidVersion as OracleInvalid
from packaging.version import Version as OracleVersion

from gifee.scan.versions import InvalidVersion, pep440
from tests.scan.strategies import pep440_versions


def _oracle_compare(a: str, b: str) -> int:
    va, vb = OracleVersion(a), OracleVersion(b)
    return (va > vb) - (va < vb)


@settings(max_examples=400, deadline=None)
@given(pep440_versions(), pep440_versions())
def test_agrees_with_packaging(a: str, b: str) -> None:
    assert pep440.compare(a, b) == _oracle_compare(a, b)


@settings(max_examples=400, deadline=None)
@given(pep440_versions())
def test_normalisation_agrees_with_packaging(text: str) -> None:
    v = pep440.parse(text)
    assert v.normalized == str(OracleVersion(text))
    assert pep440.parse(v.normalized) == v
    assert hash(pep440.parse(v.normalized)) == hash(v)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789.!+-_abcdefrvpostRC ", max_size=14))
def test_accepts_exactly_what_packaging_accepts(text: str) -> None:
    try:
        OracleVersion(text)
        oracle_ok = True
    except OracleInvalid:
        oracle_ok = False
    try:
        pep440.parse(text)
        ours_ok = True
    except InvalidVersion:
        ours_ok = False
    assert ours_ok == oracle_ok


ORDERED = [
    "1.0.dev0", "1.0a1.dev1", "1.0a1", "1.0a1.post1.dev1", "1.0a1.post1", "1.0b1", "1.0rc1",
    "1.0", "1.0+abc", "1.0+abc.1", "1.0+1", "1.0.post1.dev0", "1.0.post1", "1.0.1", "1.1.dev1", "1!0.1",
]


def test_spec_ordering_table() -> None:
    assert sorted(ORDERED, key=pep440.parse) == ORDERED
    assert sorted(ORDERED, key=OracleVersion) == ORDERED


@pytest.mark.parametrize("a,b", [("1.0", "1.0.0"), ("1.0-1", "1.0.post1"), ("1.0alpha", "1.0a0"), ("v1.0", "1.0"),
                                 ("1.0+Ubuntu-1", "1.0+ubuntu.1"), ("1.0c1", "1.0rc1"), ("01.0", "1.0")])
def test_equal_spellings(a: str, b: str) -> None:
    assert pep440.parse(a) == pep440.parse(b)
    assert hash(pep440.parse(a)) == hash(pep440.parse(b))


@pytest.mark.parametrize("text", ["", "1.0-", "1..0", "a1", "1.0+", "1.0+a..b", "1.0 1", "1.0.postx", "1.0-dev-x"])
def test_malformed_versions_are_refused(text: str) -> None:
    with pytest.raises(InvalidVersion):
        pep440.parse(text)
