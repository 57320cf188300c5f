"""Authentication and rights: basic auth and the Docker token flow, each with
per-repository pull/push rights, checked with a plain HTTP client and with skopeo --creds."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.registry.harness import Client, RegistryProcess, basic
from tests.registry.skopeo import busybox_layout, require_tools, skopeo

RIGHTS = {
    "alice": {"team/*": ["pull", "push"]},
    "bob": {"team/*": ["pull"]},
    "anonymous": {"public/*": ["pull"]},
}


def make_passwords(directory: Path) -> Path:
    path = directory / "htpasswd"
    for user, password in (("alice", "alice-secret"), ("bob", "bob-secret")):
        subprocess.run([sys.executable, "-m", "gifee", "--dir", str(directory), "registry", "passwd",
                        "--file", str(path), user], input=password + "\n", text=True, check=True, timeout=30)
    return path


def start(tmp_path: Path, mode: str) -> Iterator[RegistryProcess]:
    rights = tmp_path / "rights.json"
    rights.write_text(json.dumps(RIGHTS))
    server = RegistryProcess("gifee", extra_args=[
        "--auth", mode, "--htpasswd", str(make_passwords(tmp_path)), "--rights", str(rights)],
        workdir=tmp_path / "server")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def basic_registry(tmp_path: Path) -> Iterator[RegistryProcess]:
    yield from start(tmp_path, "basic")


@pytest.fixture
def token_registry(tmp_path: Path) -> Iterator[RegistryProcess]:
    yield from start(tmp_path, "token")


def test_password_file_format(tmp_path: Path) -> None:
    path = make_passwords(tmp_path)
    lines = path.read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == ["alice", "bob"]
    assert all(line.split(":", 1)[1].startswith("pbkdf2-sha256$") for line in lines)
    assert "alice-secret" not in path.read_text()


def test_basic(basic_registry: RegistryProcess) -> None:
    anonymous = basic_registry.client()
    r = anonymous.request("GET", "/v2/")
    assert r.status == 401
    assert r.headers["WWW-Authenticate"].startswith("Basic ")
    assert r.error_codes() == ["UNAUTHORIZED"]
    assert basic_registry.client(basic("alice", "wrong")).request("GET", "/v2/").status == 401
    assert basic_registry.client(basic("nobody", "x")).request("GET", "/v2/").status == 401

    alice = basic_registry.client(basic("alice", "alice-secret"))
    bob = basic_registry.client(basic("bob", "bob-secret"))
    assert alice.request("GET", "/v2/").status == 200
    alice.push_image("team/app", "v1")
    assert bob.request("GET", "/v2/team/app/manifests/v1",
                       headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).status == 200
    r = bob.request("POST", "/v2/team/app/blobs/uploads/")
    assert r.status == 403 and r.error_codes() == ["DENIED"]
    assert alice.request("POST", "/v2/other/app/blobs/uploads/").status == 403
    assert anonymous.request("GET", "/v2/team/app/tags/list").status == 401
    # anonymous pulls of public repositories
    alice_public = Client("127.0.0.1", basic_registry.port, auth=basic("alice", "alice-secret"))
    assert alice_public.request("POST", "/v2/public/x/blobs/uploads/").status == 403


def get_token(server: RegistryProcess, scope: str, creds: tuple[str, str] | None) -> tuple[int, str]:
    query = urllib.parse.urlencode({"service": "gifee-registry", "scope": scope})
    client = server.client(basic(*creds) if creds else None)
    r = client.request("GET", f"/token?{query}")
    return r.status, (r.json().get("token", "") if r.status == 200 else "")


def test_token_flow(token_registry: RegistryProcess) -> None:
    r = token_registry.client().request("GET", "/v2/team/app/tags/list")
    assert r.status == 401
    challenge = r.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    assert params["realm"] == f"http://{token_registry.address}/token"
    assert params["service"] == "gifee-registry"
    assert params["scope"] == "repository:team/app:pull"

    assert get_token(token_registry, "repository:team/app:pull,push", ("alice", "nope"))[0] == 401
    status, token = get_token(token_registry, "repository:team/app:pull,push", ("alice", "alice-secret"))
    assert status == 200
    alice = token_registry.client(f"Bearer {token}")
    alice.push_image("team/app", "v1")
    assert alice.request("GET", "/v2/team/app/tags/list").json()["tags"] == ["v1"]
    # the token covers only its repository
    assert alice.request("GET", "/v2/team/other/tags/list").status == 401

    status, token = get_token(token_registry, "repository:team/app:pull,push", ("bob", "bob-secret"))
    bob = token_registry.client(f"Bearer {token}")
    assert bob.request("GET", "/v2/team/app/tags/list").status == 200
    r = bob.request("POST", "/v2/team/app/blobs/uploads/")
    assert r.status == 401
    assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]

    # a forged token (signature of another key) is refused
    payload = token.split(".")[0]
    forged = token_registry.client(f"Bearer {payload}.AAAA")
    assert forged.request("GET", "/v2/team/app/tags/list").status == 401


def test_token_mount_needs_pull_on_source(token_registry: RegistryProcess) -> None:
    _, token = get_token(token_registry, "repository:team/app:pull,push", ("alice", "alice-secret"))
    alice = token_registry.client(f"Bearer {token}")
    digest = alice.push_blob("team/app", b"secret layer")
    _, token2 = get_token(token_registry, "repository:team/copy:pull,push", ("alice", "alice-secret"))
    r = token_registry.client(f"Bearer {token2}").request(
        "POST", f"/v2/team/copy/blobs/uploads/?mount={digest}&from=team/app")
    assert r.status == 202  # no pull right on team/app in this token: a plain upload
    _, token3 = get_token(token_registry, "repository:team/copy:pull,push repository:team/app:pull",
                          ("alice", "alice-secret"))
    r = token_registry.client(f"Bearer {token3}").request(
        "POST", f"/v2/team/copy/blobs/uploads/?mount={digest}&from=team/app")
    assert r.status == 201


@pytest.mark.parametrize("mode", ["basic", "token"])
def test_skopeo_with_creds(tmp_path: Path, mode: str) -> None:
    require_tools()
    layout = busybox_layout(tmp_path / "image")
    for server in start(tmp_path, mode):
        ref = f"docker://{server.address}/team/busybox:v1"
        r = skopeo("copy", "--dest-tls-verify=false", "--dest-creds", "bob:bob-secret", f"oci:{layout}:v1", ref)
        assert r.returncode != 0  # bob may only pull
        r = skopeo("copy", "--dest-tls-verify=false", "--dest-creds", "alice:alice-secret",
                   f"oci:{layout}:v1", ref)
        assert r.returncode == 0, r.stderr
        r = skopeo("inspect", "--tls-verify=false", "--creds", "bob:bob-secret", ref)
        assert r.returncode == 0, r.stderr
        r = skopeo("inspect", "--tls-verify=false", "--creds", "bob:wrong", ref)
        assert r.returncode != 0
