"""`gifee dns`: the cluster DNS server (asyncio, UDP and TCP).

A Mirror of services and endpoints rebuilds the answer index (answer.build) on
every change, debounced; each query is answered from the current index
(answer.answer), so no query waits on the API server. Queries outside the zone
go to --upstream when one is given (UDP, 2 s), else REFUSED. UDP answers that do
not fit the client's size (512, or its EDNS payload) are truncated (TC) and
the client retries over TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from dataclasses import dataclass
from typing import cast

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode

from gifee.dns import answer
from gifee.proxy.mirror import Debouncer, Mirror
from gifee.signals import stop_on_signals

log = logging.getLogger("gifee.dns")


@dataclass
class DnsConfig:
    server: str
    host: str = "0.0.0.0"
    port: int = 53
    domain: str = "cluster.local"
    upstream: str = ""  # "" or "none": no forwarding; "IP" or "IP:PORT"


class DnsServer:
    def __init__(self, config: DnsConfig) -> None:
        self.config = config
        self.index = answer.build([], [], config.domain)
        self.debouncer = Debouncer(0.01)
        self.mirror = Mirror(config.server, ["services", "endpoints"], self.debouncer.poke)
        self.queries = 0
        self.rebuilds = 0

    def rebuild(self) -> None:
        self.index = answer.build(self.mirror.items("services"), self.mirror.items("endpoints"), self.config.domain)
        self.rebuilds += 1

    async def respond(self, wire: bytes, max_size: int | None) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            if len(wire) >= 2:  # FORMERR with the client's id
                return wire[:2] + b"\x81\x01" + b"\x00" * 8
            return None
        self.queries += 1
        if query.flags & dns.flags.QR:
            return None
        response = answer.answer(query, self.index)
        if response.rcode() == dns.rcode.REFUSED and answer.in_zone(query, self.index) is False \
                and self.config.upstream not in ("", "none"):
            forwarded = await self._forward(query)
            if forwarded is not None:
                return forwarded
        size = max_size
        if size is not None:
            size = max(512, query.payload) if query.edns >= 0 else 512
        try:
            return response.to_wire(max_size=size or 65535)
        except dns.exception.TooBig:
            response.answer.clear()
            response.additional.clear()
            response.authority.clear()
            response.flags |= dns.flags.TC
            return response.to_wire()

    async def _forward(self, query: dns.message.Message) -> bytes | None:
        host, _, port = self.config.upstream.partition(":")
        try:
            resp = await dns.asyncquery.udp(query, host, timeout=2.0, port=int(port or 53))
            return resp.to_wire()
        except (dns.exception.DNSException, OSError):
            return None

    async def serve(self, stop: asyncio.Event, started: asyncio.Event | None = None) -> None:
        loop = asyncio.get_running_loop()
        server = self

        class Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = cast(asyncio.DatagramTransport, transport)

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                task = asyncio.ensure_future(server.respond(data, 512))
                task.add_done_callback(lambda t: self._send(t, addr))

            def _send(self, task: asyncio.Future[bytes | None], addr: tuple[str, int]) -> None:
                if not task.cancelled() and task.exception() is None and task.result():
                    self.transport.sendto(task.result() or b"", addr)

        async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await asyncio.wait_for(reader.readexactly(2), 10)
                    data = await reader.readexactly(struct.unpack("!H", head)[0])
                    out = await server.respond(data, None)
                    if out is None:
                        break
                    writer.write(struct.pack("!H", len(out)) + out)
                    await writer.drain()
            except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                pass
            finally:
                writer.close()

        transport, _ = await loop.create_datagram_endpoint(Udp, local_addr=(self.config.host, self.config.port))
        tcp_server = await asyncio.start_server(tcp, self.config.host, self.config.port)
        await self.mirror.start()
        log.info("serving %s on %s:%d (udp, tcp)", self.config.domain, self.config.host, self.config.port)
        try:
            with contextlib.suppress(TimeoutError):
                await self.mirror.wait_synced(30)
            self.rebuild()
            if started is not None:
                started.set()
            while not stop.is_set():
                waiter = asyncio.create_task(self.debouncer.wait(30))
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                for t in (waiter, stopper):
                    t.cancel()
                    with contextlib.suppress(BaseException):
                        await t
                self.rebuild()
        finally:
            transport.close()
            tcp_server.close()
            await self.mirror.stop()


async def main(config: DnsConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    stop_on_signals(loop, stop.set)
    await DnsServer(config).serve(stop)
