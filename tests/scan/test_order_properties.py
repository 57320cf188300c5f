"""Every scheme is a total order whose equality and hash agree with its comparison."""

from __future__ import annotations

from collections.abc import Callable
from functools import cmp_to_key

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gifee.scan.versions import APK, DPKG, PEP440, RPM, SEMVER, VersionScheme
from tests.scan.strategies import apk_versions, dpkg_versions, pep440_versions, rpm_versions, semver_versions

SCHEMES: list[tuple[VersionScheme, Callable[[], st.SearchStrategy[str]]]] = [
    (DPKG, dpkg_versions), (RPM, rpm_versions), (APK, apk_versions), (PEP440, pep440_versions),
    (SEMVER, semver_versions),
]


@pytest.mark.parametrize("scheme,versions", SCHEMES, ids=[s.name for s, _ in SCHEMES])
def test_total_order(scheme: VersionScheme, versions: Callable[[], st.SearchStrategy[str]]) -> None:
    @settings(max_examples=300, deadline=None)
    @given(versions(), versions(), versions())
    def check(a: str, b: str, c: str) -> None:
        ab, bc, ac = scheme.compare(a, b), scheme.compare(b, c), scheme.compare(a, c)
        assert scheme.compare(b, a) == -ab  # antisymmetry
        assert scheme.compare(a, a) == 0
        if ab <= 0 and bc <= 0:
            assert ac <= 0  # transitivity
        if ab == 0 and bc == 0:
            assert ac == 0
        va, vb = scheme.parse(a), scheme.parse(b)
        assert (va == vb) == (ab == 0)
        assert (va < vb) == (ab < 0)
        if ab == 0:
            assert hash(va) == hash(vb)

    check()


@pytest.mark.parametrize("scheme,versions", SCHEMES, ids=[s.name for s, _ in SCHEMES])
def test_sorting_is_consistent(scheme: VersionScheme, versions: Callable[[], st.SearchStrategy[str]]) -> None:
    @settings(max_examples=60, deadline=None)
    @given(st.lists(versions(), min_size=2, max_size=12))
    def check(items: list[str]) -> None:
        by_key = sorted(items, key=scheme.parse)
        by_cmp = sorted(items, key=cmp_to_key(scheme.compare))
        assert [scheme.parse(v) for v in by_key] == [scheme.parse(v) for v in by_cmp]
        for i in range(len(by_key)):
            for j in range(i + 1, len(by_key)):
                assert scheme.compare(by_key[i], by_key[j]) <= 0

    check()
