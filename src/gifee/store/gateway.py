"""HTTP endpoints of the store: /health, /version, /metrics (Prometheus text) and etcd's
HTTP+JSON gateway to the v3 API (/v3/..., also under /v3beta and /v3alpha)."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from typing import Any, TypeVar

import grpc
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message

from gifee.store.errors import StoreError
from gifee.store.handlers import BIDI, SERVER_STREAM, UNARY, Method, methods
from gifee.store.listen import GRPC_OVERHEAD_BYTES
from gifee.store.node import ETCD_VERSION, Store

log = logging.getLogger("gifee.store.gateway")

T = TypeVar("T")
M = TypeVar("M", bound=Message)


def metrics_text(store: Store) -> str:
    m = store.metrics
    sm = store.sm
    lines = [
        "# HELP etcd_server_has_leader Whether or not a leader exists. 1 is existence, 0 is not.",
        "# TYPE etcd_server_has_leader gauge",
        "etcd_server_has_leader 1",
        "# HELP etcd_server_is_leader Whether or not this member is a leader.",
        "# TYPE etcd_server_is_leader gauge",
        "etcd_server_is_leader 1",
        "# HELP etcd_server_proposals_committed_total The total number of consensus proposals committed.",
        "# TYPE etcd_server_proposals_committed_total gauge",
        f"etcd_server_proposals_committed_total {sm.applied_index}",
        "# HELP etcd_server_proposals_applied_total The total number of consensus proposals applied.",
        "# TYPE etcd_server_proposals_applied_total gauge",
        f"etcd_server_proposals_applied_total {sm.applied_index}",
        "# HELP etcd_server_proposals_failed_total The total number of failed proposals seen.",
        "# TYPE etcd_server_proposals_failed_total counter",
        f"etcd_server_proposals_failed_total {int(m['proposals_failed'])}",
        "# HELP etcd_mvcc_db_total_size_in_bytes Total size of the underlying database physically allocated in bytes.",
        "# TYPE etcd_mvcc_db_total_size_in_bytes gauge",
        f"etcd_mvcc_db_total_size_in_bytes {store.db_size()}",
        "# HELP etcd_mvcc_db_total_size_in_use_in_bytes Total size of the underlying database logically in use in bytes.",
        "# TYPE etcd_mvcc_db_total_size_in_use_in_bytes gauge",
        f"etcd_mvcc_db_total_size_in_use_in_bytes {store.db_size_in_use()}",
        "# HELP etcd_debugging_mvcc_current_revision The current revision of store.",
        "# TYPE etcd_debugging_mvcc_current_revision gauge",
        f"etcd_debugging_mvcc_current_revision {sm.mvcc.revision}",
        "# HELP etcd_debugging_mvcc_compact_revision The revision of the last compaction in store.",
        "# TYPE etcd_debugging_mvcc_compact_revision gauge",
        f"etcd_debugging_mvcc_compact_revision {sm.mvcc.compact_revision}",
        "# HELP etcd_debugging_mvcc_watcher_total Total number of watchers.",
        "# TYPE etcd_debugging_mvcc_watcher_total gauge",
        f"etcd_debugging_mvcc_watcher_total {len(store.watch_hub)}",
        "# HELP etcd_debugging_lease_granted_total Leases currently granted.",
        "# TYPE etcd_debugging_lease_granted_total gauge",
        f"etcd_debugging_lease_granted_total {len(sm.leases)}",
        "# HELP etcd_disk_wal_fsync_total Number of WAL fsyncs (one per group commit).",
        "# TYPE etcd_disk_wal_fsync_total counter",
        f"etcd_disk_wal_fsync_total {int(m['wal_fsyncs'])}",
        "# HELP etcd_disk_wal_fsync_seconds_total Time spent in WAL fsyncs.",
        "# TYPE etcd_disk_wal_fsync_seconds_total counter",
        f"etcd_disk_wal_fsync_seconds_total {m['wal_fsync_seconds']:.6f}",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the JSON gateway
#
# etcd 3.4 serves its gRPC API as HTTP+JSON through grpc-gateway v1 on the client URLs; this
# is the same API over the same method table the gRPC server dispatches from (`handlers.py`).
# What etcd 3.4.23 was observed to do, and what this follows:
#
# * POST only; the body is the request message as JSON (proto or lowerCamel field names,
#   bytes as base64, 64-bit integers as strings or numbers, enums as names or numbers); an
#   empty body or `null` is the empty message. The answer uses the proto field names, leaves
#   out default values, writes bytes as base64, 64-bit integers as strings and enums as names,
#   escaping <, > and & as Go's encoder does.
# * An error is `{"error": text, "message": text, "code": grpc code}` with grpc-gateway's HTTP
#   status for the code (`HTTP_STATUS`).
# * Streams (watch, keepalive, snapshot, observe) answer with chunked JSON, one
#   `{"result": response}` per line; an error ends the stream as one
#   `{"error": {"grpc_code", "http_code", "message", "http_status"}}` object. A watch stays
#   open after the request body ends, until the client goes away.
# * A request message over the gRPC receive limit (max-request-bytes + 512 KiB) is refused
#   as gRPC refuses it: ResourceExhausted, "grpc: received message larger than max (N vs. M)".
#
# Stricter than etcd, deliberately: unknown fields, duplicate keys and data after the request
# object are refused (etcd ignores them), and a malformed stream request is reported (etcd
# drops it silently) — a request is applied only when all of it was understood.

# etcd 3.4.23 serves /v3 and /v3beta (and answers 404 under /v3alpha, which 3.4 dropped);
# /v3alpha is kept here for clients of etcd 3.2 and older.
API_PREFIXES = ("/v3", "/v3beta", "/v3alpha")

# HTTP path (after the API prefix) -> gRPC method ("service/name") in `handlers.methods`.
HTTP_ROUTES: dict[str, str] = {
    "/kv/range": "etcdserverpb.KV/Range",
    "/kv/put": "etcdserverpb.KV/Put",
    "/kv/deleterange": "etcdserverpb.KV/DeleteRange",
    "/kv/txn": "etcdserverpb.KV/Txn",
    "/kv/compaction": "etcdserverpb.KV/Compact",
    "/watch": "etcdserverpb.Watch/Watch",
    "/lease/grant": "etcdserverpb.Lease/LeaseGrant",
    "/lease/revoke": "etcdserverpb.Lease/LeaseRevoke",
    "/kv/lease/revoke": "etcdserverpb.Lease/LeaseRevoke",
    "/lease/keepalive": "etcdserverpb.Lease/LeaseKeepAlive",
    "/lease/timetolive": "etcdserverpb.Lease/LeaseTimeToLive",
    "/kv/lease/timetolive": "etcdserverpb.Lease/LeaseTimeToLive",
    "/lease/leases": "etcdserverpb.Lease/LeaseLeases",
    "/kv/lease/leases": "etcdserverpb.Lease/LeaseLeases",
    "/maintenance/alarm": "etcdserverpb.Maintenance/Alarm",
    "/maintenance/status": "etcdserverpb.Maintenance/Status",
    "/maintenance/defragment": "etcdserverpb.Maintenance/Defragment",
    # rpc.proto binds Hash and HashKV to this one path; etcd 3.4's gateway answers with Hash.
    "/maintenance/hash": "etcdserverpb.Maintenance/Hash",
    "/maintenance/snapshot": "etcdserverpb.Maintenance/Snapshot",
    "/maintenance/transfer-leadership": "etcdserverpb.Maintenance/MoveLeader",
    "/cluster/member/add": "etcdserverpb.Cluster/MemberAdd",
    "/cluster/member/remove": "etcdserverpb.Cluster/MemberRemove",
    "/cluster/member/update": "etcdserverpb.Cluster/MemberUpdate",
    "/cluster/member/list": "etcdserverpb.Cluster/MemberList",
    "/cluster/member/promote": "etcdserverpb.Cluster/MemberPromote",
    "/lock/lock": "v3lockpb.Lock/Lock",
    "/lock/unlock": "v3lockpb.Lock/Unlock",
    "/election/campaign": "v3electionpb.Election/Campaign",
    "/election/proclaim": "v3electionpb.Election/Proclaim",
    "/election/leader": "v3electionpb.Election/Leader",
    "/election/observe": "v3electionpb.Election/Observe",
    "/election/resign": "v3electionpb.Election/Resign",
}


# grpc-gateway v1's runtime.HTTPStatusFromCode.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 408,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 412,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

INTERNAL_ERROR = "etcdserver: internal error"
BODY_LIMIT_FACTOR = 4  # JSON (base64, escapes) may be this much larger than the message it encodes
DISCONNECT_POLL_SECONDS = 0.5
_JSON_HEADERS = {"Content-Type": "application/json"}
_RESULT_HEADERS = {**_JSON_HEADERS, "Grpc-Metadata-Content-Type": "application/grpc"}
_JSON_WS = " \t\r\n"
_GO_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"})


class BadRequest(Exception):
    """The body is not a request message: InvalidArgument, nothing applied."""


class _ClientGone(Exception):
    pass


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise BadRequest(f"duplicate key {key!r} in request JSON")
        obj[key] = value
    return obj


def _reject_constant(name: str) -> Any:
    raise BadRequest(f"{name} is not a JSON value")


_DECODER = json.JSONDecoder(object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)


def _http_status(code: grpc.StatusCode) -> int:
    return HTTP_STATUS.get(code, 500)


def dumps(obj: Any) -> bytes:
    """Compact JSON as Go's encoder writes it: UTF-8, with <, >, & and line separators escaped."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).translate(_GO_ESCAPES).encode()


