"""Bad input against gifee's registry: traversal, truncated and stalled bodies, wrong
digests, oversized manifests and blobs, garbage. Each answer is a spec error, nothing
partial becomes visible, and the server keeps serving."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.registry.harness import OCI_MANIFEST, RegistryProcess, sha256


@pytest.fixture(scope="module")
def server() -> Iterator[RegistryProcess]:
    s = RegistryProcess("gifee", extra_args=["--read-timeout", "1", "--max-blob-size", "64k"])
    try:
        s.start()
        yield s
    finally:
        s.stop()


def visible_blobs(root: Path) -> set[str]:
    return {f"sha256:{p.name}" for p in (root / "blobs").glob("sha256/*/*") if not p.name.startswith(".")}


def stray_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".tmp-*")]


def raw(server: RegistryProcess, data: bytes, read: bool = True, timeout: float = 10,
        until: bytes | None = None) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as s:
        s.sendall(data)
        if not read:
            return b""
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
                if until is not None and until in out:
                    break
        except TimeoutError:
            pass
        return out


def upload(server: RegistryProcess, repo: str) -> str:
    r = server.client().request("POST", f"/v2/{repo}/blobs/uploads/")
    assert r.status == 202
    return r.headers["Location"]


def assert_serving(server: RegistryProcess) -> None:
    assert server.alive()
    assert server.client().request("GET", "/v2/").status == 200


@pytest.mark.parametrize("path", [
    "/v2/../../../etc/blobs/uploads/",
    "/v2/a/../../b/blobs/uploads/",
    "/v2/a/%2e%2e/%2e%2e/x/blobs/uploads/",
    "/v2/_layers/blobs/uploads/",
    "/v2/a/_uploads/blobs/uploads/",
    "/v2/.hidden/blobs/uploads/",
    "/v2/" + "a" * 300 + "/blobs/uploads/",
])
def test_traversal_and_bad_names(server: RegistryProcess, path: str) -> None:
    before = set(os.listdir(server.dir))
    answer = raw(server, f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
    status = int(answer.split(b" ", 2)[1])
    assert status in (400, 404), answer[:300]
    if status == 400:
        assert b"NAME_INVALID" in answer
    assert set(os.listdir(server.dir)) == before
    assert not list((server.root / "repositories").rglob("_uploads/*")) or all(
        "conformance" in str(p) or "bad" in str(p) for p in (server.root / "repositories").rglob("_uploads/*"))
    assert_serving(server)


def test_bad_digests(server: RegistryProcess) -> None:
    c = server.client()
    for digest in ("sha256:xyz", "md5:" + "0" * 32, "sha256:" + "A" * 64, "nodigest"):
        r = c.request("GET", f"/v2/bad/digest/blobs/{digest}")
        assert r.status == 400 and r.error_codes() == ["DIGEST_INVALID"], digest
        location = upload(server, "bad/digest")
        r = c.request("PUT", f"{location}?digest={digest}", body=b"data")
        assert r.status == 400 and r.error_codes() == ["DIGEST_INVALID"], digest
    location = upload(server, "bad/digest")
    assert c.request("PUT", location, body=b"data").error_codes() == ["DIGEST_INVALID"]  # no digest at all
    assert sha256(b"data") not in visible_blobs(server.root)


def test_truncated_chunk_is_cut_off(server: RegistryProcess) -> None:
    location = upload(server, "bad/truncated")
    raw(server, (f"PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                 "Content-Length: 1000\r\n\r\n").encode() + b"x" * 500, read=False)
    time.sleep(0.5)
    r = server.client().request("GET", location)
    assert r.status == 204
    assert r.headers["Range"] == "0-0"  # the half chunk was dropped
    data = b"y" * 100
    r = server.client().request("PATCH", location, body=data, headers={"Content-Range": "0-99"})
    assert r.status == 202 and r.headers["Range"] == "0-99"
    r = server.client().request("PUT", f"{location}?digest={sha256(data)}")
    assert r.status == 201
    assert sha256(b"x" * 500) not in visible_blobs(server.root)
    assert_serving(server)


def test_truncated_monolithic_put(server: RegistryProcess) -> None:
    location = upload(server, "bad/truncated")
    data = b"z" * 1000
    raw(server, (f"PUT {location}?digest={sha256(data)} HTTP/1.1\r\nHost: x\r\n"
                 "Content-Length: 1000\r\n\r\n").encode() + data[:600], read=False)
    time.sleep(0.5)
    assert sha256(data) not in visible_blobs(server.root)
    assert server.client().request("HEAD", f"/v2/bad/truncated/blobs/{sha256(data)}").status == 404
    assert not stray_files(server.root)
    assert_serving(server)


def test_stalled_body_is_abandoned(server: RegistryProcess) -> None:
    location = upload(server, "bad/stalled")
    started = time.monotonic()
    answer = raw(server, (f"PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n"
                          "Connection: close\r\n\r\n").encode() + b"s" * 10, timeout=8, until=b"\r\n\r\n")
    assert time.monotonic() - started < 6
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert server.client().request("GET", location).headers["Range"] == "0-0"
    assert_serving(server)


def test_blob_too_large(server: RegistryProcess) -> None:
    c = server.client()
    location = upload(server, "bad/large")
    big = b"L" * (65 * 1024)
    r = c.request("PATCH", location, body=big)
    assert r.status == 413
    assert c.request("GET", location).headers["Range"] == "0-0"
    # the same, streamed without a Content-Length
    answer = raw(server, (f"PATCH {location} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                          "Connection: close\r\n\r\n").encode()
                 + b"".join(b"%x\r\n" % 16384 + b"C" * 16384 + b"\r\n" for _ in range(5)) + b"0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert c.request("GET", location).headers["Range"] == "0-0"
    assert_serving(server)


def test_manifest_too_large(server: RegistryProcess) -> None:
    c = server.client()
    huge = b'{"schemaVersion": 2, "pad": "' + b"p" * (4 * 1024 * 1024) + b'"}'
    r = c.request("PUT", "/v2/bad/manifest/manifests/huge", body=huge, headers={"Content-Type": OCI_MANIFEST})
    assert r.status == 413
    # announced, never sent: refused on the header alone
    answer = raw(server, (f"PUT /v2/bad/manifest/manifests/huge HTTP/1.1\r\nHost: x\r\nContent-Type: {OCI_MANIFEST}\r\n"
                          "Content-Length: 999999999\r\nConnection: close\r\n\r\n").encode())
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert c.request("GET", "/v2/bad/manifest/manifests/huge").status == 404
    assert_serving(server)


@pytest.mark.parametrize("body,content_type", ids=lambda v: str(v)[:20], argvalues=[
    (b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}', OCI_MANIFEST),
    (b'{"schemaVersion": 1, "config": {}, "layers": []}', OCI_MANIFEST),
    (b'{"schemaVersion": 2, "config": {"mediaType": "x", "digest": "sha256:' + b"0" * 64
     + b'", "size": -1}, "layers": []}', OCI_MANIFEST),
    (b'{"schemaVersion": 2, "manifests": []}', "text/plain"),
    (b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}',
     OCI_MANIFEST),
    (b"\xff\xfe not utf8", OCI_MANIFEST),
    (b'{"schemaVersion": 2, "config": ' * 10000, OCI_MANIFEST),
])
def test_invalid_manifests(server: RegistryProcess, body: bytes, content_type: str) -> None:
    r = server.client().request("PUT", "/v2/bad/manifest/manifests/x", body=body,
                                headers={"Content-Type": content_type})
    assert r.status == 400, r.body
    assert r.error_codes() == ["MANIFEST_INVALID"]
    assert server.client().request("GET", "/v2/bad/manifest/manifests/x").status == 404


def test_garbage_and_unknown_methods(server: RegistryProcess) -> None:
    raw(server, b"\x00\x01garbage\r\n\r\n")
    raw(server, b"GET /v2/ HTTP/1.1\r\nHost: " + b"h" * 100000 + b"\r\n\r\n")
    r = server.client().request("POST", "/v2/bad/x/manifests/latest")
    assert r.status == 405 and r.error_codes() == ["UNSUPPORTED"]
    r = server.client().request("GET", "/v2/bad/x/nothing/here")
    assert r.status == 404
    assert_serving(server)
