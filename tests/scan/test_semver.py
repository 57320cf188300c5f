from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gifee.scan.versions import InvalidVersion, semver
from tests.scan import oracles
from tests.scan.strategies import semver_versions

# The precedence example from semver 2.0.0, section 11.
SPEC_ORDER = [
    "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11",
    "1.0.0-rc.1", "1.0.0", "2.0.0", "2.1.0", "2.1.1",
]


def test_spec_precedence_example() -> None:
    for i, a in enumerate(SPEC_ORDER):
        for j, b in enumerate(SPEC_ORDER):
            assert semver.compare(a, b) == (i > j) - (i < j), (a, b)


def _spec_compare(a: str, b: str) -> int:
    """Section 11 of the spec, written out step by step (an independent reading of the rules)."""
    def split(v: str) -> tuple[list[int], list[str]]:
        v = v.split("+", 1)[0]
        core, _, pre = v.partition("-")
        return [int(x) for x in core.split(".")], (pre.split(".") if pre else [])

    (ca, pa), (cb, pb) = split(a), split(b)
    if ca != cb:
        return -1 if ca < cb else 1
    if not pa or not pb:
        return 0 if not pa and not pb else (1 if not pa else -1)
    for x, y in zip(pa, pb, strict=False):
        if x == y:
            continue
        if x.isdigit() and y.isdigit():
            return -1 if int(x) < int(y) else 1
        if x.isdigit() != y.isdigit():
            return -1 if x.isdigit() else 1
        return -1 if x < y else 1
    return (len(pa) > len(pb)) - (len(pa) < len(pb))


@settings(max_examples=500, deadline=None)
@given(semver_versions(), semver_versions())
def test_agrees_with_the_spec_rules(a: str, b: str) -> None:
    assert semver.compare(a, b) == _spec_compare(a, b)


@pytest.mark.skipif(not oracles.have_node_semver(), reason="node-semver not installed (npm install semver)")
@settings(max_examples=5, deadline=None)
@given(st.lists(st.tuples(semver_versions(), semver_versions()), min_size=100, max_size=100))
def test_agrees_with_node_semver(pairs: list[tuple[str, str]]) -> None:
    assert [semver.compare(a, b) for a, b in pairs] == oracles.node_semver_compare_many(pairs)


def test_build_metadata_is_ignored() -> None:
    assert semver.parse("1.0.0+a") == semver.parse("1.0.0+b")
    assert hash(semver.parse("1.0.0+a")) == hash(semver.parse("1.0.0"))


@pytest.mark.parametrize("text", ["", "1", "1.0", "01.0.0", "1.0.0-", "1.0.0-01", "1.0.0+", "1.0.0-a..b", "1.0.0.0"])
def test_malformed_versions_are_refused(text: str) -> None:
    with pytest.raises(InvalidVersion):
        semver.parse(text)