def message_json(msg: Message) -> dict[str, Any]:
    return json_format.MessageToDict(msg, preserving_proto_field_name=True)


def error_body(code: grpc.StatusCode, message: str) -> bytes:
    return dumps({"error": message, "message": message, "code": code.value[0]})


def stream_error_chunk(code: grpc.StatusCode, message: str) -> bytes:
    status = _http_status(code)
    return dumps(
        {
            "error": {
                "grpc_code": code.value[0],
                "http_code": status,
                "message": message,
                "http_status": HTTPStatus(status).phrase,
            }
        }
    )


def _as_store_error(e: Exception) -> StoreError:
    if isinstance(e, StoreError):
        return e
    if isinstance(e, BadRequest):
        return StoreError(grpc.StatusCode.INVALID_ARGUMENT, str(e))
    log.error("gateway call failed", exc_info=e)
    return StoreError(grpc.StatusCode.UNKNOWN, INTERNAL_ERROR)


def _error_response(e: Exception) -> web.Response:
    err = _as_store_error(e)
    return web.Response(status=_http_status(err.code), body=error_body(err.code, err.message), headers=_JSON_HEADERS)


def too_large(size: int, limit: int) -> StoreError:
    return StoreError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"grpc: received message larger than max ({size} vs. {limit})")


