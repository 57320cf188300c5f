"""etcd's v3 gRPC services in this process, dispatched from the method table.

Translation only: decode with the table's message types, call, and turn a
`StoreError` into the gRPC status etcd would send. Any other exception is
logged and answered with UNKNOWN, so one bad request never takes the server
down.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from gifee.store.errors import StoreError
from gifee.store.handlers import BIDI, SERVER_STREAM, UNARY, Method, methods
from gifee.store.node import Store

log = logging.getLogger("gifee.store.grpc")

INTERNAL_ERROR = "etcdserver: internal error"


def _unary(method: Method) -> Callable[..., Any]:
    call = method.call

    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await call(request)
        except StoreError as e:
            await context.abort(e.code, e.message)
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("%s failed", method.path)
            await context.abort(grpc.StatusCode.UNKNOWN, INTERNAL_ERROR)

    return handle


def _stream(method: Method) -> Callable[..., Any]:
    call = method.call

    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        try:
            async for resp in call(request):
                yield resp
        except StoreError as e:
            await context.abort(e.code, e.message)
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("%s failed", method.path)
            await context.abort(grpc.StatusCode.UNKNOWN, INTERNAL_ERROR)

    return handle


def generic_handlers(table: list[Method]) -> list[grpc.GenericRpcHandler]:
    services: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for m in table:
        decode, encode = m.request.FromString, m.response.SerializeToString
        if m.kind == UNARY:
            handler = grpc.unary_unary_rpc_method_handler(_unary(m), decode, encode)
        elif m.kind == SERVER_STREAM:
            handler = grpc.unary_stream_rpc_method_handler(_stream(m), decode, encode)
        else:
            assert m.kind == BIDI
            handler = grpc.stream_stream_rpc_method_handler(_stream(m), decode, encode)
        services.setdefault(m.service, {})[m.name] = handler
    return [grpc.method_handlers_generic_handler(name, table_) for name, table_ in services.items()]


def add_services(server: grpc.aio.Server, store: Store) -> None:
    server.add_generic_rpc_handlers(generic_handlers(methods(store)))
