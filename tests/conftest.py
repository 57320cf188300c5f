"""Shared fixtures: the reference etcd and the gifee store, started on loopback ports.

`GIFEE_TEST_STORE_CMD` replaces the gifee command (e.g. `GIFEE_TEST_STORE_CMD=etcd`
validates the differential suite with etcd on both sides).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.store.reference import (
    ETCD_BINARY,
    ServerPair,
    ServerProcess,
    candidate_label,
    gifee_command,
    require_etcd,
    start_all,
)


def make_etcd(workdir: Path) -> ServerProcess:
    require_etcd()
    return ServerProcess("etcd", [ETCD_BINARY], workdir)


def make_gifee(workdir: Path) -> ServerProcess:
    return ServerProcess(candidate_label(), gifee_command(), workdir)


@pytest.fixture
def etcd_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A fresh single-member Debian etcd 3.4."""
    server = make_etcd(tmp_path / "etcd")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def gifee_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A fresh gifee store (or the GIFEE_TEST_STORE_CMD override) with etcd's flags."""
    server = make_gifee(tmp_path / "gifee")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(params=[f"etcd-vs-{candidate_label()}"])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerPair]:
    """A fresh reference etcd and a fresh candidate, started in parallel."""
    servers = ServerPair(make_etcd(tmp_path / "etcd"), make_gifee(tmp_path / "candidate"))
    try:
        start_all(servers)
        yield servers
    finally:
        for s in servers:
            s.stop()
