"""A gRPC server that stores nothing, on HTTP/2 by h2 and the event loop: the floor for gifee's own gRPC.

The counterpart of `bare_grpc_server.py` (grpc.aio): it answers etcd's Put and
Range with empty responses, with the least gRPC over h2 that kvbench accepts
(no deadlines, no flow-control queueing, no error paths), so kvbench against
it measures what HTTP/2 parsed by h2 in Python costs per call:

    python benchmarks/bare_h2_server.py --listen-client-urls http://127.0.0.1:23903
    build/kvbench -endpoints 127.0.0.1:23903 -workload put -clients 64 -conns 4 -total 20000
"""

from __future__ import annotations

import argparse
import asyncio
import struct

import h2.config
import h2.connection
import h2.events

from gifee.store.listen import host_port
from gifee.store.proto import rpc_pb2

_HEADER = rpc_pb2.ResponseHeader(cluster_id=1, member_id=1, revision=1, raft_term=1)
_ANSWERS = {
    b"/etcdserverpb.KV/Put": rpc_pb2.PutResponse(header=_HEADER).SerializeToString(),
    b"/etcdserverpb.KV/Range": rpc_pb2.RangeResponse(header=_HEADER).SerializeToString(),
}
_FRAMED = {path: struct.pack(">BI", 0, len(body)) + body for path, body in _ANSWERS.items()}
_CONFIG = h2.config.H2Configuration(
    client_side=False,
    header_encoding=None,
    validate_inbound_headers=False,
    validate_outbound_headers=False,
    normalize_inbound_headers=False,
    normalize_outbound_headers=False,
)
_RESPONSE = [(b":status", b"200"), (b"content-type", b"application/grpc")]
_TRAILERS = [(b"grpc-status", b"0")]


class BareConnection(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.conn = h2.connection.H2Connection(_CONFIG)
        self.conn.initiate_connection()
        self.paths: dict[int, bytes] = {}
        self.transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.RequestReceived):
                self.paths[ev.stream_id] = dict(ev.headers)[b":path"]  # type: ignore[index, arg-type]
            elif isinstance(ev, h2.events.DataReceived):
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)  # type: ignore[arg-type]
            elif isinstance(ev, h2.events.StreamEnded):
                sid = ev.stream_id
                assert sid is not None
                conn.send_headers(sid, _RESPONSE)
                conn.send_data(sid, _FRAMED[self.paths.pop(sid)])
                conn.send_headers(sid, _TRAILERS, end_stream=True)
        out = conn.data_to_send()
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
