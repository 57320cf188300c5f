"""skopeo copies an image into the registry and back out, unchanged (both targets), and
over TLS with a self-signed certificate (gifee)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.registry.harness import RegistryProcess
from tests.registry.skopeo import busybox_layout, layout_manifest, require_tools, skopeo
from tests.registry.tls import self_signed


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tools()
    return busybox_layout(tmp_path_factory.mktemp("image"))


def round_trip(server: RegistryProcess, layout: Path, tmp_path: Path, repo: str) -> None:
    ref = f"docker://{server.address}/{repo}:v1"
    r = skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:v1", ref)
    assert r.returncode == 0, r.stderr
    r = skopeo("inspect", "--tls-verify=false", "--raw", ref)
    assert r.returncode == 0, r.stderr
    digest, manifest = layout_manifest(layout, "v1")
    assert json.loads(r.stdout) == manifest
    r = skopeo("list-tags", "--tls-verify=false", f"docker://{server.address}/{repo}")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["Tags"] == ["v1"]
    out = tmp_path / "out"
    r = skopeo("copy", "--src-tls-verify=false", ref, f"oci:{out}:copied")
    assert r.returncode == 0, r.stderr
    copied_digest, copied = layout_manifest(out, "copied")
    assert copied_digest == digest
    for layer in copied["layers"]:  # type: ignore[attr-defined]
        name = layer["digest"].split(":")[1]
        assert (out / "blobs/sha256" / name).read_bytes() == (layout / "blobs/sha256" / name).read_bytes()


def test_skopeo_round_trip(target: RegistryProcess, layout: Path, tmp_path: Path, repo: str) -> None:
    round_trip(target, layout, tmp_path, repo)


def test_skopeo_delete(target: RegistryProcess, layout: Path, repo: str) -> None:
    ref = f"docker://{target.address}/{repo}:v1"
    assert skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:v1", ref).returncode == 0
    r = skopeo("delete", "--tls-verify=false", ref)
    assert r.returncode == 0, r.stderr
    assert skopeo("inspect", "--tls-verify=false", "--raw", ref).returncode != 0


@pytest.fixture
def tls_registry(tmp_path: Path) -> Iterator[RegistryProcess]:
    cert, key = self_signed(tmp_path)
    server = RegistryProcess("gifee", tls=(cert, key))
    try:
        server.start()
        yield server
    finally:
        server.stop()


def test_skopeo_over_tls(tls_registry: RegistryProcess, layout: Path, tmp_path: Path) -> None:
    round_trip(tls_registry, layout, tmp_path, "tls/busybox")
    r = tls_registry.client().request("GET", "/v2/")
    assert r.status == 200
