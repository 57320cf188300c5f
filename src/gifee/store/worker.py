"""A gRPC worker process of `gifee store`: serves gRPC's wire protocol, forwards each call to the core.

Started by the core with the addresses of its Unix sockets. It learns the
method table from the core's HELLO frame, listens on the client URLs (sharing
the port with its sibling workers through SO_REUSEPORT) and routes each
connection by its first bytes (`clientport.py`): a gRPC connection is served
here, on the event loop (`GrpcConnection`: HTTP/2 and gRPC's framing by
`grpcwire.py`), unless the core has offered to serve one itself (CORE_FREE): then
that connection goes, unread, to the core, as every HTTP/1.x connection does. With
`--grpc-only` (the store's HTTP side has URLs of its own) it listens on the
client URLs with nothing to route. Each call's request bytes go to the core
as frames (see `ipc.py`) undecoded, and the core's answer bytes go back to the
client as they are. It exits as soon as the core's socket closes, so a killed
core never leaves workers answering for it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
import sys
from typing import cast

from gifee import eventloop
from gifee.store import clientport, grpcport, ipc
from gifee.store.handlers import receive_limit


class CoreLink(grpcport.Link, asyncio.BufferedProtocol):
    """The worker's connection to the core: calls as IPC frames over a Unix socket."""

    def __init__(self) -> None:
        super().__init__()
        self._reader = ipc.FrameReader()
        self._writer: ipc.FrameWriter | None = None
        self.table: asyncio.Future[list[list[str]]] = self._loop.create_future()
        self.core_free = False  # the core's last word: it would serve the next gRPC connection itself
        self.closed: asyncio.Future[None] = self._loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._writer = ipc.FrameWriter(cast(asyncio.Transport, transport).write, self._loop)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._reader.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        route = self.route
        for kind, call_id, payload in self._reader.feed_read(nbytes):
            if kind == ipc.HELLO:
                if not self.table.done():
                    self.table.set_result(json.loads(payload))
                continue
            if kind == ipc.CORE_FREE:
                self.core_free = payload == b"\x01"
                continue
            route(kind, call_id, payload)
        self.flush_dirty()

    def send(self, kind: int, call_id: int, payload: bytes = b"") -> None:
        assert self._writer is not None
        self._writer.send(kind, call_id, payload)

    def has_queued(self) -> bool:
        return self._writer is not None and self._writer.pending


def _unix_address(address: str) -> str:
    # "@name" is a Linux abstract socket; a NUL byte cannot travel in argv.
    return "\0" + address[1:] if address.startswith("@") else address


async def serve(
    core_address: str,
    handoff_address: str,
    urls: list[str],
    max_request_bytes: int,
    cert: str,
    key: str,
    grpc_only: bool = False,
) -> None:
    _, link = await eventloop.connect_unix(CoreLink, _unix_address(core_address))
    table = await link.table
    on_http = None
    hand_over = None
    if not grpc_only:
        handoff = clientport.HandoffSender(_unix_address(handoff_address))
        await handoff.connect()
        on_http = handoff.send

        def hand_over(sock: socket.socket, tls: bool) -> bool:
            if not link.core_free or not handoff.can_send():
                return False  # this worker serves it
            link.core_free = False  # until the core says so again: it takes one at a time
            handoff.send(sock, tls, clientport.GRPC)
            return True

    # etcd's limit and grpc-go's text (as the core's check_size), refused as soon as a message's length is read.
    port = grpcport.GrpcPort(
        urls, link, table, receive_limit(max_request_bytes), cert, key, on_http, hand_over
    )
    await port.start()
    link.send(ipc.HELLO, 0)  # tells the core this worker listens
    await link.closed
    # The core is gone: leave at once, without finishing calls on its behalf.
    os._exit(0)


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gifee-store-worker")
    p.add_argument("--core", required=True)
    p.add_argument("--handoff", required=True)
    p.add_argument("--listen", required=True)
    p.add_argument("--max-request-bytes", type=int, required=True)
    p.add_argument("--cert-file", default="")
    p.add_argument("--key-file", default="")
    p.add_argument("--grpc-only", action="store_true", help="the client URLs serve gRPC alone (no HTTP)")
    args = p.parse_args(argv)
    _die_with_parent()
    clientport.raise_descriptor_limit()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the core decides when workers stop
    try:
        eventloop.run(
            serve(
                args.core,
                args.handoff,
                args.listen.split(","),
                args.max_request_bytes,
                args.cert_file,
                args.key_file,
                args.grpc_only,
            )
        )
    except Exception as e:
        print(f"gifee store worker: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
