"""Hypothesis strategies that write versions the way each ecosystem writes them, from small
alphabets so that equal, nearly-equal and equal-but-differently-written versions are common."""

from __future__ import annotations

from hypothesis import strategies as st

small_number = st.sampled_from(["0", "1", "2", "9", "10", "00", "01", "010", "100"])


@st.composite
def dpkg_versions(draw: st.DrawFn) -> str:
    """[epoch:]upstream[-revision] with tildes, letters, plus signs, dots and hyphens."""

    def chunk(first_digit: bool) -> str:
        parts = [draw(small_number)] if first_digit else []
        for _ in range(draw(st.integers(0, 4))):
            parts.append(draw(st.sampled_from([".", "~", "+", "a", "b", "z", "A", "~~", "."])))
            parts.append(draw(st.sampled_from(["", "0", "1", "2", "00", "10"])))
        return "".join(parts)

    epoch = draw(st.sampled_from(["", "", "", "0:", "1:", "2:", "01:"]))
    upstream = chunk(True)
    if epoch and draw(st.booleans()):
        upstream += ":" + draw(small_number)  # colons are legal in upstream when there is an epoch
    revision = ""
    if draw(st.booleans()):
        if draw(st.booleans()):
            upstream += "-" + draw(small_number)  # hyphens are legal in upstream when there is a revision
        revision = "-" + (chunk(True) if draw(st.booleans()) else draw(st.sampled_from(["a", "deb7u1", "~1"])))
    return epoch + upstream + revision


def zero_padded(version: str) -> str:
    """Another spelling of the same number sequence: every number gets a leading zero."""
    out = []
    prev_digit = False
    for c in version:
        if c.isdigit() and not prev_digit:
            out.append("0")
        out.append(c)
        prev_digit = c.isdigit()
    return "".join(out)


@st.composite
def rpm_versions(draw: st.DrawFn, with_release: bool | None = None) -> str:
    """[epoch:]version[-release] with separators, letters, tildes and carets."""

    def part() -> str:
        parts = [draw(small_number)]
        for _ in range(draw(st.integers(0, 4))):
            parts.append(draw(st.sampled_from([".", "_", "+", "~", "^", "", "..", "a", "b", "rc", "Z"])))
            parts.append(draw(st.sampled_from(["", "0", "1", "2", "01", "10", "a", "b"])))
        return "".join(parts)

    epoch = draw(st.sampled_from(["", "", "0:", "1:", "2:"]))
    if with_release is None:
        with_release = draw(st.booleans())
    release = "-" + part() if with_release else ""
    return epoch + part() + release


@st.composite
def apk_versions(draw: st.DrawFn) -> str:
    numbers = [draw(st.sampled_from(["0", "1", "2", "10", "01", "001"]))] + draw(
        st.lists(st.sampled_from(["0", "1", "2", "10", "01", "001", "00"]), max_size=3)
    )
    first = numbers[0].lstrip("0") or "0"
    s = ".".join([first, *numbers[1:]])
    s += draw(st.sampled_from(["", "", "a", "b", "z"]))
    for _ in range(draw(st.integers(0, 2))):
        s += "_" + draw(st.sampled_from(["alpha", "beta", "pre", "rc", "cvs", "svn", "git", "hg", "p"]))
        s += draw(st.sampled_from(["", "0", "1", "2", "10"]))
    s += draw(st.sampled_from(["", "", "~abc", "~abd", "~1f"]))
    s += draw(st.sampled_from(["", "", "-r0", "-r1", "-r2", "-r10"]))
    return s


@st.composite
def pep440_versions(draw: st.DrawFn) -> str:
    """PEP 440 versions in canonical and in the alternative spellings the spec normalises."""
    s = draw(st.sampled_from(["", "", "", "v", "V", " "]))
    s += draw(st.sampled_from(["", "", "", "1!", "0!", "2!"]))
    s += ".".join(draw(st.lists(st.sampled_from(["0", "1", "2", "10", "00", "01"]), min_size=1, max_size=4)))
    sep = st.sampled_from(["", ".", "-", "_"])
    if draw(st.booleans()):
        s += draw(sep) + draw(st.sampled_from(["a", "b", "rc", "c", "alpha", "beta", "pre", "preview", "RC"]))
        s += draw(sep) + draw(st.sampled_from(["", "0", "1", "2", "01"]))
    post = draw(st.integers(0, 3))
    if post == 1:
        s += "-" + draw(st.sampled_from(["0", "1", "2"]))
    elif post >= 2:
        s += draw(sep) + draw(st.sampled_from(["post", "rev", "r", "POST"])) + draw(sep)
        s += draw(st.sampled_from(["", "0", "1", "2"]))
    if draw(st.booleans()):
        s += draw(sep) + draw(st.sampled_from(["dev", "DEV"])) + draw(st.sampled_from(["", "0", "1", "2"]))
    if draw(st.integers(0, 3)) == 0:
        segments = st.sampled_from(["1", "2", "01", "abc", "ABC", "ubuntu", "a1", "0"])
        segs = draw(st.lists(segments, min_size=1, max_size=3))
        s += "+" + "".join(seg + draw(sep) if i < len(segs) - 1 else seg for i, seg in enumerate(segs))
    return s


@st.composite
def semver_versions(draw: st.DrawFn) -> str:
    core = ".".join(draw(st.sampled_from(["0", "1", "2", "10"])) for _ in range(3))
    if draw(st.booleans()):
        identifiers = st.sampled_from(["alpha", "beta", "rc", "0", "1", "2", "11", "x-y", "1a", "-", "Alpha"])
        ids = draw(st.lists(identifiers, min_size=1, max_size=3))
        core += "-" + ".".join(ids)
    if draw(st.integers(0, 3)) == 0:
        core += "+" + draw(st.sampled_from(["build", "001", "sha.5114f85", "a-b"]))
    return core
