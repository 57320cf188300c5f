"""The agent's HTTP endpoint (the kubelet's port 10250 role), which the API server
proxies pods/log and pods/exec to. No authentication: bind it to the node's
address on a trusted network, or to loopback.

    GET /healthz
    GET /pods                                       the pods bound here (JSON list)
    GET /containerLogs/{ns}/{pod}/{container}       ?follow&tailLines&timestamps&previous&limitBytes
    GET /exec/{ns}/{pod}/{container}?command=...    WebSocket, v5/v4.channel.k8s.io

Exec channels (first byte of each binary message): 0 stdin, 1 stdout, 2 stderr,
3 error (a Status, sent last), 4 resize (ignored); v5 adds 255 + channel to close
a stream (stdin's EOF). With tty=true the command gets a terminal of its own
(stdout and stderr both on channel 1) that resize messages ({"Width", "Height"}) size.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

if TYPE_CHECKING:
    from gifee.agent.agent import Agent

EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")


def exit_status(code: int, command: list[str]) -> dict[str, Any]:
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {"metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: error executing command {command}, "
                       f"exit code {code}",
            "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


def tail(data: bytes, lines: int) -> bytes:
    if lines < 0:
        return data
    if lines == 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


class AgentServer:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/pods", self.pods)
        app.router.add_get("/containerLogs/{ns}/{pod}/{container}", self.logs)
        app.router.add_route("*", "/exec/{ns}/{pod}/{container}", self.exec)
        self.runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self.runner.setup()
        await web.TCPSite(self.runner, host, port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def pods(self, request: web.Request) -> web.Response:
        return web.json_response({"kind": "PodList", "apiVersion": "v1", "items": list(self.agent.desired.values())})

    def attempt(self, request: web.Request, previous: bool = False) -> str:
        ns, name, container = (request.match_info[k] for k in ("ns", "pod", "container"))
        _, rec = self.agent.by_name(ns, name)
        if rec is None or container not in rec.containers:
            raise web.HTTPNotFound(text=f'container "{container}" in pod "{name}" is not known on this node')
        crec = rec.containers[container]
        uuid = crec.previous if previous else crec.uuid
        if not uuid:
            what = "previous terminated container" if previous else "container"
            raise web.HTTPBadRequest(text=f'{what} "{container}" in pod "{name}" not found' if previous else
                                     f'container "{container}" in pod "{name}" is waiting to start: '
                                     f'{crec.error_reason or "ContainerCreating"}')
        return uuid

    async def logs(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        previous = q.get("previous") in ("true", "1")
        uuid = self.attempt(request, previous)
        path = self.agent.runtime.log_path(uuid)
        if path is None or not path.exists():
            raise web.HTTPNotFound(text=f"no log for attempt {uuid}")
        follow = q.get("follow") in ("true", "1") and not previous
        stamps = q.get("timestamps") in ("true", "1")
        limit = int(q["limitBytes"]) if q.get("limitBytes", "").isdigit() else -1
        lines = int(q["tailLines"]) if q.get("tailLines", "").lstrip("-").isdigit() else -1
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        sent = 0

        async def send(chunk: bytes) -> bool:
            nonlocal sent
            if stamps and chunk:
                # the runtime's log keeps no times: lines are stamped when they are served
                t = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z ", time.gmtime()).encode()
                chunk = b"".join(t + line for line in chunk.splitlines(keepends=True))
            if limit >= 0:
                chunk = chunk[:max(0, limit - sent)]
            sent += len(chunk)
            if chunk:
                await resp.write(chunk)
            return limit < 0 or sent < limit

        with open(path, "rb") as f:
            data = f.read()
            pending = b""
            if follow and data and not data.endswith(b"\n"):
                cut = data.rfind(b"\n") + 1
                data, pending = data[:cut], data[cut:]
            more = await send(tail(data, lines))
            while follow and more:
                chunk = f.read(65536)
                if chunk:
                    pending += chunk
                    cut = pending.rfind(b"\n") + 1
                    if cut:
                        more = await send(pending[:cut])
                        pending = pending[cut:]
                    continue
                if not self.agent.runtime.is_running(uuid):
                    rest = pending + f.read()
                    if rest:
                        await send(rest)
                    break
                await asyncio.sleep(0.2)
        with contextlib.suppress(ConnectionResetError):
            await resp.write_eof()
        return resp

    async def exec(self, request: web.Request) -> web.StreamResponse:
        uuid = self.attempt(request)
        command = request.query.getall("command", [])
        if not command:
            raise web.HTTPBadRequest(text="you must specify at least one command for the container")
        use_stdin = request.query.get("stdin") in ("true", "1")
        ws = web.WebSocketResponse(protocols=EXEC_PROTOCOLS, max_msg_size=0)
        await ws.prepare(request)
        v5 = ws.ws_protocol == "v5.channel.k8s.io"
        if request.query.get("tty") in ("true", "1"):
            return await self.exec_tty(ws, uuid, list(command), v5)
        try:
            proc = await self.agent.spawn_in(uuid, list(command), stdin=use_stdin, capture=True)
        except OSError as e:
            await ws.send_bytes(b"\x03" + json.dumps({"metadata": {}, "status": "Failure", "message": str(e),
                                                      "reason": "InternalError"}).encode())
            await ws.close()
            return ws
        await ws.send_bytes(b"\x01")  # an empty stdout message: the stream is set up

        async def pump(stream: asyncio.StreamReader | None, channel: int) -> None:
            if stream is None:
                return
            while True:
                chunk = await stream.read(32768)
                if not chunk:
                    return
                await ws.send_bytes(bytes([channel]) + chunk)

        async def feed() -> None:
            async for msg in ws:
                if msg.type != WSMsgType.BINARY or not msg.data:
                    continue
                channel, payload = msg.data[0], msg.data[1:]
                if channel == 0 and proc.stdin is not None:
                    proc.stdin.write(payload)
                    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                        await proc.stdin.drain()
                elif channel == 255 and v5 and payload[:1] == b"\x00" and proc.stdin is not None:
                    proc.stdin.close()
            if proc.stdin is not None and not proc.stdin.is_closing():
                proc.stdin.close()
            with contextlib.suppress(ProcessLookupError):
                proc.kill()  # the client went away

        feeder = asyncio.create_task(feed())
        try:
            await asyncio.gather(pump(proc.stdout, 1), pump(proc.stderr, 2))
            code = await proc.wait()
            await ws.send_bytes(b"\x03" + json.dumps(exit_status(code, list(command))).encode())
        finally:
            feeder.cancel()
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await ws.close()
        return ws

    async def exec_tty(self, ws: web.WebSocketResponse, uuid: str, command: list[str], v5: bool) -> web.WebSocketResponse:
        import fcntl
        import struct
        import termios

        try:
            proc, master = await self.agent.spawn_tty(uuid, command)
        except OSError as e:
            await ws.send_bytes(b"\x03" + json.dumps({"metadata": {}, "status": "Failure", "message": str(e),
                                                      "reason": "InternalError"}).encode())
            await ws.close()
            return ws
        loop = asyncio.get_running_loop()
        output: asyncio.Queue[bytes] = asyncio.Queue()

        def readable() -> None:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every process holding the terminal is gone
                data = b""
            if not data:
                loop.remove_reader(master)
            output.put_nowait(data)

        loop.add_reader(master, readable)
        await ws.send_bytes(b"\x01")

        async def pump() -> None:
            while chunk := await output.get():
                await ws.send_bytes(b"\x01" + chunk)

        async def feed() -> None:
            async for msg in ws:
                if msg.type != WSMsgType.BINARY or not msg.data:
                    continue
                channel, payload = msg.data[0], msg.data[1:]
                if channel == 0:
                    with contextlib.suppress(OSError):
                        os.write(master, payload)
                elif channel == 4:
                    with contextlib.suppress(ValueError, OSError, KeyError, TypeError):
                        size = json.loads(payload)
                        fcntl.ioctl(master, termios.TIOCSWINSZ,
                                    struct.pack("HHHH", int(size["Height"]), int(size["Width"]), 0, 0))
                elif channel == 255 and v5 and payload[:1] == b"\x00":
                    with contextlib.suppress(OSError):
                        os.write(master, b"\x04")  # end of input, as a terminal says it
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

        feeder = asyncio.create_task(feed())
        try:
            await pump()
            code = await proc.wait()
            await ws.send_bytes(b"\x03" + json.dumps(exit_status(code, command)).encode())
        finally:
            feeder.cancel()
            loop.remove_reader(master)
            os.close(master)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await ws.close()
        return ws
