"""Listening addresses and gRPC server options shared by the core and its workers."""

from __future__ import annotations

import errno
import socket
from urllib.parse import urlsplit

GRPC_OVERHEAD_BYTES = 512 * 1024  # etcd lets gRPC frames exceed the request limit by this much

# gRPC's C core gets a generous ceiling; the exact limit (etcd's request limit plus
# gRPC overhead) is checked by gifee with grpc-go's error text (handlers.check_size).
TRANSPORT_MAX_MESSAGE = 64 * 1024 * 1024


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else "http://" + url)
    if parts.port is None:
        raise ValueError(f"URL {url!r} has no port")
    return parts.hostname or "localhost", parts.port


def grpc_options_for(max_request_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max(TRANSPORT_MAX_MESSAGE, 4 * max_request_bytes)),
        ("grpc.max_send_message_length", 2**31 - 1),
        # etcd's clients ping every few seconds even without calls; accept that as etcd does.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.max_concurrent_streams", 2**31 - 1),
    ]


def check_free(url: str) -> None:
    """Fail like etcd if the port is taken: workers bind with SO_REUSEPORT and would not notice."""
    host, port = host_port(url)
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(address)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise OSError(e.errno, f"listen tcp {host}:{port}: bind: address already in use") from None
                raise
        return
