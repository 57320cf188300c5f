"""A Python gRPC server that stores nothing: the ceiling for any Python etcd server here.

It answers etcd's KV calls (Range, Put, Txn) and Maintenance.Status with empty
responses and does no disk I/O, so kvbench against it measures only what
Python's gRPC (grpc.aio, one process) costs per call on this machine. It
accepts etcd's flags so that store_bench.py can start it in place of gifee:

    python benchmarks/store_bench.py --only put,txn,range,put-latency \
        --gifee-cmd "python benchmarks/bare_grpc_server.py"
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import grpc

from gifee.store.listen import host_port
from gifee.store.proto import rpc_pb2

HEADER = rpc_pb2.ResponseHeader(cluster_id=1, member_id=1, revision=1, raft_term=1)


def _unary(response: Any) -> grpc.RpcMethodHandler:
    data = response.SerializeToString()

    async def handle(request: bytes, context: Any) -> bytes:
        return data

    return grpc.unary_unary_rpc_method_handler(handle)


async def serve(urls: list[str]) -> None:
    server = grpc.aio.server()
    kv = {
        "Range": _unary(rpc_pb2.RangeResponse(header=HEADER)),
        "Put": _unary(rpc_pb2.PutResponse(header=HEADER)),
        "Txn": _unary(rpc_pb2.TxnResponse(header=HEADER, succeeded=True)),
    }
    status = {"Status": _unary(rpc_pb2.StatusResponse(header=HEADER, version="3.4.0", leader=1))}
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler("etcdserverpb.KV", kv),
            grpc.method_handlers_generic_handler("etcdserverpb.Maintenance", status),
        ]
    )
    for url in urls:
        host, port = host_port(url)
        server.add_insecure_port(f"{host}:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--listen-client-urls", default="http://127.0.0.1:2379")
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    p.add_argument("--procs", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)")
    args, _ = p.parse_known_args()  # etcd's other flags are accepted and ignored
    import os

    for _ in range(args.procs - 1):
        if os.fork() == 0:
            break
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(serve(args.listen_client_urls.split(",")))
    else:
        asyncio.run(serve(args.listen_client_urls.split(",")))


if __name__ == "__main__":
    main()
