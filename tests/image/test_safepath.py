"""The pure rules: tar entry names and decisions, image names and trust prefixes."""

from __future__ import annotations

import posixpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gifee.image.errors import BadReference, UnsafeLayer
from gifee.image.reference import parse_prefix, parse_reference, prefix_covers, prefixes_of
from gifee.image.safepath import classify, entry_path

segments = st.sampled_from(["a", "b", "..", ".", "", "etc", ".wh.x", "c d", "..."])
names = st.lists(segments, min_size=0, max_size=8).map("/".join) | st.text(max_size=30)


@given(names)
def test_entry_path_stays_below_the_root(name: str) -> None:
    try:
        path = entry_path(name)
    except UnsafeLayer as e:
        assert name in str(e) or repr(name) in str(e)
        # refused only if it really climbs out (checked against a model walk)
        depth, escaped = 0, False
        for seg in name.split("/"):
            if seg == "..":
                depth -= 1
                escaped = escaped or depth < 0
            elif seg not in ("", "."):
                depth += 1
        assert escaped or "\x00" in name
        return
    assert all(seg not in ("", ".", "..") and "/" not in seg for seg in path)
    joined = posixpath.normpath(posixpath.join("/root", *path))
    assert joined == "/root" or joined.startswith("/root/")
    # agrees with the lexical normalisation of the same name taken as absolute
    assert "/" + "/".join(path) == posixpath.normpath("/" + name).replace("//", "/") or not path


@pytest.mark.parametrize("name", ["../x", "a/../../x", "./../x", "/../x", "a/b/../../../etc/passwd"])
def test_climbing_names_are_refused(name: str) -> None:
    with pytest.raises(UnsafeLayer, match="outside the root"):
        entry_path(name)


def test_absolute_names_are_made_relative() -> None:
    assert entry_path("/etc/passwd") == ("etc", "passwd")
    assert entry_path("./a/./b/../c") == ("a", "c")


@given(st.integers(min_value=0, max_value=0o7777))
def test_modes_lose_setuid_and_setgid(mode: int) -> None:
    for kind in ("file", "dir", "fifo"):
        entry = classify("x", kind, "", mode)
        assert entry.mode & 0o6000 == 0
        assert entry.mode & 0o1777 == mode & 0o1777


def test_decisions() -> None:
    assert classify("dev/sda", "block", "", 0o660).kind == "skip"
    assert classify("dev/null", "char", "", 0o666).kind == "skip"
    assert classify("a/.wh.b", "file", "", 0).path == ("a", "b")
    assert classify("a/.wh.b", "file", "", 0).kind == "whiteout"
    assert classify("a/.wh..wh..opq", "file", "", 0).path == ("a",)
    assert classify("a/.wh..wh..opq", "file", "", 0).kind == "opaque"
    assert classify("h", "hardlink", "/etc/x", 0).hardlink_target == ("etc", "x")
    assert classify("s", "symlink", "/etc/shadow", 0).symlink_target == "/etc/shadow"
    for bad in [("a/.wh...", "file", ""), ("h", "hardlink", "../x"), ("h", "hardlink", "/"), ("s", "symlink", "")]:
        with pytest.raises(UnsafeLayer):
            classify(bad[0], bad[1], bad[2], 0)


def test_references() -> None:
    assert str(parse_reference("example.com/busybox")) == "example.com/busybox:latest"
    assert parse_reference("localhost:5000/a/b:v1").repository == "localhost:5000/a/b"
    assert parse_reference("localhost:5000/a/b").tag == "latest"
    for bad in ["", "Example/Upper", "a//b", "a/../b", "a:bad tag", "x@sha256:00", "/abs"]:
        with pytest.raises(BadReference):
            parse_reference(bad)


def test_prefixes_match_whole_segments() -> None:
    assert prefix_covers("example.com/app", "example.com/app")
    assert prefix_covers("example.com/app", "example.com/app/x")
    assert not prefix_covers("example.com/app", "example.com/apple")
    assert prefixes_of("example.com/app/x") == ["example.com", "example.com/app", "example.com/app/x"]
    assert parse_prefix("example.com/app/") == "example.com/app"
    for bad in ["../etc", "example.com/../x", "example.com/app:tag", ""]:
        with pytest.raises(BadReference):
            parse_prefix(bad)


@given(st.lists(st.sampled_from(["a", "b", "ab", "a.b"]), min_size=1, max_size=4),
       st.lists(st.sampled_from(["a", "b", "ab", "a.b"]), min_size=1, max_size=4))
def test_prefix_covers_is_segment_prefix(p: list[str], r: list[str]) -> None:
    assert prefix_covers("/".join(p), "/".join(r)) == (r[: len(p)] == p)
