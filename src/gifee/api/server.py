"""The API server's HTTP shell: routes requests to discovery, the REST verbs
(rest.py) and watch streams (watchcache.py), and turns every failure into a
Kubernetes Status. Served by httpserver.py (httptools); connections that upgrade
(exec) are handed to aiohttp's server, which runs the same dispatch. No
authentication: serve on loopback, or put TLS and a trusted network around it
(docs/API.md).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import yaml
from aiohttp import web

from gifee.api import discovery, errors, ipalloc, jsoncodec, resources, routing, tables
from gifee.api.bodies import protobuf_body
from gifee.api.httpapi import Answer, HttpRequest, Reply, Stream, Write, text, to_aiohttp
from gifee.api.httpserver import HttpServer
from gifee.api.rest import Rest, now
from gifee.api.routing import Output, Target
from gifee.api.storage import ListQuery, Storage
from gifee.api.watchcache import CLOSED, ResourceWatchCache, direct_events
from gifee.api.watchcore import WatchFilter
from gifee.store.client import StoreClient

log = logging.getLogger("gifee.api")
MAX_BODY = 3 * 1024 * 1024
DEFAULT_WATCH_TIMEOUT = 1800
WATCH_BATCH = 512  # events per write to one watcher
LINE_CACHE = 4096  # encoded watch events kept for the other watchers of the same event


@dataclass
class ApiConfig:
    etcd_endpoint: str
    bind_address: str = "127.0.0.1"
    port: int = 8080
    ssl_context: ssl.SSLContext | None = None
    bookmark_interval: float = 60.0
    watch_window: int = 1000
    store_batch: int = 64  # writes per store Txn under load (txnbatch.py); 1: one Txn per write
    extra: dict[str, Any] = field(default_factory=dict)


def _json(data: Any, status: int = 200) -> Reply:
    return Reply(jsoncodec.dumps(data), status)


def _status_response(e: errors.ApiError) -> Reply:
    return _json(e.status(), e.code)


def _too_large() -> Reply:
    return _status_response(errors.ApiError(413, "RequestEntityTooLarge", "the request body is too large", {}))


async def status_errors(request: HttpRequest, handler: Any) -> Answer:
    """Every failure of `handler` as a Kubernetes Status (aiohttp's own HTTP errors pass through)."""
    try:
        return await handler(request)  # type: ignore[no-any-return]
    except errors.ApiError as e:
        return _status_response(e)
    except web.HTTPRequestEntityTooLarge:
        return _too_large()
    except web.HTTPException:
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as e:  # one bad request never takes the server down
        log.exception("%s %s", request.method, request.path)
        return _status_response(errors.internal(str(e)))


async def _expect(request: web.BaseRequest) -> None:
    """aiohttp's default Expect handling: "100 Continue" before the body is read."""
    expect = request.headers.get("Expect", "")
    if request.version == (1, 1):
        if expect.lower() != "100-continue":
            raise web.HTTPExpectationFailed(text=f"Unknown Expect: {expect}")
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0


class ApiServer:
    def __init__(self, client: StoreClient, config: ApiConfig) -> None:
        self.client = client
        self.config = config
        self.storage = Storage(client, batch=config.store_batch)
        self.rest = Rest(self.storage)
        self.rest.services = ipalloc.ServiceAllocator(
            client, str(config.extra.get("service_cluster_ip_range", ipalloc.DEFAULT_RANGE)),
            config.extra.get("service_node_port_range", ipalloc.DEFAULT_PORTS))
        self.caches: dict[str, ResourceWatchCache] = {}
        self._watch_tasks: set[asyncio.Task[Any]] = set()
        # recent watch events as sent (JSON lines): every watcher of a resource is sent the same
        # object, encoded once; keyed by the object's identity, which the entry keeps alive
        self._lines: OrderedDict[tuple[str, int], tuple[dict[str, Any], bytes]] = OrderedDict()

    def _event_line(self, kind: str, obj: dict[str, Any]) -> bytes:
        key = (kind, id(obj))
        hit = self._lines.get(key)
        if hit is not None and hit[0] is obj:
            return hit[1]
        data = jsoncodec.dumps({"type": kind, "object": obj}) + b"\n"
        self._lines[key] = (obj, data)
        if len(self._lines) > LINE_CACHE:
            self._lines.popitem(last=False)
        return data

    async def start(self) -> None:
        revision = await self.storage.revision()
        for res in resources.RESOURCES:
            cache = ResourceWatchCache(self.client, res, self.config.watch_window)
            await cache.start(revision)
            self.caches[res.plural] = cache
        self.storage.cached = self._cached
        self.storage.written = self._written
        await self.rest.ensure_default_namespaces()
        await self._ensure_kubernetes_service()

    def _cached(self, res: resources.Resource, namespace: str, name: str) -> dict[str, Any] | None:
        cache = self.caches.get(res.plural)
        return cache.cached(namespace, name) if cache is not None else None

    def _written(self, res: resources.Resource, key: bytes, revision: int, obj: dict[str, Any]) -> None:
        cache = self.caches.get(res.plural)
        if cache is not None:
            cache.written(key, revision, obj)

    async def _ensure_kubernetes_service(self) -> None:
        """The `kubernetes` service (and its endpoints: this server) in `default`; kept if it exists."""
        assert self.rest.services is not None
        svc, eps = ipalloc.kubernetes_objects(self.rest.services.cidr, self.config.bind_address, self.config.port)
        for plural, obj in (("services", svc), ("endpoints", eps)):
            res = resources.by_plural(plural)
            if obj is None or res is None:
                continue
            try:
                await self.rest.create(res, "default", obj)
            except errors.ApiError as e:
                if e.reason != "AlreadyExists" and e.code != 422:
                    raise

    async def stop(self) -> None:
        for cache in self.caches.values():
            await cache.stop()
        await self.rest.stop()

    async def answer(self, request: HttpRequest) -> Answer:
        """What httpserver.py serves: the answer to a request whose body is read."""
        return await status_errors(request, self.dispatch)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """What aiohttp serves (connections handed over for an upgrade)."""
        if "Expect" in request.headers:  # what the Application's routes did (curl sends it for big bodies)
            await _expect(request)
        return await to_aiohttp(request, await status_errors(request, self.dispatch))

    def aiohttp_server(self, **kwargs: Any) -> web.Server:
        """aiohttp's low-level server around `handle`, for the connections that upgrade (exec)."""
        loop = asyncio.get_running_loop()

        def make_request(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> web.BaseRequest:
            return web.BaseRequest(message, payload, protocol, writer, task, loop, client_max_size=MAX_BODY)

        return web.Server(self.handle, request_factory=make_request, **kwargs)

    def http_server(self, fallback: web.Server) -> HttpServer:
        return HttpServer(self.answer, max_body=MAX_BODY, too_large=_too_large, fallback=fallback)

    # -- routing

    async def dispatch(self, request: HttpRequest) -> Answer:
        path = request.path.rstrip("/") or "/"
        if request.method in ("GET", "HEAD"):
            simple = await self._simple(request, path)
            if simple is not None:
                return simple
        target = routing.parse_resource_path(path)
        if target is None:
            raise errors.path_not_found(path)
        return await self._resource(request, target)

    async def _simple(self, request: HttpRequest, path: str) -> Answer | None:
        if path in ("/healthz", "/livez", "/readyz") or path.startswith(("/healthz/", "/livez/", "/readyz/")):
            if path.startswith("/readyz"):
                try:
                    await self.storage.revision()
                except errors.ApiError as e:
                    return text(f"[-]etcd failed: {e.message}\nreadyz check failed", status=500)
            return text("ok")
        if path == "/version":
            return _json(discovery.version_info())
        if path == "/api":
            return _json(discovery.api_versions(f"{self.config.bind_address}:{self.config.port}"))
        if path == "/apis":
            return _json(discovery.api_group_list())
        if path in ("/openapi/v2", "/swagger-2.0.0.pb-v1"):
            if routing.accepts_protobuf_openapi(request.headers.get("Accept", "")):
                return Reply(discovery.openapi_v2_protobuf(),
                             content_type="application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
            return _json(discovery.openapi_v2_json())
        parts = [p for p in path.split("/") if p]
        if len(parts) == 2 and parts[0] == "api":
            doc = discovery.resource_list("", parts[1])
            return _json(doc) if doc else None
        if len(parts) == 2 and parts[0] == "apis":
            doc = discovery.api_group(parts[1])
            return _json(doc) if doc else None
        if len(parts) == 3 and parts[0] == "apis":
            doc = discovery.resource_list(parts[1], parts[2])
            return _json(doc) if doc else None
        return None

    # -- bodies and output

    async def _body(self, request: HttpRequest) -> Any:
        raw = await request.read()
        if not raw:
            return None
        ctype = request.content_type
        if ctype == "application/vnd.kubernetes.protobuf":
            return protobuf_body(raw)
        try:
            if ctype in ("application/yaml", "application/x-yaml"):
                return yaml.safe_load(raw)
            if ctype in ("application/json", "application/octet-stream", "text/plain", "") or ctype.endswith("+json"):
                return jsoncodec.loads(raw)
        except (ValueError, yaml.YAMLError) as e:
            raise errors.bad_request(f"the body of the request could not be decoded: {e}") from None
        raise errors.ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                              f"accepted media types include: application/json, application/yaml, "
                              f"application/vnd.kubernetes.protobuf (got {ctype!r})", {})

    def _render(self, res: Any, out: Output, data: dict[str, Any], status: int = 200) -> Reply:
        if out.table and data.get("kind") not in ("Status", "Scale"):
            items = data.get("items") if data.get("kind", "").endswith("List") and "items" in data else [data]
            meta = {k: v for k, v in (data.get("metadata") or {}).items()
                    if k in ("resourceVersion", "continue", "remainingItemCount")} if "items" in data else {}
            return _json(tables.to_table(res.kind, items or [], now=now(), include_object=out.include_object,
                                         list_meta=meta), status)
        return _json(data, status)

    # -- resources

    async def _resource(self, request: HttpRequest, t: Target) -> Answer:
        res, ns, name, sub = t.res, t.namespace, t.name, t.subresource
        query = dict(request.query)
        method = request.method
        out = routing.output_format(request.headers.get("Accept", ""), query)
        dry_run = query.get("dryRun", "") == "All"
        if query.get("dryRun", "") not in ("", "All"):
            raise errors.bad_request(f"unsupported dryRun value {query['dryRun']!r}")
        if res.namespaced and name and not ns:
            raise errors.path_not_found(request.path)
        if not name:
            opts = routing.list_options(query, res, t.watch_prefix)
            lq = ListQuery(ns, opts.label_selector, opts.field_selector, opts.limit, opts.continue_token,
                           int(opts.resource_version) if opts.resource_version_match == "Exact" else 0)
            if method in ("GET", "HEAD"):
                if opts.watch:
                    return await self._watch(request, t, opts, out)
                if res.namespaced and ns:
                    await self.rest._check_namespace(ns, creating=False)
                result = await self.rest.list(res, lq)
                return self._render(res, out, self.rest.list_object(res, result))
            if method == "POST":
                created = await self.rest.create(res, ns, await self._body(request), dry_run=dry_run, owned=True)
                return self._render(res, out, created, 201)
            if method == "DELETE":
                options = routing.delete_options(query, await self._body(request))
                return self._render(res, out, await self.rest.delete_collection(res, lq, options))
            raise errors.method_not_allowed()
        if t.watch_prefix:
            opts = routing.list_options({**query, "fieldSelector": f"metadata.name={name}"}, res, True)
            return await self._watch(request, t, opts, out)
        if not sub:
            if method in ("GET", "HEAD"):
                if query.get("watch") in ("1", "true"):
                    opts = routing.list_options({**query, "fieldSelector": f"metadata.name={name}"}, res, True)
                    return await self._watch(request, t, opts, out)
                if query.get("resourceVersion") == "0":
                    # "any version": the watch cache's copy if it has one, as Kubernetes serves it from its
                    # watch cache (kubelets read their Node this way); it may lag the store
                    cached = self._cached(res, ns, name)
                    if cached is not None:
                        return self._render(res, out, cached)
                return self._render(res, out, await self.rest.get(res, ns, name))
            if method == "PUT":
                return self._render(res, out, await self.rest.update(res, ns, name, await self._body(request),
                                                                     dry_run=dry_run, owned=True))
            if method == "PATCH":
                return self._render(res, out, await self.rest.patch(
                    res, ns, name, request.headers.get("Content-Type", ""), await self._body(request),
                    dry_run=dry_run))
            if method == "DELETE":
                options = routing.delete_options(query, await self._body(request))
                return self._render(res, out, await self.rest.delete(res, ns, name, options))
            raise errors.method_not_allowed()
        return await self._subresource(request, t, out, dry_run)

    async def _subresource(self, request: HttpRequest, t: Target, out: Output, dry_run: bool) -> Answer:
        res, ns, name, sub = t.res, t.namespace, t.name, t.subresource
        method = request.method
        if sub == "status" or (sub == "finalize" and method == "PUT"):
            if method == "GET":
                return _json(await self.rest.get(res, ns, name))
            if method == "PUT":
                return _json(await self.rest.update(res, ns, name, await self._body(request), subresource="status",
                                                    dry_run=dry_run, owned=True))
            if method == "PATCH":
                return _json(await self.rest.patch(res, ns, name, request.headers.get("Content-Type", ""),
                                                   await self._body(request), subresource="status", dry_run=dry_run))
        elif sub == "scale":
            if method == "GET":
                return _json(await self.rest.get_scale(res, ns, name))
            if method == "PUT":
                return _json(await self.rest.update_scale(res, ns, name, await self._body(request), dry_run=dry_run))
            if method == "PATCH":
                return _json(await self.rest.update_scale(res, ns, name, await self._body(request), dry_run=dry_run,
                                                          patch_type=request.headers.get("Content-Type", "")))
        elif sub == "binding" and method == "POST":
            return _json(await self.rest.bind(ns, name, await self._body(request)), 201)
        elif sub == "eviction" and method == "POST":
            return _json(await self.rest.evict(ns, name, await self._body(request)), 201)
        elif res.plural == "pods" and sub in ("log", "exec") and method in ("GET", "POST"):
            from gifee.api import nodeproxy  # the node agent serves these (docs in nodeproxy)

            if sub == "log":
                return await nodeproxy.serve_log(self.storage, request, ns, name)
            if not isinstance(request, web.BaseRequest):  # upgrades reach aiohttp (httpserver.py)
                raise errors.bad_request("exec needs a WebSocket (v5.channel.k8s.io or v4.channel.k8s.io) or "
                                         "SPDY/3.1 upgrade")
            return await nodeproxy.serve_exec(self.storage, request, ns, name)
        elif sub == "log" and method == "GET":
            data = await self.rest.pod_log(ns, name, dict(request.query))
            return Reply(data, content_type="text/plain")
        raise errors.method_not_allowed()

    # -- watch

    async def _watch(self, request: HttpRequest, t: Target, opts: routing.ListOptions, out: Output) -> Stream:
        res = t.res
        flt = WatchFilter(t.namespace, "", opts.label_selector, opts.field_selector)
        cache = self.caches[res.plural]
        timeout = opts.timeout_seconds if opts.timeout_seconds and opts.timeout_seconds > 0 else DEFAULT_WATCH_TIMEOUT
        initial: list[dict[str, Any]] = []
        if opts.resource_version in ("", "0"):
            result = await self.storage.list(res, ListQuery(t.namespace, opts.label_selector, opts.field_selector))
            initial, start = result.items, result.revision
        else:
            start = int(opts.resource_version)

        def line(kind: str, obj: dict[str, Any]) -> bytes:
            if out.table and kind in ("ADDED", "MODIFIED", "DELETED"):
                obj = tables.to_table(res.kind, [obj], now=now(), include_object=out.include_object,
                                      headers=True)
                return jsoncodec.dumps({"type": kind, "object": obj}) + b"\n"
            return self._event_line(kind, obj)

        async def produce(write: Write) -> None:
            await self._stream_events(write, line, t, opts, cache, initial, start, timeout, flt)

        return Stream(produce, headers=(("Cache-Control", "no-cache, private"),))

    async def _stream_events(self, write: Write, line: Any, t: Target, opts: routing.ListOptions,
                             cache: ResourceWatchCache, initial: list[dict[str, Any]], start: int, timeout: float,
                             flt: WatchFilter) -> None:
        res = t.res

        async def send(kind: str, obj: dict[str, Any]) -> None:
            await write(line(kind, obj))

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        sub = cache.subscribe(start, flt)
        try:
            for obj in initial:
                await send("ADDED", obj)
            if sub is None:
                try:
                    async with asyncio.timeout(timeout):
                        async for group in direct_events(self.client, res, start, flt):
                            await write(b"".join(line(kind, obj) for kind, obj in group))
                except errors.ApiError as e:
                    await send("ERROR", e.status())
                except TimeoutError:
                    pass
                return
            next_bookmark = loop.time() + self.config.bookmark_interval
            carry: tuple[str, Any] | None = None  # the first event of a revision the last write left out
            events = sub.events
            while True:
                now_t = loop.time()
                if now_t >= deadline:
                    break
                if carry is not None:
                    (kind, obj), carry = carry, None
                elif events:
                    kind, obj = events.popleft()
                else:
                    if opts.allow_bookmarks and now_t >= next_bookmark:
                        await send("BOOKMARK", {"kind": res.kind, "apiVersion": res.api_version,
                                                "metadata": {"resourceVersion": str(max(sub.seen, cache.latest))}})
                        next_bookmark = loop.time() + self.config.bookmark_interval
                        continue
                    await sub.wait(min(deadline, next_bookmark) if opts.allow_bookmarks else deadline)
                    continue
                if (kind, obj) == CLOSED:
                    break
                # what is queued already goes out in the same write (one chunk, one syscall), up to
                # WATCH_BATCH events and always whole revisions: objects written in one store Txn
                # share a revision, and a stream that ends (timeout, overflow) after a write must not
                # leave part of one unsent, since the client resumes after the last revision it saw
                lines = [line(kind, obj)]
                last = _revision_of(obj)
                closed = False
                while events:
                    kind, obj = events.popleft()
                    if (kind, obj) == CLOSED:
                        closed = True
                        break
                    revision = _revision_of(obj)
                    if len(lines) >= WATCH_BATCH and revision != last:
                        carry = (kind, obj)
                        break
                    lines.append(line(kind, obj))
                    last = revision
                await write(b"".join(lines))
                if closed:
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            if sub is not None:
                cache.unsubscribe(sub)


def _revision_of(obj: Any) -> str:
    return str(((obj or {}).get("metadata") or {}).get("resourceVersion", ""))


async def serve(config: ApiConfig, *, ready: asyncio.Event | None = None) -> None:
    client = StoreClient(config.etcd_endpoint)
    server = ApiServer(client, config)
    for attempt in range(60):
        try:
            await server.start()
            break
        except errors.ApiError as e:
            if attempt == 59:
                raise RuntimeError(f"cannot reach the store at {config.etcd_endpoint}: {e.message}") from None
            await asyncio.sleep(0.5)
    upgrades = server.aiohttp_server(handler_cancellation=True, access_log=None)
    http = server.http_server(upgrades)
    await http.start(config.bind_address, config.port, ssl=config.ssl_context)
    log.info("serving the Kubernetes API on %s://%s:%d (store %s)", "https" if config.ssl_context else "http",
             config.bind_address, config.port, config.etcd_endpoint)
    if ready is not None:
        ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        await http.close()
        await upgrades.shutdown(5)
        await server.stop()
        await client.close()
