"""etcd's v3 gRPC services in this process, dispatched from the method table.

Translation only: check the size and decode the request bytes as grpc-go
would (same limits, same error texts), call, encode, and turn a `StoreError`
into the gRPC status etcd would send. Any other exception is logged and
answered with UNKNOWN, so one bad request never takes the server down.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeAlias

import grpc

from gifee.store.errors import StoreError
from gifee.store.handlers import BIDI, SERVER_STREAM, UNARY, Method, decode, methods, receive_limit
from gifee.store.node import Store

log = logging.getLogger("gifee.store.grpc")

INTERNAL_ERROR = "etcdserver: internal error"
Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


async def _fail(context: Context, method: Method, exc: BaseException) -> None:
    if isinstance(exc, StoreError):
        await context.abort(exc.code, exc.message)
    log.error("%s failed", method.path, exc_info=exc)
    await context.abort(grpc.StatusCode.UNKNOWN, INTERNAL_ERROR)


def _unary(method: Method, limit: int) -> Callable[..., Any]:
    call = method.call

    async def handle(data: bytes, context: Context) -> bytes:
        try:
            response = await call(decode(method, data, limit))
            return response.SerializeToString()  # type: ignore[no-any-return]
        except grpc.aio.AbortError:
            raise
        except Exception as e:
            await _fail(context, method, e)
            raise

    return handle


def _server_stream(method: Method, limit: int) -> Callable[..., Any]:
    call = method.call

    async def handle(data: bytes, context: Context) -> AsyncIterator[bytes]:
        try:
            async for resp in call(decode(method, data, limit)):
                yield resp.SerializeToString()
        except grpc.aio.AbortError:
            raise
        except Exception as e:
            await _fail(context, method, e)

    return handle


def _bidi(method: Method, limit: int) -> Callable[..., Any]:
    call = method.call

    async def handle(requests: AsyncIterator[bytes], context: Context) -> AsyncIterator[bytes]:
        async def decoded() -> AsyncIterator[Any]:
            async for data in requests:
                yield decode(method, data, limit)

        try:
            async for resp in call(decoded()):
                yield resp.SerializeToString()
        except grpc.aio.AbortError:
            raise
        except Exception as e:
            await _fail(context, method, e)

    return handle


def generic_handlers(table: list[Method], limit: int) -> list[grpc.GenericRpcHandler]:
    services: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for m in table:
        if m.kind == UNARY:
            handler = grpc.unary_unary_rpc_method_handler(_unary(m, limit))
        elif m.kind == SERVER_STREAM:
            handler = grpc.unary_stream_rpc_method_handler(_server_stream(m, limit))
        else:
            assert m.kind == BIDI
            handler = grpc.stream_stream_rpc_method_handler(_bidi(m, limit))
        services.setdefault(m.service, {})[m.name] = handler
    return [grpc.method_handlers_generic_handler(name, handlers) for name, handlers in services.items()]


def add_services(server: grpc.aio.Server, store: Store) -> None:
    limit = receive_limit(store.config.max_request_bytes)
    server.add_generic_rpc_handlers(generic_handlers(methods(store), limit))
