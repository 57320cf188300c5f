"""gifee image push/pull/copy against gifee's registry and Distribution 2.8: round trips with
signatures (referrers API, or the fallback tag), trust on another data directory, a tampered
blob, an interrupted pull resumed through a connection-cutting proxy, skopeo both ways, basic
and token auth, and the errors a user sees."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gifee.image import oci
from gifee.image.errors import BlobCorrupted
from gifee.image.imagecopy import Transport, copy
from gifee.image.progress import Progress
from gifee.image.pull import pull
from gifee.image.push import push
from gifee.image.remote import RegistryClient, TransferInterrupted
from gifee.image.remoteref import parse_endpoint, parse_remote
from gifee.image.store import Image, ImageStore
from tests.image.images import busybox_image
from tests.registry.harness import RegistryProcess, free_port
from tests.registry.skopeo import busybox_layout, layout_manifest, require_tools, skopeo


def gifee(data: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gifee", "--dir", str(data), *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def random_image(store: ImageStore, name: str, size: int) -> Image:
    """An image whose one 'layer' is `size` random bytes (never unpacked here, only moved)."""
    layer = os.urandom(size)
    layer_desc = oci.descriptor(oci.LAYER_GZIP, layer)
    store.put_blob(layer)
    config = oci.canonical_json({"architecture": "amd64", "os": "linux",
                                 "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]}})
    store.put_blob(config)
    manifest = oci.image_manifest(oci.descriptor(oci.CONFIG, config), [layer_desc])
    return store.add_image(name, oci.canonical_json(manifest))


@pytest.fixture(scope="module", params=["gifee", "distribution"])
def registry(request: pytest.FixtureRequest) -> Iterator[RegistryProcess]:
    server = RegistryProcess(request.param)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("keys") / "signer"
    assert gifee(out.parent, "image", "keygen", "--out", str(out)).returncode == 0
    return out


def signed_busybox(data: Path, name: str, keys: Path) -> Image:
    image = busybox_image(ImageStore(data / "images"), name)
    r = gifee(data, "image", "sign", name, "--key", f"{keys}.key")
    assert r.returncode == 0, r.stderr
    return image


def blob_file(root: Path, digest: str) -> Path:
    """Where a registry keeps a blob's bytes: gifee blobs/sha256/<hh>/<hex>, Distribution blobs/.../<hex>/data
    (repositories hold small link files of the same name)."""
    hex_ = oci.digest_hex(digest)
    found = [p for p in root.rglob("*") if p.is_file() and "repositories" not in p.parts
             and (p.name == hex_ or p.parent.name == hex_ and p.name == "data")]
    assert len(found) == 1, found
    return found[0]


# --- round trips, signatures and trust ----------------------------------------------


def test_signed_push_and_pull_on_another_machine(registry: RegistryProcess, keys: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    name = f"{registry.address}/team/busybox:1"
    image = signed_busybox(a, name, keys)
    r = gifee(a, "image", "push", name)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{registry.address}/team/busybox@{image.manifest_digest}"
    # how the signature travels: the referrers API on gifee, the fallback tag on Distribution 2.8
    client = registry.client()
    fallback = client.request("GET", f"/v2/team/busybox/manifests/sha256-{oci.digest_hex(image.manifest_digest)}",
                              headers={"Accept": oci.INDEX})
    if registry.kind == "distribution":
        assert fallback.status == 200
        assert [d["artifactType"] for d in fallback.json()["manifests"]] == [oci.SIGNATURE]
    else:
        assert fallback.status == 404
        referrers = client.request("GET", f"/v2/team/busybox/referrers/{image.manifest_digest}").json()
        assert [d["artifactType"] for d in referrers["manifests"]] == [oci.SIGNATURE]

    r = gifee(b, "image", "pull", name)
    assert r.returncode == 1
    assert "no key is trusted for" in r.stderr and "Traceback" not in r.stderr
    assert name not in gifee(b, "image", "list").stdout

    assert gifee(b, "trust", "--prefix", f"{registry.address}/team", f"{keys}.pub").returncode == 0
    r = gifee(b, "image", "pull", name)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [name, image.manifest_digest]
    r = gifee(b, "image", "verify", name)
    assert r.returncode == 0 and "signed by trusted key" in r.stdout

    # pushing again sends nothing new; the fallback index still holds the signature once
    assert gifee(a, "image", "push", name).returncode == 0
    if registry.kind == "distribution":
        again = client.request("GET", f"/v2/team/busybox/manifests/sha256-{oci.digest_hex(image.manifest_digest)}",
                               headers={"Accept": oci.INDEX})
        assert len(again.json()["manifests"]) == 1


def test_other_key_is_refused(registry: RegistryProcess, keys: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    name = f"{registry.address}/team/other:1"
    signed_busybox(a, name, keys)
    assert gifee(a, "image", "push", name).returncode == 0
    stranger = tmp_path / "stranger"
    assert gifee(tmp_path, "image", "keygen", "--out", str(stranger)).returncode == 0
    assert gifee(b, "trust", "--prefix", f"{registry.address}/team", f"{stranger}.pub").returncode == 0
    r = gifee(b, "image", "pull", name)
    assert r.returncode == 1 and "none of its 1 signature(s) verifies" in r.stderr
    r = gifee(b, "image", "pull", name, "--insecure-options=image", "--name", "example.com/mine:2")
    assert r.returncode == 0, r.stderr
    assert ImageStore(b / "images").resolve("example.com/mine:2").name == "example.com/mine:2"


def test_chunked_upload_and_mount(registry: RegistryProcess, tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    image = random_image(store, f"{registry.address}/chunks/src:1", 3 * 1024 * 1024 + 17)
    progress = Progress(quiet=True)
    src = parse_remote(f"{registry.address}/chunks/src:1")
    push(RegistryClient(src.registry), image, src, store, progress, chunk=1 << 20)
    assert progress.moved == image.size - image.manifest_size
    # the same image to another repository of the same registry: mounted, not sent
    dst = parse_remote(f"{registry.address}/chunks/dst:1")
    progress = Progress(quiet=True)
    push(RegistryClient(dst.registry), image, dst, store, progress, mount_from="chunks/src")
    assert progress.moved == 0
    other = ImageStore(tmp_path / "other")
    pulled = pull(RegistryClient(dst.registry), dst, other, Progress(quiet=True))
    assert pulled.manifest_digest == image.manifest_digest
    other.verify(pulled)


def test_copy_between_registry_and_layout(registry: RegistryProcess, tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    image = random_image(store, "example.com/app:1", 4096)
    transport, progress = Transport(data_dir=tmp_path), Progress(quiet=True)
    dest = f"docker://{registry.address}/copies/app:1"
    assert copy(parse_endpoint("local:example.com/app:1"), parse_endpoint(dest), store, transport, progress,
                None) == image.manifest_digest
    layout = tmp_path / "layout"
    copy(parse_endpoint(dest), parse_endpoint(f"oci:{layout}:v1"), store, transport, progress, None)
    assert layout_manifest(layout, "v1")[0] == image.manifest_digest
    copy(parse_endpoint(f"oci:{layout}:v1"), parse_endpoint(f"docker://{registry.address}/copies/again:2"),
         store, transport, progress, None)
    copy(parse_endpoint(dest), parse_endpoint(f"docker://{registry.address}/copies/third:3"), store, transport,
         progress, None)
    for ref in ("copies/again:2", "copies/third:3"):
        fresh = ImageStore(tmp_path / ref.replace("/", "-"))
        assert pull(RegistryClient(registry.address), parse_remote(f"{registry.address}/{ref}"), fresh,
                    Progress(quiet=True)).manifest_digest == image.manifest_digest
    assert list(store.tmp.iterdir()) == []  # staging stores are gone


# --- tampering -------------------------------------------------------------------------


def test_tampered_blob_on_the_registry_is_refused(tmp_path: Path) -> None:
    server = RegistryProcess("gifee", workdir=tmp_path / "server")
    try:
        server.start()
        a, b = tmp_path / "a", tmp_path / "b"
        name = f"{server.address}/t/busybox:1"
        image = busybox_image(ImageStore(a / "images"), name)
        assert gifee(a, "image", "push", name).returncode == 0
        layer = image.layers[0]["digest"]
        path = blob_file(server.root, layer)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        r = gifee(b, "image", "pull", name, "--insecure-options=image")
        assert r.returncode == 1
        assert f"layer 0 {layer}: the registry sent content hashing to" in r.stderr and "refused" in r.stderr
        assert "Traceback" not in r.stderr
        store = ImageStore(b / "images")
        assert store.image_entries() == [] and not store.has_blob(layer)
        assert [p.name for p in store.tmp.iterdir()] == []
    finally:
        server.stop()


# --- an interrupted pull, resumed ------------------------------------------------------------


class CuttingProxy(http.server.ThreadingHTTPServer):
    """Forwards GET/HEAD to a registry; the first GET of `cut_digest` is cut after `cut_after` bytes."""

    daemon_threads = True

    def __init__(self, upstream: int, cut_digest: str, cut_after: int) -> None:
        super().__init__(("127.0.0.1", free_port()), _ProxyHandler)
        self.upstream, self.cut_digest, self.cut_after = upstream, cut_digest, cut_after
        self.blob_requests: list[tuple[str | None, int]] = []  # (Range header, body bytes sent)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: CuttingProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.upstream, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        conn.request(self.command, self.path, headers=headers)
        r = conn.getresponse()
        body = r.read()
        conn.close()
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("connection", "transfer-encoding", "content-length", "date", "server"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)) if self.command == "GET" else r.getheader(
            "Content-Length", "0"))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        if self.path.endswith(f"/blobs/{self.server.cut_digest}"):
            cut = not self.server.blob_requests
            sent = body[: self.server.cut_after] if cut else body
            self.server.blob_requests.append((self.headers.get("Range"), len(sent)))
            self.wfile.write(sent)
            self.wfile.flush()
            if cut:
                self.close_connection = True
                self.connection.shutdown(2)
            return
        self.wfile.write(body)


def test_interrupted_pull_resumes(tmp_path: Path) -> None:
    server = RegistryProcess("gifee", workdir=tmp_path / "server")
    proxy: CuttingProxy | None = None
    try:
        server.start()
        size = 3 << 20
        source = ImageStore(tmp_path / "source")
        image = random_image(source, f"{server.address}/r/big:1", size)
        ref = parse_remote(f"{server.address}/r/big:1")
        push(RegistryClient(ref.registry), image, ref, source, Progress(quiet=True))
        layer = image.layers[0]["digest"]
        proxy = CuttingProxy(server.port, layer, 1 << 20)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        via = f"127.0.0.1:{proxy.server_address[1]}/r/big:1"
        data = tmp_path / "client"

        r = gifee(data, "image", "pull", via, "--insecure-options=image")
        assert r.returncode == 1
        assert "interrupted" in r.stderr and "run the command again to resume" in r.stderr
        assert "Traceback" not in r.stderr
        store = ImageStore(data / "images")
        assert store.image_entries() == [] and not store.has_blob(layer)
        [partial] = [p for p in store.tmp.iterdir() if p.name.startswith("partial-")]
        assert partial.stat().st_size == 1 << 20

        r = gifee(data, "image", "pull", via, "--insecure-options=image")
        assert r.returncode == 0, r.stderr
        assert proxy.blob_requests == [(None, 1 << 20), (f"bytes={1 << 20}-", size - (1 << 20))]
        assert store.resolve(via).manifest_digest == image.manifest_digest
        store.verify(store.resolve(via))
        assert not partial.exists()
    finally:
        if proxy is not None:
            proxy.shutdown()
            proxy.server_close()
        server.stop()


def test_corrupt_partial_file_is_not_trusted(tmp_path: Path) -> None:
    """A partial file whose bytes were changed makes the resumed blob fail its digest: refused, removed."""
    server = RegistryProcess("gifee", workdir=tmp_path / "server")
    try:
        server.start()
        source = ImageStore(tmp_path / "source")
        image = random_image(source, f"{server.address}/r/p:1", 1 << 20)
        ref = parse_remote(f"{server.address}/r/p:1")
        push(RegistryClient(ref.registry), image, ref, source, Progress(quiet=True))
        store = ImageStore(tmp_path / "client")
        store.ensure()
        layer = image.layers[0]["digest"]
        partial = store.tmp / f"partial-{oci.digest_hex(layer)}"
        partial.write_bytes(b"\0" * 1000)
        with pytest.raises(BlobCorrupted, match="refused"):
            pull(RegistryClient(ref.registry), ref, store, Progress(quiet=True))
        assert not partial.exists()
        assert pull(RegistryClient(ref.registry), ref, store, Progress(quiet=True)).manifest_digest == \
            image.manifest_digest
    finally:
        server.stop()


# --- skopeo ------------------------------------------------------------------------------


def test_skopeo_reads_what_we_push_and_we_pull_what_skopeo_pushes(registry: RegistryProcess,
                                                                  tmp_path: Path) -> None:
    require_tools()
    data = tmp_path / "data"
    name = f"{registry.address}/sk/busybox:1"
    image = busybox_image(ImageStore(data / "images"), name)
    assert gifee(data, "image", "push", name).returncode == 0
    out = tmp_path / "out"
    r = skopeo("copy", "--src-tls-verify=false", f"docker://{name}", f"oci:{out}:v1")
    assert r.returncode == 0, r.stderr
    assert layout_manifest(out, "v1")[0] == image.manifest_digest

    layout = busybox_layout(tmp_path / "umoci")
    r = skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:v1", f"docker://{registry.address}/sk/umoci:v1")
    assert r.returncode == 0, r.stderr
    digest = layout_manifest(layout, "v1")[0]
    r = gifee(tmp_path / "other", "image", "pull", f"{registry.address}/sk/umoci:v1", "--insecure-options=image")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [f"{registry.address}/sk/umoci:v1", digest]


# --- auth ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["basic", "token"])
def test_auth(mode: str, tmp_path: Path) -> None:
    from tests.registry.test_auth import start

    servers = start(tmp_path, mode)
    server = next(servers)
    try:
        data = tmp_path / "data"
        name = f"{server.address}/team/app:1"
        image = random_image(ImageStore(data / "images"), name, 2048)
        r = gifee(data, "image", "push", name)
        assert r.returncode == 1 and "authentication required (give --creds USER:PASS)" in r.stderr
        r = gifee(data, "image", "push", name, "--creds", "alice:wrong")
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert "authentication failed" in r.stderr or "credentials refused" in r.stderr
        r = gifee(data, "image", "push", name, "--creds", "bob:bob-secret")
        assert r.returncode == 1 and ("denied" in r.stderr or "authentication failed" in r.stderr), r.stderr
        r = gifee(data, "image", "push", name, "--creds", "alice:alice-secret")
        assert r.returncode == 0, r.stderr
        other = tmp_path / "other"
        r = gifee(other, "image", "pull", name, "--insecure-options=image", env={"GIFEE_REGISTRY_AUTH": "bob:bob-secret"})
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == [name, image.manifest_digest]
        third = tmp_path / "third"
        third.mkdir()
        import base64
        (third / "auth.json").write_text(json.dumps(
            {"auths": {server.address: {"auth": base64.b64encode(b"bob:bob-secret").decode()}}}))
        r = gifee(third, "image", "pull", name, "--insecure-options=image")
        assert r.returncode == 0, r.stderr
    finally:
        next(servers, None)


# --- errors a user sees -------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["pull", "busybox:1"], "must start with the registry host"),
    (["pull", "127.0.0.1:5000/Busy/box"], "lower-case"),
    (["pull", "127.0.0.1:5000/x@sha256:123"], "not a digest"),
    (["push", "127.0.0.1:5000/x:1"], "not in the store"),
    (["copy", "ftp://x", "local:y"], "unknown transport"),
    (["copy", "oci:/nonexistent/layout", "local:example.com/y"], "not an OCI layout"),
    (["pull", "127.0.0.1:5000/x:1", "--insecure-options=bogus"], "unknown option"),
])
def test_bad_input(args: list[str], message: str, tmp_path: Path) -> None:
    r = gifee(tmp_path, "image", *args)
    assert r.returncode == 1
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_unreachable_and_missing(registry: RegistryProcess, tmp_path: Path) -> None:
    port = free_port()
    r = gifee(tmp_path, "image", "pull", f"127.0.0.1:{port}/x/y:1")
    assert r.returncode == 1 and f"cannot reach registry 127.0.0.1:{port}" in r.stderr
    assert "Traceback" not in r.stderr
    r = gifee(tmp_path, "image", "pull", f"{registry.address}/no/such:1")
    assert r.returncode == 1 and "no such image on the registry" in r.stderr
    r = gifee(tmp_path, "image", "pull", f"{registry.address}/no/such:1", "--tls-verify=false")
    assert r.returncode == 1 and "no such image" in r.stderr
    # HTTPS asked of a plain-HTTP registry
    r = gifee(tmp_path, "image", "pull", f"{registry.address}/x/y:1", "--tls-verify=true")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "TLS failed" in r.stderr or "cannot reach" in r.stderr, r.stderr


def test_tls(tmp_path: Path) -> None:
    from tests.registry.tls import self_signed

    cert, key = self_signed(tmp_path)
    server = RegistryProcess("gifee", tls=(cert, key), workdir=tmp_path / "server")
    try:
        server.start()
        data = tmp_path / "data"
        name = f"{server.address}/tls/app:1"
        image = random_image(ImageStore(data / "images"), name, 1000)
        r = gifee(data, "image", "push", name, "--tls-verify=true")
        assert r.returncode == 1 and "TLS failed" in r.stderr and "CERTIFICATE_VERIFY_FAILED" in r.stderr
        trusted = {"SSL_CERT_FILE": cert}
        r = gifee(data, "image", "push", name, "--tls-verify=true", env=trusted)
        assert r.returncode == 0, r.stderr
        r = gifee(tmp_path / "b", "image", "pull", name, "--tls-verify=true", "--insecure-options=image", env=trusted)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == [name, image.manifest_digest]
    finally:
        server.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="running a pod needs root")
def test_pulled_signed_image_runs(keys: Path, tmp_path: Path) -> None:
    server = RegistryProcess("gifee", workdir=tmp_path / "server")
    try:
        server.start()
        a, b = tmp_path / "a", tmp_path / "b"
        name = f"{server.address}/x/busybox:1"
        signed_busybox(a, name, keys)
        assert gifee(a, "image", "push", name).returncode == 0
        assert gifee(b, "image", "pull", name, "--insecure-options=image").returncode == 0
        r = gifee(b, "run", "--net=none", name, "--", "/bin/true")
        assert r.returncode != 0 and "trusted" in r.stderr  # pulled anyway, but run checks trust itself
        assert gifee(b, "trust", "--prefix", f"{server.address}/x", f"{keys}.pub").returncode == 0
        r = gifee(b, "run", "--net=none", name, "--", "/bin/sh", "-c", "echo pulled and ran")
        assert r.returncode == 0, r.stderr
        assert "pulled and ran" in r.stdout
        r = gifee(b, "run", "--net=none", "--insecure-options=image", name, "--", "/bin/true")
        assert r.returncode == 0, r.stderr
    finally:
        gifee(tmp_path / "b", "gc", "--grace-period=0s")  # exited pods hold mounts pytest cannot remove
        server.stop()
    assert not list((tmp_path / "b" / "pods" / "run").glob("*"))


def test_pull_by_digest_needs_a_name(registry: RegistryProcess, tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    image = random_image(store, f"{registry.address}/dig/app:1", 100)
    ref = parse_remote(f"{registry.address}/dig/app:1")
    push(RegistryClient(ref.registry), image, ref, store, Progress(quiet=True))
    pinned = f"{registry.address}/dig/app@{image.manifest_digest}"
    r = gifee(tmp_path / "b", "image", "pull", pinned, "--insecure-options=image")
    assert r.returncode == 1 and "--name" in r.stderr
    r = gifee(tmp_path / "b", "image", "pull", pinned, "--insecure-options=image", "--name", "example.com/d:1")
    assert r.returncode == 0, r.stderr


def test_transfer_interrupted_is_an_image_error() -> None:
    from gifee.image.errors import ImageError

    assert issubclass(TransferInterrupted, ImageError)
