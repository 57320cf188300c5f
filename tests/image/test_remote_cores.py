"""The registry client's pure parts: references, copy endpoints, auth challenges, ranges,
upload chunks, the fallback referrers index and progress lines."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gifee.image import distribution, oci
from gifee.image.errors import BadImage, BadReference
from gifee.image.progress import Progress
from gifee.image.remoteref import RemoteRef, default_scheme, parse_endpoint, parse_remote

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:5000/example/busybox:1", RemoteRef("127.0.0.1:5000", "example/busybox", "1", None)),
    ("127.0.0.1:5000/busybox", RemoteRef("127.0.0.1:5000", "busybox", "latest", None)),
    ("localhost/a/b", RemoteRef("localhost", "a/b", "latest", None)),
    ("quay.io/coreos/etcd:v3.0", RemoteRef("quay.io", "coreos/etcd", "v3.0", None)),
    (f"127.0.0.1:5000/x@{DIGEST}", RemoteRef("127.0.0.1:5000", "x", None, DIGEST)),
    (f"127.0.0.1:5000/x:1@{DIGEST}", RemoteRef("127.0.0.1:5000", "x", "1", DIGEST)),
])
def test_parse_remote(text: str, expected: RemoteRef) -> None:
    ref = parse_remote(text)
    assert ref == expected
    assert ref.reference == (expected.digest or expected.tag)
    assert parse_remote(str(ref)) == ref


@pytest.mark.parametrize("text, words", [
    ("busybox:1", "registry host"),
    ("example/busybox", "registry host"),
    ("127.0.0.1:5000/", "registry host"),
    ("127.0.0.1:5000/Upper/x", "lower-case"),
    ("127.0.0.1:5000/x/../y", "lower-case"),
    ("127.0.0.1:5000/x:bad tag", "tag"),
    ("127.0.0.1:5000/x@sha256:abc", "not a digest"),
    ("127.0.0.1:5000/x@md5:" + "a" * 32, "not a digest"),
])
def test_parse_remote_refuses(text: str, words: str) -> None:
    with pytest.raises(BadReference, match=words):
        parse_remote(text)


def test_local_name() -> None:
    assert parse_remote("127.0.0.1:5000/x/busybox:1").local_name == "127.0.0.1:5000/x/busybox:1"
    assert parse_remote("127.0.0.1:5000/x/busybox").local_name == "127.0.0.1:5000/x/busybox:latest"


def test_endpoints() -> None:
    e = parse_endpoint("docker://127.0.0.1:5000/a/b:1")
    assert e.kind == "docker" and e.remote == RemoteRef("127.0.0.1:5000", "a/b", "1", None)
    assert parse_endpoint("oci:/tmp/lay:v1") == parse_endpoint("oci:/tmp/lay:v1")
    e = parse_endpoint("oci:/tmp/lay:v1")
    assert (e.kind, e.path, e.name) == ("oci", "/tmp/lay", "v1")
    e = parse_endpoint("oci:/tmp/lay")
    assert (e.kind, e.path, e.name) == ("oci", "/tmp/lay", "")
    e = parse_endpoint("oci:relative/dir")
    assert (e.path, e.name) == ("relative/dir", "")
    assert parse_endpoint("local:example.com/app").name == "example.com/app:latest"
    assert parse_endpoint("example.com/app:2").name == "example.com/app:2"
    for bad in ("http://x/y", "oci:", "local:", "oci:/d:bad tag!", "local:Upper"):
        with pytest.raises(BadReference):
            parse_endpoint(bad)


def test_default_scheme() -> None:
    assert default_scheme("127.0.0.1:5000", False) == "http"
    assert default_scheme("localhost:5000", False) == "http"
    assert default_scheme("localhost", False) == "http"
    assert default_scheme("quay.io", False) == "https"
    assert default_scheme("10.0.0.1:5000", False) == "https"
    assert default_scheme("quay.io", True) == "http"


def test_challenges() -> None:
    c = distribution.parse_challenge(
        'Bearer realm="http://127.0.0.1:5000/token",service="gifee-registry",'
        'scope="repository:a/b:pull,push repository:c:pull"')
    assert c.scheme == "bearer"
    assert c.params == {"realm": "http://127.0.0.1:5000/token", "service": "gifee-registry",
                        "scope": "repository:a/b:pull,push repository:c:pull"}
    assert distribution.challenge_scopes(c) == ["repository:a/b:pull,push", "repository:c:pull"]
    url = distribution.token_url(c, distribution.challenge_scopes(c))
    assert url == ("http://127.0.0.1:5000/token?service=gifee-registry"
                   "&scope=repository%3Aa%2Fb%3Apull%2Cpush&scope=repository%3Ac%3Apull")
    basic = distribution.parse_challenge('Basic realm="gifee"')
    assert basic.scheme == "basic" and basic.params == {"realm": "gifee"}
    odd = distribution.parse_challenge('Bearer realm=https://a/t, service="x\\"y", error=insufficient_scope')
    assert odd.params == {"realm": "https://a/t", "service": 'x"y', "error": "insufficient_scope"}
    with pytest.raises(BadImage):
        distribution.token_url(distribution.parse_challenge('Bearer realm="file:///etc/passwd"'), [])


def test_token_answers() -> None:
    assert distribution.token_from(b'{"token": "t1"}') == "t1"
    assert distribution.token_from(b'{"access_token": "t2"}') == "t2"
    for bad in (b"", b"[]", b'{"token": 3}', b'{"token": ""}', b"\xff"):
        with pytest.raises(BadImage):
            distribution.token_from(bad)


def test_ranges() -> None:
    assert distribution.range_for(0, 100) is None
    assert distribution.range_for(40, 100) == "bytes=40-"
    assert distribution.range_for(100, 100) is None
    assert distribution.resume_accepted(206, "bytes 40-99/100", 40, 100)
    assert distribution.resume_accepted(206, "bytes 40-99/*", 40, 100)
    assert not distribution.resume_accepted(200, None, 40, 100)
    assert not distribution.resume_accepted(206, "bytes 0-99/100", 40, 100)
    assert not distribution.resume_accepted(206, "bytes 40-98/100", 40, 100)
    assert not distribution.resume_accepted(206, "bytes 40-99/101", 40, 100)
    assert not distribution.resume_accepted(206, "garbage", 40, 100)


@given(st.integers(0, 10**12), st.integers(0, 10**12), st.integers(0, 10**12))
def test_content_range_round_trip(a: int, b: int, total: int) -> None:
    assert distribution.parse_content_range(f"bytes {a}-{b}/{total}") == (a, b, total)


@given(st.integers(0, 10**7), st.integers(1000, 10**6))
def test_upload_chunks_cover_the_blob(size: int, chunk: int) -> None:
    pieces = distribution.upload_chunks(size, chunk)
    if size <= chunk:
        assert pieces == []
        return
    assert pieces[0][0] == 0 and pieces[-1][1] == size
    assert all(a < b <= a + chunk for a, b in pieces)
    assert all(p[1] == q[0] for p, q in zip(pieces, pieces[1:], strict=False))


def test_fallback_index() -> None:
    assert distribution.fallback_tag(DIGEST) == "sha256-" + "ab" * 32
    sig = oci.signature_manifest({"mediaType": oci.MANIFEST, "digest": DIGEST, "size": 1},
                                 oci.descriptor(oci.SIGNATURE, b"x"), "2016-01-01T00:00:00Z")
    data = oci.canonical_json(sig)
    desc = distribution.referrer_descriptor(data, sig)
    assert desc["artifactType"] == oci.SIGNATURE and desc["digest"] == oci.sha256_digest(data)
    index = distribution.add_referrer(None, desc)
    index = distribution.add_referrer(index, desc)  # once only
    other = {"mediaType": oci.MANIFEST, "digest": "sha256:" + "cd" * 32, "size": 3, "artifactType": "x/y"}
    index = distribution.add_referrer(index, other)
    assert [d["digest"] for d in index["manifests"]] == [desc["digest"], other["digest"]]
    parsed = oci.parse_index(json.dumps(index).encode())
    assert distribution.signature_referrers(parsed) == [desc]


def test_pick_platform() -> None:
    def entry(arch: str, digest: str) -> dict[str, object]:
        return {"mediaType": oci.MANIFEST, "digest": digest, "size": 1, "platform": {"os": "linux", "architecture": arch}}

    index = {"manifests": [entry("arm64", "sha256:" + "1" * 64), entry("amd64", "sha256:" + "2" * 64)]}
    assert distribution.pick_platform(index, "x86_64", "i")["digest"] == "sha256:" + "2" * 64
    assert distribution.pick_platform(index, "aarch64", "i")["digest"] == "sha256:" + "1" * 64
    with pytest.raises(BadImage, match="linux/s390x"):
        distribution.pick_platform(index, "s390x", "i")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_redraws_in_place_on_a_tty() -> None:
    out = _Tty()
    progress = Progress(out)
    bar = progress.bar("layer 0", 3 << 20)
    bar.update(1 << 20)
    bar.update(2 << 20)
    bar.finish()
    text = out.getvalue()
    assert text.startswith("\rlayer 0") and text.endswith("\n") and text.count("\n") == 1
    assert "3.0 MiB/3.0 MiB" in text and "100.0%" in text
    assert progress.moved == 3 << 20


def test_progress_is_silent_off_a_tty_and_when_quiet() -> None:
    for out, quiet in ((io.StringIO(), False), (_Tty(), True)):
        progress = Progress(out, quiet=quiet)
        bar = progress.bar("x", 10)
        bar.update(10)
        bar.finish()
        assert out.getvalue() == ""
        assert "10 B in" in progress.summary()
