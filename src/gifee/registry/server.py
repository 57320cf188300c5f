"""The registry's HTTP shell: aiohttp handlers over `Storage`, with auth and TLS.

What lives here: reading requests (streamed, with a per-read timeout and a size cap),
calling the cores (`routes`, `manifests`, `ranges`, `pagination`, `auth`) and the
storage (in worker threads), and writing the spec's responses. Every failure becomes a
spec JSON error; a failed chunk is cut off the upload again, so the server keeps
serving and stores nothing partial.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import secrets
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from gifee.registry import auth, manifests, pagination, ranges, routes
from gifee.registry.errors import RegistryError
from gifee.registry.names import Digest
from gifee.registry.routes import Endpoint, Route
from gifee.registry.storage import Storage

log = logging.getLogger("gifee.registry")

API_VERSION_HEADER = ("Docker-Distribution-API-Version", "registry/2.0")
DEFAULT_MAX_BLOB_BYTES = 10 << 30
STREAM_CHUNK = 256 << 10
LINGER_SECONDS = 2.0


@dataclasses.dataclass
class RegistryConfig:
    root: Path
    auth: str = "none"  # none | basic | token
    password_file: Path | None = None
    rights_file: Path | None = None
    service: str = "gifee-registry"
    realm: str = ""  # token endpoint URL; default: this server's /token
    token_ttl: int = 300
    max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES
    read_timeout: float = 60.0  # seconds without a byte before a request body is abandoned
    vulndb: Path | None = None  # scan each pushed image against it (when the file exists)


# The config media types that make a manifest an image (an artifact's differ).
IMAGE_CONFIG_TYPES = ("application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json")

Handler = Callable[[web.Request, Route, "Identity"], Awaitable[web.StreamResponse]]


@dataclasses.dataclass(frozen=True)
class Identity:
    user: str | None
    may: Callable[[str, str], bool]


def error_response(e: RegistryError) -> web.Response:
    return web.Response(status=e.status, body=e.body(), content_type="application/json", headers=e.headers)


class Registry:
    def __init__(self, config: RegistryConfig) -> None:
        self.config = config
        self.storage = Storage(config.root)
        self.upload_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.users: dict[str, str] = {}
        self.rights = auth.Rights(None)
        # (user, sha256 of password) pairs already checked: PBKDF2 once, not on every request
        self.verified: set[tuple[str, str]] = set()
        if config.auth not in ("none", "basic", "token"):
            raise ValueError(f"--auth {config.auth!r}: want none, basic or token")
        if config.auth != "none":
            if config.password_file is None:
                raise ValueError(f"--auth {config.auth} needs a password file")
            self.users = auth.parse_password_file(config.password_file.read_text())
        if config.rights_file is not None:
            self.rights = auth.Rights.parse(config.rights_file.read_text())
        self.token_key = self._token_key() if config.auth == "token" else b""
        self.scans: dict[str, asyncio.Task[None]] = {}  # manifest digest -> scan in progress
        self.handlers: dict[tuple[Endpoint, str], Handler] = {
            (Endpoint.BASE, "GET"): self.base,
            (Endpoint.BLOB, "GET"): self.get_blob,
            (Endpoint.BLOB, "HEAD"): self.get_blob,
            (Endpoint.BLOB, "DELETE"): self.delete_blob,
            (Endpoint.UPLOADS, "POST"): self.start_upload,
            (Endpoint.UPLOAD, "GET"): self.upload_status,
            (Endpoint.UPLOAD, "PATCH"): self.patch_upload,
            (Endpoint.UPLOAD, "PUT"): self.finish_upload,
            (Endpoint.UPLOAD, "DELETE"): self.cancel_upload,
            (Endpoint.MANIFEST, "GET"): self.get_manifest,
            (Endpoint.MANIFEST, "HEAD"): self.get_manifest,
            (Endpoint.MANIFEST, "PUT"): self.put_manifest,
            (Endpoint.MANIFEST, "DELETE"): self.delete_manifest,
            (Endpoint.TAGS, "GET"): self.list_tags,
            (Endpoint.REFERRERS, "GET"): self.list_referrers,
        }

    def _token_key(self) -> bytes:
        path = self.config.root / "auth" / "token.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
        return path.read_bytes()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.errors_middleware])
        app.router.add_route("*", "/token", self.token)
        app.router.add_route("GET", "/api/v1/repository/{tail:.*}", self.security)
        app.router.add_route("*", "/v2{tail:.*}", self.dispatch)
        app.router.add_route("*", "/{tail:.*}", self.not_found)
        app.on_response_prepare.append(self._common_headers)
        return app

    @staticmethod
    async def _common_headers(request: web.Request, response: web.StreamResponse) -> None:
        response.headers[API_VERSION_HEADER[0]] = API_VERSION_HEADER[1]

    @web.middleware
    async def errors_middleware(self, request: web.Request,
                                handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                                ) -> web.StreamResponse:
        try:
            return await handler(request)
        except RegistryError as e:
            response = error_response(e)
            if request.can_read_body and not request.content.at_eof():
                # a refused body is not drained (it may be huge or endless): the connection ends
                response.force_close()
            return response
        except web.HTTPException:
            raise
        except Exception as e:  # one bad request must never take the server down
            log.exception("%s %s failed", request.method, request.path)
            return error_response(RegistryError("UNKNOWN", str(e)[:200]))

    async def not_found(self, request: web.Request) -> web.StreamResponse:
        raise RegistryError("NAME_UNKNOWN", {"path": request.path[:300]}, status=404, message="no such endpoint")

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        route = routes.match(request.path)
        if route is None:
            raise RegistryError("NAME_UNKNOWN", {"path": request.path[:300]}, status=404,
                                message="no such endpoint")
        handler = self.handlers.get((route.endpoint, request.method))
        if handler is None:
            raise RegistryError("UNSUPPORTED", f"{request.method} on {route.endpoint.value}")
        identity = self.authenticate(request, route)
        return await handler(request, route, identity)

    # ------------------------------------------------------------------ auth

    def realm(self, request: web.Request) -> str:
        return self.config.realm or f"{request.scheme}://{request.host}/token"

    def check_password(self, user: str, password: str) -> bool:
        remembered = (user, hashlib.sha256(password.encode()).hexdigest())
        if remembered in self.verified:
            return True
        stored = self.users.get(user)
        if stored is None or not auth.verify_password(stored, password):
            return False
        self.verified.add(remembered)
        return True

    def authenticate(self, request: web.Request, route: Route) -> Identity:
        mode = self.config.auth
        if mode == "none":
            return Identity(None, lambda name, action: True)
        action = auth.required_action(request.method)
        header = request.headers.get("Authorization")
        if mode == "basic":
            challenge = {"WWW-Authenticate": auth.basic_challenge(self.config.service)}
            creds = auth.parse_basic(header)
            user: str | None = None
            if creds is not None:
                if not self.check_password(*creds):
                    raise RegistryError("UNAUTHORIZED", "bad credentials", headers=challenge)
                user = creds[0]
            rights = self.rights
            identity = Identity(user, lambda name, act: act in rights.actions(user, name))
            if route.endpoint is Endpoint.BASE:
                if user is None:
                    raise RegistryError("UNAUTHORIZED", headers=challenge)
            elif not identity.may(route.name, action):
                if user is None:
                    raise RegistryError("UNAUTHORIZED", headers=challenge)
                raise RegistryError("DENIED", {"repository": route.name, "action": action})
            return identity
        # token
        needed = [] if route.endpoint is Endpoint.BASE else [auth.repository_scope(route.name, action)]
        claims: auth.TokenClaims | None = None
        token = auth.parse_bearer(header)
        if token is not None:
            with contextlib.suppress(ValueError):
                claims = auth.verify_token(self.token_key, token, self.config.service)
        if claims is None or not all(claims.allows(s) for s in needed):
            error = "insufficient_scope" if claims is not None else ("invalid_token" if token else None)
            bearer = auth.bearer_challenge(self.realm(request), self.config.service, needed, error)
            raise RegistryError("UNAUTHORIZED", headers={"WWW-Authenticate": bearer})
        granted = claims
        return Identity(granted.subject or None,
                        lambda name, act: granted.allows(auth.repository_scope(name, act)))

    async def token(self, request: web.Request) -> web.StreamResponse:
        if self.config.auth != "token" or request.method not in ("GET", "POST"):
            raise RegistryError("UNSUPPORTED", "no token service here", status=404)
        user: str | None = None
        creds = auth.parse_basic(request.headers.get("Authorization"))
        if creds is not None:
            if not self.check_password(*creds):
                raise RegistryError("UNAUTHORIZED", "bad credentials",
                                    headers={"WWW-Authenticate": auth.basic_challenge(self.config.service)})
            user = creds[0]
        service = request.query.get("service", self.config.service)
        if service != self.config.service:
            raise RegistryError("DENIED", f"unknown service {service!r}")
        scopes = []
        for text in request.query.getall("scope", []):
            for part in text.split(" "):
                if part:
                    try:
                        scopes.append(self.rights.grant(user, auth.Scope.parse(part)))
                    except ValueError as e:
                        raise RegistryError("UNSUPPORTED", str(e), status=400) from None
        answer = auth.issue_token(self.token_key, user, service, scopes, ttl=self.config.token_ttl)
        return web.json_response(answer)

    # ------------------------------------------------------------------ helpers

    async def body_chunks(self, request: web.Request) -> AsyncIterator[bytes]:
        while True:
            try:
                chunk = await asyncio.wait_for(request.content.readany(), self.config.read_timeout)
            except TimeoutError:
                raise RegistryError("BLOB_UPLOAD_INVALID", "request body stalled", status=408) from None
            if not chunk:
                return
            yield chunk

    def upload_lock(self, name: str, upload_id: str) -> asyncio.Lock:
        return self.upload_locks.setdefault((name, upload_id), asyncio.Lock())

    def upload_headers(self, name: str, upload_id: str, size: int) -> dict[str, str]:
        return {
            "Location": f"/v2/{name}/blobs/uploads/{upload_id}",
            "Range": ranges.upload_range_header(size),
            "Docker-Upload-UUID": upload_id,
        }

    async def receive(self, request: web.Request, name: str, upload_id: str) -> int:
        """Append the request body to an upload, all or nothing; the new size."""
        size = await asyncio.to_thread(self.storage.upload_size, name, upload_id)
        if size is None:
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", {"upload": upload_id})
        expected: int | None = None
        content_range = request.headers.get("Content-Range")
        if content_range:
            try:
                chunk = ranges.parse_content_range(content_range)
            except ValueError as e:
                raise RegistryError("BLOB_UPLOAD_INVALID", str(e), status=416,
                                    headers=self.upload_headers(name, upload_id, size)) from None
            if not ranges.chunk_in_order(chunk, size):
                raise RegistryError("BLOB_UPLOAD_INVALID", f"chunk starts at {chunk.start}, upload has {size} bytes",
                                    status=416, headers=self.upload_headers(name, upload_id, size))
            expected = chunk.length
        if request.content_length is not None:
            if expected is not None and request.content_length != expected:
                raise RegistryError("SIZE_INVALID", "Content-Length differs from Content-Range")
            expected = request.content_length
        if expected is not None and size + expected > self.config.max_blob_bytes:
            raise RegistryError("SIZE_INVALID", f"blobs are limited to {self.config.max_blob_bytes} bytes", status=413)
        state = await asyncio.to_thread(self.storage.upload_state, name, upload_id)
        if state.offset != size:
            self.storage.uploads.pop((name, upload_id), None)
            state = await asyncio.to_thread(self.storage.upload_state, name, upload_id)
        received = 0
        try:
            with open(self.storage.upload_data(name, upload_id), "ab") as f:
                async for data in self.body_chunks(request):
                    received += len(data)
                    if size + received > self.config.max_blob_bytes:
                        raise RegistryError("SIZE_INVALID",
                                            f"blobs are limited to {self.config.max_blob_bytes} bytes", status=413)
                    f.write(data)
                    state.hasher.update(data)
                    state.offset += len(data)
            if expected is not None and received != expected:
                raise RegistryError("SIZE_INVALID", f"got {received} of {expected} bytes")
        except BaseException:
            await asyncio.shield(asyncio.to_thread(self.storage.rollback_upload, name, upload_id, size))
            raise
        return size + received

    # ------------------------------------------------------------------ endpoints

    async def base(self, request: web.Request, route: Route, identity: Identity) -> web.StreamResponse:
        return web.json_response({})

    async def get_blob(self, request: web.Request, route: Route, identity: Identity) -> web.StreamResponse:
        digest = route.digest
        size = await asyncio.to_thread(self.storage.blob_size, route.name, digest)
        if size is None:
            raise RegistryError("BLOB_UNKNOWN", {"digest": str(digest)})
        headers = {"Docker-Content-Digest": str(digest), "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream", "ETag": f'"{digest}"'}
        try:
            wanted = ranges.parse_range(request.headers.get("Range"), size)
        except ranges.Unsatisfiable:
            raise RegistryError("BLOB_UNKNOWN", "range not satisfiable", status=416,
                                message="requested range not satisfiable",
                                headers={"Content-Range": f"bytes */{size}"}) from None
        start, end = wanted if wanted is not None else (0, size - 1)
        response = web.StreamResponse(status=206 if wanted is not None else 200, headers=headers)
        if wanted is not None:
            response.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        response.content_length = end - start + 1
        try:
            f = await asyncio.to_thread(open, self.storage.blob_path(digest), "rb")
        except FileNotFoundError:  # swept by GC between the stat and the open
            raise RegistryError("BLOB_UNKNOWN", {"digest": str(digest)}) from None
        with f:
            await response.prepare(request)
            if request.method == "HEAD":
                await response.write_eof()
                return response
            f.seek(start)
            left = end - start + 1
            while left > 0:
                data = await asyncio.to_thread(f.read, min(STREAM_CHUNK, left))
                if not data:
                    break
                await response.write(data)
                left -= len(data)
        await response.write_eof()
        return response

    async def delete_blob(self, request: web.Request, route: Route, identity: Identity) -> web.StreamResponse:
        if not await asyncio.to_thread(self.storage.delete_blob, route.name, route.digest):
            raise RegistryError("BLOB_UNKNOWN", {"digest": route.reference})
        return web.Response(status=202)

    async def start_upload(self, request: web.Request, route: Route, identity: Identity) -> web.StreamResponse:
        name = route.name
        mount, source = request.query.get("mount"), request.query.get("from")
        if mount and source:
            mounted = await self.try_mount(name, mount, source, identity)
            if mounted is not None:
                return web.Response(status=201, headers={"Location": f"/v2/{name}/blobs/{mounted}",
                                                         "Docker-Content-Digest": str(mounted)})
        digest_text = request.query.get("digest")
        digest = self.parse_digest(digest_text) if digest_text is not None else None
        upload_id = await asyncio.to_thread(self.storage.new_upload, name)
        if digest is None:
            return web.Response(status=202, headers=self.upload_headers(name, upload_id, 0))
        return await self.complete(request, name, upload_id, digest)

    async def try_mount(self, name: str, mount: str, source: str, identity: Identity) -> Digest | None:
        try:
            digest = Digest.parse(mount)
        except ValueError as e:
            raise RegistryError("DIGEST_INVALID", str(e)) from None
        try:
            source_route = routes.match(f"/v2/{source}/tags/list")
        except RegistryError:
            return None  # an invalid source name: no mount, a plain upload instead
        if source_route is None or not identity.may(source, "pull"):
            return None
        ok = await asyncio.to_thread(self.storage.mount_blob, name, source, digest)
        return digest if ok else None

    @staticmethod
    def parse_digest(text: str | None) -> Digest:
        if not text:
            raise RegistryError("DIGEST_INVALID", "the digest parameter is missing")
        try:
            return Digest.parse(text)
        except ValueError as e:
            raise RegistryError("DIGEST_INVALID", str(e)) from None

    async def complete(self, request: web.Request, name: str, upload_id: str, digest: Digest) -> web.StreamResponse:
        async with self.upload_lock(name, upload_id):
            try:
                if request.can_read_body:
                    await self.receive(request, name, upload_id)
                elif await asyncio.to_thread(self.storage.upload_size, name, upload_id) is None:
                    raise RegistryError("BLOB_UPLOAD_UNKNOWN", {"upload": upload_id})
                ok = await asyncio.to_thread(self.storage.commit_upload, name, upload_id, digest)
            finally:
                self.upload_locks.pop((name, upload_id), None)
        if not ok:
            raise RegistryError("DIGEST_INVALID", {"digest": str(digest)})
        return web.Response(status=201, headers={"Location": f"/v2/{name}/blobs/{digest}",
                                                 "Docker-Content-Digest": str(digest)})

    async def upload_status(self, request: web.Request, route: Route, identity: Identity) -> web.StreamResponse:
        size = await asyncio.to_thread(self.storage.upload_size, route.name, route.reference)
        if size is None:
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", {"upload": route.reference})
        return web.Response(status=204, headers=self.upload_headers(route.name, route.reference, size))

    async def patch_upload(self, request: web.Request, route: Route, identity: Identity) -> web.StreamResponse:
        async with self.upload_lock(route.name, route.reference):
            size = await self.receive(request, route.name, route.reference)
        return web.Response(status=202, headers=self.upload_headers(route.name, route.reference, size))

    async def finish_upload(self, request: web.Request, route: Route, identity: Identity) -> web.StreamResponse:
        digest = self.parse_digest(request.query.get("digest"))
        return await self.complete(request, route.name, route.reference, digest)

    async def cancel_upload(self, request: web.Request, route: Route, identity: Identity) -> web.StreamResponse:
        async with self.upload_lock(route.name, route.reference):
            found = await asyncio.to_thread(self.storage.cancel_upload, route.name, route.reference)
        self.upload_locks.pop((route.name, route.reference), None)
        if not found:
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", {"upload": route.reference})
        return web.Response(status=204)

    async def get_manifest(self, request: web.Request, route: Route, identity: Identity) -> web.StreamResponse:
        found = await asyncio.to_thread(self.storage.get_manifest, route.name, route.reference)
        if found is None:
            raise RegistryError("MANIFEST_UNKNOWN", {"reference": route.reference})
        digest, media_type, body = found
        headers = {"Docker-Content-Digest": str(digest), "Content-Type": media_type, "ETag": f'"{digest}"'}
        return web.Response(body=body, headers=headers)

    async def read_manifest(self, request: web.Request) -> bytes:
        limit = manifests.MAX_MANIFEST_BYTES
        too_big = RegistryError("SIZE_INVALID", f"manifests are limited to {limit} bytes", status=413)
        if request.content_length is not None and request.content_length > limit:
            raise too_big
        body = bytearray()
        async for chunk in self.body_chunks(request):
            body += chunk
            if len(body) > limit:
                raise too_big
        return bytes(body)

    async def put_manifest(self, request: web.Request, route: Route, identity: Identity) -> web.StreamResponse:
        body = await self.read_manifest(request)
        by_digest = ":" in route.reference
        algorithm = route.digest.algorithm if by_digest else "sha256"
        manifest = manifests.parse_manifest(body, request.headers.get("Content-Type"), algorithm)
        if by_digest and manifest.digest != route.digest:
            raise RegistryError("DIGEST_INVALID", {"reference": route.reference, "digest": str(manifest.digest)})
        tag = None if by_digest else route.reference
        await asyncio.to_thread(self.store_manifest, route.name, manifest, body, tag)
        self.schedule_scan(route.name, manifest)
        headers = {"Location": f"/v2/{route.name}/manifests/{manifest.digest}",
                   "Docker-Content-Digest": str(manifest.digest)}
        if manifest.subject is not None:
            headers["OCI-Subject"] = str(manifest.subject.digest)
        return web.Response(status=201, headers=headers)

    # ------------------------------------------------------------------ scanning (quay + Clair)

    def schedule_scan(self, name: str, manifest: manifests.Manifest) -> None:
        """Scan a pushed image in a worker thread: the push is answered at once, and
        GET /api/v1/repository/<repo>/manifest/<digest>/security serves the report."""
        vulndb = self.config.vulndb
        if vulndb is None or not vulndb.exists() or manifest.artifact_type not in IMAGE_CONFIG_TYPES:
            return  # nothing to scan against, or not an image (an index's images are pushed too)
        digest = str(manifest.digest)
        if digest in self.scans:
            return

        def scan() -> None:
            from gifee.scan import registry_hook

            report = registry_hook.scan_manifest(self.config.root, name, digest, vulndb)
            registry_hook.save_report(self.config.root, digest, report)

        async def run() -> None:
            try:
                await asyncio.to_thread(scan)
            except Exception:
                logging.getLogger("gifee.registry").exception("scanning %s@%s failed", name, digest)
            finally:
                self.scans.pop(digest, None)

        self.scans[digest] = asyncio.get_running_loop().create_task(run())

    async def security(self, request: web.Request) -> web.StreamResponse:
        """quay's security endpoint: /api/v1/repository/<repo>/manifest/<digest>/security."""
        tail = request.match_info["tail"]
        repo, sep, rest = tail.rpartition("/manifest/")
        digest, _, suffix = rest.partition("/")
        route = routes.match(f"/v2/{repo}/manifests/{digest}") if sep and suffix == "security" else None
        if route is None or route.endpoint is not Endpoint.MANIFEST or ":" not in route.reference:
            raise RegistryError("NAME_UNKNOWN", {"path": request.path[:300]}, status=404,
                                message="no such endpoint")
        self.authenticate(request, route)  # pull rights on the repository
        if not await asyncio.to_thread(self.storage.has_manifest, route.name, route.digest):
            raise RegistryError("MANIFEST_UNKNOWN", {"reference": route.reference})
        from gifee.scan import registry_hook

        report = await asyncio.to_thread(registry_hook.latest_report, self.config.root, str(route.digest))
        if report is not None:
            body: dict[str, object] = {"status": "scanned", "data": report}
        elif str(route.digest) in self.scans:
            body = {"status": "queued"}
        else:
            body = {"status": "unsupported" if self.config.vulndb is None or not self.config.vulndb.exists()
                    else "not scanned"}
        return web.json_response(body)

    def store_manifest(self, name: str, manifest: manifests.Manifest, body: bytes, tag: str | None) -> None:
        with self.storage.writer_lock():  # held from the checks to the write: GC cannot slip in
            for blob in manifest.blobs:
                if self.storage.blob_size(name, blob.digest) is None:
                    raise RegistryError("MANIFEST_BLOB_UNKNOWN", {"digest": str(blob.digest)})
            for child in manifest.children:
                if not self.storage.has_manifest(name, child.digest):
                    raise RegistryError("MANIFEST_BLOB_UNKNOWN", {"digest": str(child.digest)})
            self.storage.put_manifest(name, manifest, body, tag)

    async def delete_manifest(self, request: web.Request, route: Route, identity: Identity) -> web.StreamResponse:
        if ":" in route.reference:
            found = await asyncio.to_thread(self.storage.delete_manifest, route.name, route.digest)
        else:
            found = await asyncio.to_thread(self.storage.delete_tag, route.name, route.reference)
        if not found:
            raise RegistryError("MANIFEST_UNKNOWN", {"reference": route.reference})
        return web.Response(status=202)

    async def list_tags(self, request: web.Request, route: Route, identity: Identity) -> web.StreamResponse:
        try:
            n = pagination.parse_n(request.query.get("n"))
        except ValueError as e:
            raise RegistryError("PAGINATION_NUMBER_INVALID", str(e)) from None
        tags = await asyncio.to_thread(self.storage.tags, route.name)
        if tags is None:
            raise RegistryError("NAME_UNKNOWN", {"name": route.name})
        chosen, next_last = pagination.page(tags, n, request.query.get("last"))
        headers = {}
        if next_last is not None and n is not None:
            headers["Link"] = pagination.link_header(route.name, n, next_last)
        return web.json_response({"name": route.name, "tags": chosen}, headers=headers)

    async def list_referrers(self, request: web.Request, route: Route, identity: Identity) -> web.StreamResponse:
        descriptors = await asyncio.to_thread(self.storage.referrers, route.name, route.digest)
        headers = {}
        artifact_type = request.query.get("artifactType")
        if artifact_type:
            descriptors = [d for d in descriptors if d.get("artifactType") == artifact_type]
            headers["OCI-Filters-Applied"] = "artifactType"
        body = json.dumps(manifests.referrers_index(descriptors)).encode()
        return web.Response(body=body, headers=headers, content_type=manifests.OCI_INDEX)


# ---------------------------------------------------------------------- running


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


async def serve(config: RegistryConfig, host: str, port: int, ssl_context: ssl.SSLContext | None = None,
                started: Callable[[int], Any] | None = None) -> None:
    registry = Registry(config)
    # A refused body is read and dropped for at most LINGER_SECONDS (so that the client sees
    # the answer rather than a reset), then the connection ends: a huge body costs no more.
    runner = web.AppRunner(registry.app(), access_log=None, handle_signals=True, lingering_time=LINGER_SECONDS)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    if started is not None:
        addresses = runner.addresses
        started(int(addresses[0][1]) if addresses else port)
    log.info("registry serving %s on %s:%d", config.root, host, port)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