def parse_request(obj: Any, request_type: type[M], limit: int) -> M:
    """One decoded JSON value -> the request message, or BadRequest / too large; never half a message."""
    if obj is None:
        obj = {}
    if not isinstance(obj, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean"}.get(type(obj), "a number")
        raise BadRequest(f"request must be a JSON object, not {kind}")
    msg = request_type()
    try:
        json_format.ParseDict(obj, msg, ignore_unknown_fields=False)
    except json_format.ParseError as e:
        raise BadRequest(str(e).split("\n", 1)[0]) from None  # (drops a list of every field name)
    except (ValueError, TypeError, RecursionError) as e:
        raise BadRequest(f"cannot parse request: {e}") from None
    size = msg.ByteSize()
    if size > limit:
        raise too_large(size, limit)
    return msg


class _Body:
    """The request body, read as it arrives: whole (unary calls) or one JSON value at a time (streams)."""

    def __init__(self, request: web.Request, limit: int) -> None:
        self._content = request.content
        self._declared = request.content_length
        self._limit = limit  # bytes of JSON for one request
        self._text = ""  # buffered text, starting at the next value
        self._pieces: list[str] = []  # text received since, joined only when needed
        self._buffered = 0
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._eof = False
        self._tried_at = -1  # buffer length at the last failed decode

    def _too_large(self, size: int) -> StoreError:
        return too_large(self._declared or size, self._limit // BODY_LIMIT_FACTOR)

    async def read_all(self) -> str:
        if self._declared is not None and self._declared > self._limit:
            raise self._too_large(self._declared)
        chunks: list[bytes] = []
        size = 0
        while chunk := await self._content.readany():
            size += len(chunk)
            if size > self._limit:
                raise self._too_large(size)
            chunks.append(chunk)
        try:
            return b"".join(chunks).decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadRequest(f"request body is not UTF-8: {e}") from None

    async def _fill(self) -> str:
        chunk = await self._content.readany()
        try:
            if not chunk:
                self._eof = True
                new = self._utf8.decode(b"", final=True)
            else:
                new = self._utf8.decode(chunk)
        except UnicodeDecodeError as e:
            raise BadRequest(f"request body is not UTF-8: {e}") from None
        self._pieces.append(new)
        self._buffered += len(new)
        if self._buffered > self._limit:
            raise self._too_large(self._buffered)
        return new

    def _join(self) -> str:
        if self._pieces:
            self._text += "".join(self._pieces)
            self._pieces.clear()
        self._text = self._text.lstrip(_JSON_WS)
        self._buffered = len(self._text)
        return self._text

    async def next_value(self) -> tuple[bool, Any]:
        """(True, value) for the next JSON value; (False, None) once the body has ended."""
        new = self._text
        while True:
            # Decode only when a value may just have been completed: at the end of the body, or
            # when a '}' arrived and either the client paused right after it or the buffer has
            # doubled since the last try (so a long value is not re-parsed for every chunk).
            if (
                self._eof
                or not self._text.strip(_JSON_WS)
                or self._text.startswith("n")
                or ("}" in new and (new.rstrip(_JSON_WS).endswith("}") or self._buffered >= 2 * self._tried_at))
            ):
                text = self._join()
                if not text and self._eof:
                    return False, None
                if text and text[0] not in "{n":  # only an object (or null) can be a request
                    raise BadRequest(f"malformed request: expected a JSON object, found {text[:20]!r}")
                if text:
                    try:
                        value, end = _DECODER.raw_decode(text)
                    except json.JSONDecodeError as e:
                        if self._eof:
                            raise BadRequest(f"malformed JSON: {e}") from None
                        self._tried_at = len(text)
                    except (ValueError, RecursionError) as e:
                        raise BadRequest(f"malformed JSON: {e}") from None
                    else:
                        self._text = text[end:]
                        self._buffered = len(self._text)
                        self._tried_at = -1
                        return True, value
            new = await self._fill()


def read_single(text: str) -> Any:
    """The one JSON value of a unary request body (empty body: null)."""
    text = text.strip(_JSON_WS)
    if not text:
        return None
    try:
        value, end = _DECODER.raw_decode(text)
    except (ValueError, RecursionError) as e:
        raise BadRequest(f"malformed JSON: {e}") from None
    if end != len(text):
        raise BadRequest(f"unexpected data after the request object at offset {end}")
    return value


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _until_gone(request: web.Request, work: Awaitable[T]) -> T:
    """Await work; if the client disconnects first, cancel it and raise _ClientGone."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_SECONDS)
            if done:
                return task.result()
            if _client_gone(request):
                raise _ClientGone
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class _Gateway:
    """The HTTP handlers, one per call shape, each serving every route of that shape."""

    def __init__(self, store: Store) -> None:
        self.limit = store.config.max_request_bytes + GRPC_OVERHEAD_BYTES
        self.methods = {f"{m.service}/{m.name}": m for m in methods(store)}

    def handler(self, name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        method = self.methods[name]
        if method.kind == UNARY:
            return functools.partial(self.unary, method)
        if method.kind == SERVER_STREAM:
            return functools.partial(self.server_stream, method)
        assert method.kind == BIDI
        return functools.partial(self.bidi_stream, method)

    async def _single(self, request: web.Request, method: Method) -> Message:
        text = await _Body(request, self.limit * BODY_LIMIT_FACTOR).read_all()
        return parse_request(read_single(text), method.request, self.limit)

    async def unary(self, method: Method, request: web.Request) -> web.StreamResponse:
        try:
            msg = await self._single(request, method)
            resp = await _until_gone(request, method.call(msg))
        except _ClientGone:
            return web.Response(status=499)  # nobody is listening
        except Exception as e:
            return _error_response(e)
        return web.Response(body=dumps(message_json(resp)), headers=_RESULT_HEADERS)

    async def server_stream(self, method: Method, request: web.Request) -> web.StreamResponse:
        try:
            msg = await self._single(request, method)
        except Exception as e:
            return _error_response(e)
        return await self._stream(request, lambda: method.call(msg), None)

    async def bidi_stream(self, method: Method, request: web.Request) -> web.StreamResponse:
        body = _Body(request, self.limit * BODY_LIMIT_FACTOR)
        failed: list[Exception] = []  # the error that ends the stream, once there is one
        # The first request decides between a JSON error answer and a stream, as in grpc-gateway.
        try:
            more, value = await body.next_value()
            first = parse_request(value, method.request, self.limit) if more else None
        except BadRequest as e:
            return _error_response(e)
        except StoreError as e:
            first = None
            failed.append(e)

        async def requests() -> AsyncIterator[Message]:
            if failed:
                raise failed[0]  # ends the call: a watch outlives a clean end of requests, not an error
            if first is not None:
                yield first
            while not failed:
                try:
                    more, value = await body.next_value()
                    if not more:
                        break
                    msg = parse_request(value, method.request, self.limit)
                except Exception as e:  # the stream ends here, with this error as its last word
                    failed.append(e)
                    raise
                yield msg
            # The end of the body is the client's half-close; a watch outlives it by itself.

        return await self._stream(request, lambda: method.call(requests()), failed)

    async def _stream(
        self,
        request: web.Request,
        start: Callable[[], AsyncIterator[Message]],
        failed: list[Exception] | None,
    ) -> web.StreamResponse:
        """Run a streaming call, writing each response as a line until it ends or the client leaves."""
        out: asyncio.Queue[Message | Exception | None] = asyncio.Queue()

        async def pump() -> None:
            responses = start()
            try:
                async for resp in responses:
                    out.put_nowait(resp)
                if failed:
                    out.put_nowait(failed[0])
            except asyncio.CancelledError:
                raise
            except Exception as e:
                out.put_nowait(e)
            finally:
                await aclose(responses)
            out.put_nowait(None)

        response: web.StreamResponse | None = None

        async def send(chunk: bytes, status: int) -> None:
            nonlocal response
            if response is None:
                response = web.StreamResponse(status=status, headers=_JSON_HEADERS)
                if status == 200:
                    response.headers.update(_RESULT_HEADERS)
                await response.prepare(request)
            await response.write(chunk)

        producer = asyncio.get_running_loop().create_task(pump())
        try:
            while True:
                item = await _until_gone(request, out.get())
                if item is None:
                    break
                if isinstance(item, Exception):
                    err = _as_store_error(item)
                    await send(stream_error_chunk(err.code, err.message), _http_status(err.code))
                    break
                await send(dumps({"result": message_json(item)}) + b"\n", 200)
            if response is None:
                await send(b"", 200)
            assert response is not None
            await response.write_eof()
            return response
        except (_ClientGone, ConnectionError):
            return response if response is not None else web.Response(status=499)
        finally:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer


async def aclose(iterator: AsyncIterator[Any]) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()


def build_app(store: Store, *, with_gateway: bool = True) -> web.Application:
    """/health, /version and /metrics; plus the /v3 gateway unless this is a metrics-only listener."""

    async def health(_: web.Request) -> web.Response:
        # etcd 3.4's answer, byte for byte: JSON in a text/plain response.
        ok = not store.sm.alarms and store.failed is None
        body = '{"health":"true"}' if ok else '{"health":"false"}'
        return web.Response(text=body, content_type="text/plain", status=200 if ok else 503)

    async def version(_: web.Request) -> web.Response:
        return web.Response(
            text=json.dumps({"etcdserver": ETCD_VERSION, "etcdcluster": ETCD_VERSION[:-1] + "0"}),
            content_type="application/json",
        )

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=metrics_text(store), content_type="text/plain", charset="utf-8")

    app = web.Application(client_max_size=2 * 1024 * 1024)
    app.router.add_get("/health", health)
    app.router.add_get("/version", version)
    app.router.add_get("/metrics", metrics)
    if not with_gateway:
        return app
    gateway = _Gateway(store)
    for path, name in HTTP_ROUTES.items():
        handler = gateway.handler(name)
        for prefix in API_PREFIXES:
            app.router.add_post(prefix + path, handler)
    return app
