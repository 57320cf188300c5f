"""apk has no oracle on this machine: a table of orderings from apk-tools' rules and Alpine's
data, plus the total-order properties (in test_order_properties)."""

from __future__ import annotations

import pytest

from gifee.scan.versions import InvalidVersion, apk

# Each list is in ascending order.
CHAINS = [
    ["1.0_alpha", "1.0_alpha1", "1.0_beta", "1.0_pre1", "1.0_rc1", "1.0", "1.0_cvs", "1.0_svn", "1.0_git",
     "1.0_hg", "1.0_p1", "1.0_p2"],
    ["1.0_rc1", "1.0", "1.0-r1", "1.0a", "1.0.1"],
    ["1.0", "1.0-r0", "1.0-r1", "1.0-r2", "1.0-r10"],
    ["1.001", "1.01", "1.1", "1.2", "1.10"],
    ["1.0", "1.0a", "1.0b", "1.0z", "1.1"],
    ["1.0_rc1", "1.0_rc1_p1", "1.0_rc2"],
    ["2.4.41-r0", "2.4.41-r1", "2.4.43-r0"],
    ["1.1.1d-r0", "1.1.1d-r3", "1.1.1g-r0"],
    ["9", "10", "100"],
    ["1.0", "1.0~abc", "1.0~abd", "1.0~abd-r1"],
]


@pytest.mark.parametrize("chain", CHAINS)
def test_known_orderings(chain: list[str]) -> None:
    for i, a in enumerate(chain):
        for j, b in enumerate(chain):
            assert apk.compare(a, b) == (i > j) - (i < j), (a, b)


@pytest.mark.parametrize("a,b", [("01", "1"), ("1.0_rc01", "1.0_rc1"), ("1.0-r01", "1.0-r1")])
def test_equal_spellings(a: str, b: str) -> None:
    assert apk.parse(a) == apk.parse(b)
    assert hash(apk.parse(a)) == hash(apk.parse(b))


@pytest.mark.parametrize(
    "text",
    ["", "a1", "1.0-", "1.0-r", "1.0ab", "1.0a.1", "1.0_foo", "1.0_prefoo", "4.8.0.-r1", "0.8.21.r2", "1.0~", "1.0 1"],
)
def test_malformed_versions_are_refused(text: str) -> None:
    with pytest.raises(InvalidVersion):
        apk.parse(text)
