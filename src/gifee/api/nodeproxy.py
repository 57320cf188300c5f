"""pods/log and pods/exec: the API server proxies them to the node agent that runs
the pod (node.status.addresses InternalIP + daemonEndpoints.kubeletEndpoint.Port),
as kube-apiserver proxies them to the kubelet.

- log: GET streamed through (container, follow, tailLines, timestamps, previous,
  limitBytes); the container is checked here, with the API's messages.
- exec: kubectl 1.30+ speaks WebSocket (v5.channel.k8s.io, v4.channel.k8s.io);
  the server accepts the client's WebSocket and relays every message to and from
  a WebSocket to the agent. kubectl up to 1.29 speaks SPDY/3.1 (spdy.py): the
  server answers the upgrade, maps kubectl's streams to channels and relays them
  to the same WebSocket endpoint of the agent (v4.channel.k8s.io on the SPDY side;
  v5 towards the agent, whose close message carries stdin's end).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from gifee.api import errors, resources
from gifee.api.httpapi import HttpRequest, Stream, Write
from gifee.api.storage import Storage

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
PASSED_LOG = ("follow", "tailLines", "timestamps", "previous", "limitBytes", "sinceSeconds")


async def _target(storage: Storage, namespace: str, name: str, query: Any) -> tuple[str, str, str]:
    """(node URL base, container, pod name) for a pod's subresource; ApiError otherwise."""
    pods, nodes = resources.by_plural("pods"), resources.by_plural("nodes")
    assert pods is not None and nodes is not None
    pod = await storage.get(pods, namespace, name)
    containers = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
    container = query.get("container") or (containers[0] if len(containers) == 1 else "")
    if not container:
        raise errors.bad_request(f"a container name must be specified for pod {name}, choose one of: {containers}")
    if container not in containers:
        raise errors.bad_request(f"container {container} is not valid for pod {name}")
    node_name = (pod.get("spec") or {}).get("nodeName")
    if not node_name:
        raise errors.bad_request(f'container "{container}" in pod "{name}" is waiting to start: not scheduled')
    node = await storage.get_or_none(nodes, "", node_name)
    status = (node or {}).get("status") or {}
    port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
    addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
    host = addresses.get("InternalIP") or addresses.get("Hostname")
    if not port or not host:
        raise errors.bad_request(f"node {node_name} serves no logs or exec (no address or daemon endpoint)")
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}", container, name


async def serve_log(storage: Storage, request: HttpRequest, namespace: str, name: str) -> Stream:
    base, container, _ = await _target(storage, namespace, name, request.query)
    params = {k: request.query[k] for k in PASSED_LOG if k in request.query}
    url = f"{base}/containerLogs/{namespace}/{name}/{container}"
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=5))
    try:
        try:
            upstream = await session.get(url, params=params)
        except aiohttp.ClientError as e:
            raise errors.ApiError(502, "BadGateway", f"cannot reach the node's agent: {e}", {}) from None
        if upstream.status >= 400:
            async with upstream:
                text = (await upstream.text()).strip()
            raise errors.bad_request(text or f"the node answered {upstream.status}")
    except BaseException:
        await session.close()
        raise

    async def produce(write: Write) -> None:
        try:
            with contextlib.suppress(ConnectionResetError, aiohttp.ClientError):
                async for chunk in upstream.content.iter_any():
                    await write(chunk)
        finally:
            upstream.release()
            await session.close()

    return Stream(produce, content_type="text/plain")


