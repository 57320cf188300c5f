"""Listening addresses shared by the core and its workers, and etcd's gRPC size allowance."""

from __future__ import annotations

import errno
import socket
from urllib.parse import urlsplit

GRPC_OVERHEAD_BYTES = 512 * 1024  # etcd lets gRPC frames exceed the request limit by this much


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else "http://" + url)
    if parts.port is None:
        raise ValueError(f"URL {url!r} has no port")
    return parts.hostname or "localhost", parts.port


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
