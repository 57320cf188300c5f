"""A gRPC server that stores nothing, on the store's own wire (grpcwire, libnghttp2): its gRPC floor.

The counterpart of `bare_h2_server.py` (HTTP/2 by the pure-Python h2): it answers
etcd's Put and Range with empty responses through `grpcwire.ServerConnection`,
the same sans-I/O connection the store's workers use, with nothing behind it:

    python benchmarks/bare_wire_server.py --listen-client-urls http://127.0.0.1:23904
    build/kvbench -endpoints 127.0.0.1:23904 -workload put -clients 1 -conns 1 -total 5000
"""

from __future__ import annotations

import argparse
import asyncio

from gifee.store import grpcwire
from gifee.store.listen import host_port
from gifee.store.proto import rpc_pb2

_HEADER = rpc_pb2.ResponseHeader(cluster_id=1, member_id=1, revision=1, raft_term=1)
_ANSWERS = {
    "/etcdserverpb.KV/Put": rpc_pb2.PutResponse(header=_HEADER).SerializeToString(),
    "/etcdserverpb.KV/Range": rpc_pb2.RangeResponse(header=_HEADER).SerializeToString(),
}


class BareConnection(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.wire = grpcwire.ServerConnection()
        self.paths: dict[int, str] = {}
        self.transport.write(self.wire.data_to_send())

    def data_received(self, data: bytes) -> None:
        wire = self.wire
        for ev in wire.receive(data):
            if type(ev) is grpcwire.CallStarted:
                self.paths[ev.stream_id] = ev.path
            elif type(ev) is grpcwire.RequestEnded:
                answer = _ANSWERS.get(self.paths.pop(ev.stream_id, ""))
                if answer is None:
                    wire.finish(ev.stream_id, grpcwire.Status.UNIMPLEMENTED, "not here")
                else:
                    wire.send_message(ev.stream_id, answer)
                    wire.finish(ev.stream_id)
        out = wire.data_to_send()
        if out:
            self.transport.write(out)


async def serve(url: str) -> None:
    host, port = host_port(url)
    server = await asyncio.get_running_loop().create_server(BareConnection, host, port, reuse_port=True)
    await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--listen-client-urls", default="http://127.0.0.1:2379")
    args, _ = p.parse_known_args()  # etcd's other flags are accepted and ignored
    import uvloop

    uvloop.run(serve(args.listen_client_urls.split(",")[0]))


if __name__ == "__main__":
    main()
