"""pods/log and pods/exec: the API server proxies them to the node agent that runs
the pod (node.status.addresses InternalIP + daemonEndpoints.kubeletEndpoint.Port),
as kube-apiserver proxies them to the kubelet.

- log: GET streamed through (container, follow, tailLines, timestamps, previous,
  limitBytes); the container is checked here, with the API's messages.
- exec: kubectl 1.30+ speaks WebSocket (v5.channel.k8s.io, v4.channel.k8s.io);
  the server accepts the client's WebSocket and relays every message to and from
  a WebSocket to the agent. SPDY (kubectl up to 1.29) is refused with 400 (kubectl
  1.30+ falls back to SPDY only when the WebSocket upgrade fails).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from gifee.api import errors, resources
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


async def serve_log(storage: Storage, request: web.Request, namespace: str, name: str) -> web.StreamResponse:
    base, container, _ = await _target(storage, namespace, name, request.query)
    params = {k: request.query[k] for k in PASSED_LOG if k in request.query}
    url = f"{base}/containerLogs/{namespace}/{name}/{container}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=5)) as session:
        try:
            upstream = await session.get(url, params=params)
        except aiohttp.ClientError as e:
            raise errors.ApiError(502, "BadGateway", f"cannot reach the node's agent: {e}", {}) from None
        async with upstream:
            if upstream.status >= 400:
                text = (await upstream.text()).strip()
                raise errors.bad_request(text or f"the node answered {upstream.status}")
            resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
            await resp.prepare(request)
            with contextlib.suppress(ConnectionResetError, aiohttp.ClientError):
                async for chunk in upstream.content.iter_any():
                    await resp.write(chunk)
            with contextlib.suppress(ConnectionResetError):
                await resp.write_eof()
            return resp


async def serve_exec(storage: Storage, request: web.Request, namespace: str, name: str) -> web.StreamResponse:
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise errors.bad_request("exec needs a WebSocket upgrade (v5.channel.k8s.io or v4.channel.k8s.io); "
                                 "SPDY is not served")
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
