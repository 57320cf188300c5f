"""Registry test harness: start gifee's registry or Debian's docker-registry (CNCF
Distribution 2.8) on a free loopback port, a small HTTP client, and image builders.

`RegistryProcess` owns its process and temp dir and always stops and removes them.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from email.message import Message
from pathlib import Path
from typing import Any

DISTRIBUTION_BINARY = "/usr/bin/docker-registry"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
READY_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclasses.dataclass
class Response:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def error_codes(self) -> list[str]:
        return [e["code"] for e in self.json()["errors"]]


class Client:
    """One HTTP(S) connection per request: simple, and a server closing one does not matter."""

    def __init__(self, host: str, port: int, tls: bool = False, auth: str | None = None) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.auth = auth  # a full Authorization header value

    def connection(self, timeout: float = 30.0) -> http.client.HTTPConnection:
        if self.tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=context)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Response:
        conn = self.connection()
        hdrs = dict(headers or {})
        if self.auth and "Authorization" not in hdrs:
            hdrs["Authorization"] = self.auth
        if body is not None and "Content-Length" not in hdrs:
            hdrs["Content-Length"] = str(len(body))
        try:
            conn.request(method, path, body=body, headers=hdrs)
            r = conn.getresponse()
            data = r.read()
            return Response(r.status, r.headers, data)
        finally:
            conn.close()

    def url(self, location: str) -> str:
        """A Location header as a request path (registries may answer absolute URLs)."""
        if location.startswith("http"):
            rest = location.split("://", 1)[1]
            return "/" + rest.split("/", 1)[1]
        return location

    # -------------------------------------------------------------- workflows

    def push_blob(self, repo: str, data: bytes) -> str:
        digest = sha256(data)
        r = self.request("POST", f"/v2/{repo}/blobs/uploads/")
        assert r.status == 202, (r.status, r.body)
        location = self.url(r.headers["Location"])
        sep = "&" if "?" in location else "?"
        r = self.request("PUT", f"{location}{sep}digest={digest}", body=data,
                         headers={"Content-Type": "application/octet-stream"})
        assert r.status == 201, (r.status, r.body)
        return digest

    def push_manifest(self, repo: str, reference: str, manifest: dict[str, Any],
                      media_type: str = OCI_MANIFEST) -> Response:
        body = json.dumps(manifest).encode()
        return self.request("PUT", f"/v2/{repo}/manifests/{reference}", body=body,
                            headers={"Content-Type": media_type})

    def push_image(self, repo: str, tag: str, layer: bytes = b"layer", config: bytes | None = None,
                   extra: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        config = config if config is not None else json.dumps({"architecture": "amd64", "os": "linux"}).encode()
        manifest = image_manifest(config, [layer], extra)
        self.push_blob(repo, config)
        self.push_blob(repo, layer)
        r = self.push_manifest(repo, tag, manifest)
        assert r.status == 201, (r.status, r.body)
        return sha256(json.dumps(manifest).encode()), manifest


def descriptor(media_type: str, data: bytes) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data)}


def image_manifest(config: bytes, layers: list[bytes], extra: dict[str, Any] | None = None,
                   config_type: str = OCI_CONFIG) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(config_type, config),
        "layers": [descriptor(OCI_LAYER, layer) for layer in layers],
    }
    manifest.update(extra or {})
    return manifest


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# ------------------------------------------------------------------ processes


class RegistryProcess:
    """A registry on 127.0.0.1:<free port>: `gifee` or `distribution` (the reference)."""

    def __init__(self, kind: str, extra_args: list[str] | None = None, tls: tuple[str, str] | None = None,
                 workdir: Path | None = None) -> None:
        self.kind = kind
        self.extra_args = extra_args or []
        self.tls = tls
        self.own_dir = workdir is None
        self.dir = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix=f"registry-{kind}-"))
        self.root = self.dir / "root"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "log"

    @property
    def name(self) -> str:
        return self.kind

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, auth: str | None = None) -> Client:
        return Client("127.0.0.1", self.port, tls=self.tls is not None, auth=auth)

    def command(self) -> list[str]:
        if self.kind == "gifee":
            cmd = [sys.executable, "-m", "gifee", "--dir", str(self.dir), "registry", "--root", str(self.root),
                   "--listen", self.address, "--log-level", "warn", *self.extra_args]
            if self.tls:
                cmd += ["--tls-cert", self.tls[0], "--tls-key", self.tls[1]]
            return cmd
        if not os.path.exists(DISTRIBUTION_BINARY):
            import pytest
            pytest.skip("docker-registry is not installed")
        config = self.dir / "config.yml"
        tls = f"\n  tls:\n    certificate: {self.tls[0]}\n    key: {self.tls[1]}" if self.tls else ""
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.root}\n  delete:\n    enabled: true\n"
            "  maintenance:\n    uploadpurging:\n      enabled: false\n"
            f"http:\n  addr: {self.address}{tls}\n"
        )
        return [DISTRIBUTION_BINARY, "serve", str(config)]

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} registry exited: {self.log.read_text()[-2000:]}")
            try:
                self.client().request("GET", "/v2/")
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.kind} registry did not answer in {READY_TIMEOUT}s")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        self.kill(signal.SIGTERM)
        if self.own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