async def serve_exec(storage: Storage, request: web.BaseRequest, namespace: str, name: str) -> web.StreamResponse:
    upgrade = request.headers.get("Upgrade", "").lower()
    if upgrade.startswith("spdy/3"):
        return await serve_exec_spdy(storage, request, namespace, name)
    if upgrade != "websocket":
        raise errors.bad_request("exec needs a WebSocket (v5.channel.k8s.io or v4.channel.k8s.io) or SPDY/3.1 "
                                 "upgrade")
    base, container, _ = await _target(storage, namespace, name, request.query)
    params = [(k, v) for k, v in request.query.items() if k != "container"] + [("container", container)]
    client_ws = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=0)
    await client_ws.prepare(request)
    protocol = client_ws.ws_protocol or PROTOCOLS[1]
    async with aiohttp.ClientSession() as session:
        try:
            node_ws = await session.ws_connect(f"{base}/exec/{namespace}/{name}/{container}", params=params,
                                               protocols=(protocol,), max_msg_size=0)
        except aiohttp.ClientError as e:
            await client_ws.send_bytes(b"\x03" + (f'{{"metadata":{{}},"status":"Failure","message":'
                                                  f'"cannot reach the node: {type(e).__name__}"}}').encode())
            await client_ws.close()
            return client_ws

        async def down() -> None:
            async for msg in node_ws:
                if msg.type == WSMsgType.BINARY:
                    await client_ws.send_bytes(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    await client_ws.send_str(msg.data)

        async def up() -> None:
            async for msg in client_ws:
                if msg.type == WSMsgType.BINARY:
                    await node_ws.send_bytes(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    await node_ws.send_str(msg.data)

        upward = asyncio.create_task(up())
        try:
            await down()
        finally:
            upward.cancel()
            with contextlib.suppress(Exception):
                await node_ws.close()
            await client_ws.close()
    return client_ws


class _RawParser:
    """Takes the upgraded connection's bytes from aiohttp (its set_parser hook)."""

    def __init__(self, queue: asyncio.Queue[bytes]) -> None:
        self.queue = queue

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if data:
            self.queue.put_nowait(bytes(data))
        return False, b""

    def feed_eof(self) -> None:
        self.queue.put_nowait(b"")


def _json_objects(buffer: bytearray) -> list[bytes]:
    """Complete JSON objects from the front of `buffer` (resize messages), removed from it."""
    import json

    out = []
    decoder = json.JSONDecoder()
    text = buffer.decode(errors="replace")
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        try:
            _, end = decoder.raw_decode(text, pos)
        except ValueError:
            break
        out.append(text[pos:end].encode())
        pos = end
    del buffer[:len(text[:pos].encode())]
    return out


async def serve_exec_spdy(storage: Storage, request: web.BaseRequest, namespace: str, name: str) -> web.StreamResponse:
    from gifee.api import spdy

    offered = [v.strip() for h in request.headers.getall("X-Stream-Protocol-Version", []) for v in h.split(",")]
    if "v4.channel.k8s.io" not in offered:
        raise errors.ApiError(403, "Forbidden", f"no supported stream protocol among {offered} "
                              "(this server speaks v4.channel.k8s.io over SPDY)", {})
    base, container, _ = await _target(storage, namespace, name, request.query)
    params = [(k, v) for k, v in request.query.items() if k != "container"] + [("container", container)]
    q = request.query

    def flag(key: str) -> bool:
        return q.get(key) in ("true", "1")

    want = spdy.roles(flag("stdin"), flag("stdout"), flag("stderr"), flag("tty"))
    resp = web.StreamResponse(status=101, headers={"Connection": "Upgrade", "Upgrade": "SPDY/3.1",
                                                   "X-Stream-Protocol-Version": "v4.channel.k8s.io"})
    resp.force_close()
    await resp.prepare(request)
    transport = request.transport
    incoming: asyncio.Queue[bytes] = asyncio.Queue()
    request.protocol.set_parser(_RawParser(incoming))  # type: ignore[arg-type]
    request.protocol.keep_alive(False)
    reader, compressor = spdy.FrameReader(), spdy.HeaderCompressor()

    def write(data: bytes) -> None:
        if transport is not None and not transport.is_closing():
            transport.write(data)

    streams: dict[str, int] = {}
    early: list[spdy.Frame] = []
    try:
        while len(streams) < len(want):
            data = await asyncio.wait_for(incoming.get(), 30)
            if not data:
                return resp
            for f in reader.feed(data):
                if f.control and f.kind == spdy.SYN_STREAM and len(streams) < len(want):
                    streams[want[len(streams)]] = f.stream
                    write(spdy.syn_reply(compressor, f.stream))
                elif f.control and f.kind == spdy.PING:
                    write(spdy.ping_reply(f))
                elif not f.control:
                    early.append(f)
    except TimeoutError:
        return resp
    roles = {v: k for k, v in streams.items()}

    def finish(status: bytes | None = None) -> None:
        if status is not None and "error" in streams:
            write(spdy.data_frame(streams["error"], status))
        for role in ("stdout", "stderr", "error"):
            if role in streams:
                write(spdy.data_frame(streams[role], b"", fin=True))
        write(spdy.goaway(max(streams.values(), default=0)))

    async with aiohttp.ClientSession() as session:
        try:
            node_ws = await session.ws_connect(f"{base}/exec/{namespace}/{name}/{container}", params=params,
                                               protocols=("v5.channel.k8s.io",), max_msg_size=0)
        except aiohttp.ClientError as e:
            finish(f'{{"metadata":{{}},"status":"Failure","message":"cannot reach the node: '
                   f'{type(e).__name__}"}}'.encode())
            return resp
        resize = bytearray()

        async def handle(f: spdy.Frame) -> None:
            if f.control:
                if f.kind == spdy.PING:
                    write(spdy.ping_reply(f))
                return
            role = roles.get(f.stream)
            if role == "stdin":
                if f.payload:
                    await node_ws.send_bytes(b"\x00" + f.payload)
                if f.flags & spdy.FLAG_FIN:
                    await node_ws.send_bytes(b"\xff\x00")
            elif role == "resize":
                resize.extend(f.payload)
                for obj in _json_objects(resize):
                    await node_ws.send_bytes(b"\x04" + obj)

        async def up() -> None:
            for f in early:
                await handle(f)
            while data := await incoming.get():
                for f in reader.feed(data):
                    await handle(f)
            await node_ws.close()  # kubectl went away

        upward = asyncio.create_task(up())
        channel_roles = {1: "stdout", 2: "stderr", 3: "error"}
        try:
            async for msg in node_ws:
                if msg.type == WSMsgType.BINARY and len(msg.data) > 1:
                    role = channel_roles.get(msg.data[0], "")
                    if role in streams:
                        write(spdy.data_frame(streams[role], msg.data[1:]))
        finally:
            upward.cancel()
            with contextlib.suppress(Exception):
                await node_ws.close()
            finish()
    return resp
