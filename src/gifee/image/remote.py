"""A client for one OCI distribution registry: HTTP, auth and errors (I/O shell).

Rules: one http.client connection per request (a registry closing one never
matters); a 401 is answered once per request, with basic credentials or with a
bearer token fetched from the challenge's realm for every scope this client
needs; GET and HEAD follow redirects (blob storage elsewhere), dropping the
Authorization header on another host. Network failures and registry errors
become `RegistryError` with one readable line; nothing here raises
http.client's or socket's exceptions.

Credentials: `--creds USER:PASS`, else $GIFEE_REGISTRY_AUTH (`USER:PASS`), else
`<dir>/auth.json` as Docker writes it: {"auths": {"HOST:PORT": {"auth": base64("USER:PASS")}}}.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import os
import ssl
import urllib.parse
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

from gifee.image import distribution
from gifee.image.errors import BadImage, ImageError
from gifee.image.remoteref import default_scheme

TIMEOUT = 60.0
AUTH_ENV = "GIFEE_REGISTRY_AUTH"


class RegistryError(ImageError):
    """A registry refused a request, or could not be reached."""


class TransferInterrupted(RegistryError):
    """A download ended early; what arrived is kept and the next attempt resumes."""


def load_credentials(registry: str, creds: str | None, data_dir: Path | None) -> tuple[str, str] | None:
    text = creds if creds is not None else os.environ.get(AUTH_ENV)
    if text is None and data_dir is not None:
        text = _auth_file_entry(data_dir / "auth.json", registry)
    if text is None:
        return None
    user, colon, password = text.partition(":")
    if not colon or not user:
        raise RegistryError("credentials must be USER:PASSWORD")
    return user, password


def _auth_file_entry(path: Path, registry: str) -> str | None:
    try:
        data = json.loads(path.read_text())
        entry = data["auths"][registry]
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(entry, dict):
        raise RegistryError(f"{path}: the entry for {registry} is not an object")
    if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
        return f"{entry['username']}:{entry['password']}"
    try:
        return base64.b64decode(str(entry.get("auth", "")), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise RegistryError(f"{path}: the auth entry for {registry} is not base64 USER:PASSWORD") from None


@dataclass
class Response:
    status: int
    headers: Message
    raw: http.client.HTTPResponse
    conn: http.client.HTTPConnection

    def read(self, limit: int = distribution.MAX_MANIFEST) -> bytes:
        try:
            data = self.raw.read(limit + 1)
        except (OSError, http.client.HTTPException) as e:
            raise RegistryError(f"connection lost while reading the answer: {e}") from None
        finally:
            self.close()
        if len(data) > limit:
            raise RegistryError(f"answer larger than {limit} bytes")
        return data

    def close(self) -> None:
        self.conn.close()


@dataclass
class RegistryClient:
    registry: str
    insecure: bool = False
    tls_verify: bool = True
    force_tls: bool = False  # HTTPS even for a loopback registry (an explicit --tls-verify=true)
    credentials: tuple[str, str] | None = None
    scopes: list[str] = field(default_factory=list)
    _token: str | None = None
    _basic: bool = False

    @property
    def base(self) -> str:
        scheme = "https" if self.force_tls else default_scheme(self.registry, self.insecure)
        return f"{scheme}://{self.registry}"

    def _connect(self, url: urllib.parse.SplitResult) -> http.client.HTTPConnection:
        host = url.hostname or ""
        if url.scheme == "https":
            context = ssl.create_default_context()
            if not self.tls_verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            return http.client.HTTPSConnection(host, url.port, timeout=TIMEOUT, context=context)
        return http.client.HTTPConnection(host, url.port, timeout=TIMEOUT)

    def _auth_header(self) -> str | None:
        if self._token:
            return f"Bearer {self._token}"
        if self._basic and self.credentials:
            return "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
        return None

    def _send(self, method: str, url: str, headers: dict[str, str], body: bytes | None,
              auth: str | None) -> Response:
        parts = urllib.parse.urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        hdrs = dict(headers)
        if auth:
            hdrs["Authorization"] = auth
        if body is not None or method in ("PUT", "PATCH", "POST"):
            hdrs.setdefault("Content-Length", str(len(body or b"")))
        conn = self._connect(parts)
        try:
            conn.request(method, path, body=body, headers=hdrs)
            raw = conn.getresponse()
        except ssl.SSLError as e:
            conn.close()
            raise RegistryError(f"{self.registry}: TLS failed ({e.reason}); for a plain-HTTP registry "
                                "use --insecure") from None
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
            raise RegistryError(f"cannot reach registry {parts.netloc}: {reason}") from None
        return Response(raw.status, raw.headers, raw, conn)

    def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                body: bytes | None = None, ok: tuple[int, ...] = (200,)) -> Response:
        """Send a request (`path` below the registry, or an absolute URL); a status not in `ok`
        and not 404 raises RegistryError (404 is returned: callers decide what missing means)."""
        url = path if path.startswith(("http://", "https://")) else self.base + path
        headers = dict(headers or {})
        r = self._send(method, url, headers, body, self._auth_header())
        if r.status == 401:
            challenge = r.headers.get("WWW-Authenticate", "")
            r.read(64 << 10)
            self._authenticate(distribution.parse_challenge(challenge) if challenge else None)
            r = self._send(method, url, headers, body, self._auth_header())
        for _ in range(5):
            if r.status not in (301, 302, 303, 307, 308) or method not in ("GET", "HEAD"):
                break
            location = r.headers.get("Location", "")
            r.close()
            target = urllib.parse.urljoin(url, location)
            same_host = urllib.parse.urlsplit(target).netloc == urllib.parse.urlsplit(url).netloc
            url = target
            r = self._send(method, url, headers, body, self._auth_header() if same_host else None)
        if r.status in ok or r.status == 404:
            return r
        raise self.error(method, path, r)

    def error(self, method: str, path: str, r: Response) -> RegistryError:
        detail = ""
        if method != "HEAD":
            try:
                body = r.read(64 << 10)
                errors = json.loads(body).get("errors", [])
                detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict))
            except (RegistryError, ValueError, AttributeError):
                pass
        r.close()
        where = f"{method} {urllib.parse.urlsplit(path).path}"
        if r.status == 401:
            hint = "authentication failed" if self.credentials else "authentication required (give --creds USER:PASS)"
            return RegistryError(f"registry {self.registry}: {hint} ({where})")
        if r.status == 403:
            return RegistryError(f"registry {self.registry}: access denied ({where}){': ' + detail if detail else ''}")
        return RegistryError(f"registry {self.registry}: {where} answered {r.status}"
                             f"{': ' + detail if detail else ''}")

    def _authenticate(self, challenge: distribution.Challenge | None) -> None:
        if challenge is None or challenge.scheme == "basic":
            if not self.credentials:
                raise RegistryError(f"registry {self.registry}: authentication required (give --creds USER:PASS)")
            self._basic = True
            return
        if challenge.scheme != "bearer":
            raise RegistryError(f"registry {self.registry}: unsupported auth scheme {challenge.scheme!r}")
        scopes = list(dict.fromkeys(self.scopes + distribution.challenge_scopes(challenge)))
        self.scopes = scopes
        try:
            url = distribution.token_url(challenge, scopes)
        except BadImage as e:
            raise RegistryError(f"registry {self.registry}: {e}") from None
        auth = None
        if self.credentials:
            auth = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
        r = self._send("GET", url, {}, None, auth)
        if r.status != 200:
            r.close()
            what = "credentials refused" if r.status == 401 else f"answered {r.status}"
            raise RegistryError(f"registry {self.registry}: token endpoint {what}")
        try:
            self._token = distribution.token_from(r.read(1 << 20))
        except BadImage as e:
            raise RegistryError(f"registry {self.registry}: {e}") from None

    # --- operations ------------------------------------------------------------

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str, str] | None:
        """(bytes, media type, digest header or "") or None if the registry has no such manifest."""
        r = self.request("GET", f"/v2/{repository}/manifests/{reference}",
                         {"Accept": distribution.MANIFEST_ACCEPT})
        if r.status == 404:
            r.close()
            return None
        media_type = r.headers.get("Content-Type", "").split(";")[0].strip()
        digest = r.headers.get("Docker-Content-Digest", "")
        return r.read(), media_type, digest

    def has_blob(self, repository: str, digest: str) -> bool:
        r = self.request("HEAD", f"/v2/{repository}/blobs/{digest}")
        r.close()
        return r.status == 200

    def get_json(self, path: str, accept: str) -> dict[str, Any] | None:
        r = self.request("GET", path, {"Accept": accept})
        if r.status == 404:
            r.close()
            return None
        try:
            value = json.loads(r.read())
        except ValueError:
            raise RegistryError(f"registry {self.registry}: GET {path} answered invalid JSON") from None
        return value if isinstance(value, dict) else None
