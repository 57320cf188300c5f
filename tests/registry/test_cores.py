"""The registry's cores without I/O: name and digest grammar, routes, ranges,
pagination, manifest validation, rights and tokens."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gifee.registry import auth, pagination, ranges, routes
from gifee.registry.errors import RegistryError
from gifee.registry.manifests import OCI_MANIFEST, parse_manifest, references
from gifee.registry.names import Digest, is_valid_name, is_valid_tag
from gifee.registry.routes import Endpoint

HEX = "a" * 64


@pytest.mark.parametrize("name", ["a", "library/busybox", "a.b/c_d/e__f/g--h", "x" * 255])
def test_valid_names(name: str) -> None:
    assert is_valid_name(name)


@pytest.mark.parametrize("name", ["", "A", "a/", "/a", "a//b", "..", "a/../b", "_a", "a_", "a.", "a___b",
                                  ".hidden", "a/_layers", "x" * 256, "a\x00b", "a b"])
def test_invalid_names(name: str) -> None:
    assert not is_valid_name(name)


@given(st.text(alphabet="abc./_-", max_size=30))
def test_valid_names_never_escape(name: str) -> None:
    if is_valid_name(name):
        parts = name.split("/")
        assert all(p and p not in (".", "..") and not p.startswith(("_", ".")) for p in parts)


def test_tags_and_digests() -> None:
    assert is_valid_tag("v1.0_rc-1") and is_valid_tag("_x") and not is_valid_tag(".x")
    assert not is_valid_tag("a" * 129) and not is_valid_tag("a:b")
    assert str(Digest.parse(f"sha256:{HEX}")) == f"sha256:{HEX}"
    for bad in (f"sha256:{HEX[:-1]}", f"sha256:{HEX.upper()}", f"md5:{HEX[:32]}", HEX, "sha512:" + "0" * 64):
        with pytest.raises(ValueError):
            Digest.parse(bad)
    assert Digest.of(b"").hex == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_routes() -> None:
    assert routes.match("/v2/") == routes.Route(Endpoint.BASE)
    r = routes.match(f"/v2/a/b/blobs/sha256:{HEX}")
    assert r is not None and r.endpoint is Endpoint.BLOB and r.name == "a/b"
    r = routes.match("/v2/a/blobs/uploads/")
    assert r is not None and r.endpoint is Endpoint.UPLOADS
    r = routes.match("/v2/a/blobs/uploads/" + "0" * 32)
    assert r is not None and r.endpoint is Endpoint.UPLOAD
    # a repository may be called "blobs/uploads": the last marker decides
    r = routes.match(f"/v2/x/blobs/uploads/blobs/sha256:{HEX}")
    assert r is not None and r.endpoint is Endpoint.BLOB and r.name == "x/blobs/uploads"
    r = routes.match("/v2/a/manifests/latest")
    assert r is not None and r.endpoint is Endpoint.MANIFEST
    assert routes.match("/v2/a/unknown") is None
    assert routes.match("/v2/a/blobs/uploads/../x") is None  # no endpoint ends like this: 404
    for path, code in [("/v2/../etc/tags/list", "NAME_INVALID"), ("/v2/a/blobs/nope", "DIGEST_INVALID"),
                       ("/v2/a/manifests/sha256:zz", "DIGEST_INVALID"), ("/v2/a/blobs/uploads/not-an-id", "BLOB_UPLOAD_UNKNOWN")]:
        with pytest.raises(RegistryError) as e:
            routes.match(path)
        assert e.value.code == code, path


def test_content_range() -> None:
    assert ranges.parse_content_range("0-99") == ranges.ChunkRange(0, 99)
    assert ranges.parse_content_range("bytes 100-199/*").length == 100
    for bad in ("", "5", "9-3", "a-b", "-1-3"):
        with pytest.raises(ValueError):
            ranges.parse_content_range(bad)
    assert ranges.chunk_in_order(ranges.ChunkRange(10, 19), 10)
    assert not ranges.chunk_in_order(ranges.ChunkRange(0, 9), 10)
    assert ranges.upload_range_header(0) == "0-0" and ranges.upload_range_header(10) == "0-9"


@given(st.integers(0, 1000), st.integers(0, 1200), st.integers(0, 1200))
def test_range_within_blob(size: int, a: int, b: int) -> None:
    try:
        got = ranges.parse_range(f"bytes={a}-{b}", size)
    except ranges.Unsatisfiable:
        assert a >= size
        return
    if got is not None:
        start, end = got
        assert start == a and 0 <= start <= end < size and end == min(b, size - 1)
    else:
        assert b < a


def test_range_forms() -> None:
    assert ranges.parse_range(None, 10) is None
    assert ranges.parse_range("bytes=-3", 10) == (7, 9)
    assert ranges.parse_range("bytes=-30", 10) == (0, 9)
    assert ranges.parse_range("bytes=4-", 10) == (4, 9)
    assert ranges.parse_range("bytes=0-1,4-5", 10) is None  # several ranges: the whole blob
    with pytest.raises(ranges.Unsatisfiable):
        ranges.parse_range("bytes=10-", 10)


@given(st.sets(st.text(alphabet="abcxyz019._-", min_size=1, max_size=5)), st.integers(1, 5))
def test_pagination_visits_every_tag_once(tags: set[str], n: int) -> None:
    seen: list[str] = []
    last: str | None = None
    for _ in range(len(tags) + 2):
        page, last = pagination.page(tags, n, last)
        assert len(page) <= n
        seen += page
        if last is None:
            break
    assert seen == sorted(tags)


def test_pagination_link_and_n() -> None:
    assert pagination.link_header("a/b", 2, "v1") == '</v2/a/b/tags/list?n=2&last=v1>; rel="next"'
    assert pagination.parse_n(None) is None and pagination.parse_n("0") == 0
    with pytest.raises(ValueError):
        pagination.parse_n("-1")
    assert pagination.page(["a", "b"], 0, None) == ([], None)


def manifest(**extra: object) -> bytes:
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": f"sha256:{HEX}", "size": 2},
           "layers": [{"mediaType": "x", "digest": "sha256:" + "b" * 64, "size": 3}]}
    doc.update(extra)
    return json.dumps(doc).encode()


def test_manifest_parsing() -> None:
    m = parse_manifest(manifest(), None)
    assert m.media_type == OCI_MANIFEST and len(m.blobs) == 2 and m.subject is None
    assert m.artifact_type == "application/vnd.oci.image.config.v1+json"
    m = parse_manifest(manifest(subject={"mediaType": OCI_MANIFEST, "digest": "sha256:" + "c" * 64, "size": 1},
                                artifactType="application/x-sig"), OCI_MANIFEST)
    assert m.subject is not None and m.referrer_descriptor()["artifactType"] == "application/x-sig"
    assert {str(d) for d in references(manifest())} == {f"sha256:{HEX}", "sha256:" + "b" * 64}
    bad = [(manifest(), "application/vnd.oci.image.index.v1+json"), (manifest(schemaVersion=1), None),
           (manifest(layers="x"), None), (manifest(annotations={"a": 1}), None), (b"{}", "text/plain"),
           (manifest(subject={"digest": "nope"}), None)]
    for body, content_type in bad:
        with pytest.raises(RegistryError) as e:
            parse_manifest(body, content_type)
        assert e.value.code == "MANIFEST_INVALID"


def test_passwords() -> None:
    stored = auth.hash_password("secret", iterations=1000)
    assert auth.verify_password(stored, "secret")
    assert not auth.verify_password(stored, "Secret")
    assert not auth.verify_password("garbage", "secret")
    assert auth.parse_password_file(f"# comment\nalice:{stored}\n\nbad line\n") == {"alice": stored}
    assert auth.parse_basic("Basic YWxpY2U6czpz") == ("alice", "s:s")
    assert auth.parse_basic("Basic !!!") is None


def test_rights() -> None:
    rights = auth.Rights.parse(json.dumps({"alice": {"team/*": ["pull", "push"]}, "*": {"shared/*": ["pull"]},
                                           "anonymous": {"public/*": ["pull"]}}))
    assert rights.actions("alice", "team/app") == {"pull", "push"}
    assert rights.actions("alice", "shared/x") == {"pull"}
    assert rights.actions("bob", "team/app") == frozenset()
    assert rights.actions(None, "public/x") == {"pull"} and rights.actions(None, "shared/x") == frozenset()
    assert auth.Rights(None).actions("anyone", "x") == {"pull", "push"}
    assert auth.Rights(None).actions(None, "x") == frozenset()
    granted = rights.grant("alice", auth.Scope.parse("repository:shared/x:pull,push"))
    assert granted.actions == {"pull"}


def test_tokens() -> None:
    key = b"k" * 32
    scope = auth.repository_scope("a/b", "pull")
    answer = auth.issue_token(key, "alice", "svc", [scope], ttl=60, now=1000)
    claims = auth.verify_token(key, answer["token"], "svc", now=1030)
    assert claims.subject == "alice" and claims.allows(scope)
    assert not claims.allows(auth.repository_scope("a/b", "push"))
    assert not claims.allows(auth.repository_scope("a/c", "pull"))
    for bad_key, service, now in [(b"x" * 32, "svc", 1030), (key, "other", 1030), (key, "svc", 1060)]:
        with pytest.raises(ValueError):
            auth.verify_token(bad_key, answer["token"], service, now=now)
    with pytest.raises(ValueError):
        auth.verify_token(key, "not-a-token", "svc")
    assert str(auth.Scope.parse("repository:a/b:push,pull")) == "repository:a/b:pull,push"
