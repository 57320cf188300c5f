"""A service's claims, its write and its releases run to their end together even when the request
is cancelled (the API server cancels the handler of a client that hangs up)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gifee.api.ipalloc import IP_PREFIX, ServiceAllocator
from gifee.store.client import StoreClient
from tests.api.harness import start_store


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    workdir = Path(tempfile.mkdtemp(prefix="gifee-ipalloc-"))
    store, ep = start_store("gifee", workdir / "store")
    try:
        yield ep
    finally:
        store.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def svc(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "cancel"},
            "spec": {"ports": [{"port": 80}]}}


async def _claimed(client: StoreClient, ip: str) -> bool:
    return bool(await client.get(IP_PREFIX + ip.encode()))


async def _cancelled_create_keeps_the_written_services_address(endpoint: str) -> None:
    async with StoreClient(endpoint) as client:
        allocator = ServiceAllocator(client)
        writing, written = asyncio.Event(), asyncio.Event()
        obj = svc("a")

        async def write() -> dict[str, Any]:  # the store has taken the service when this is cancelled
            writing.set()
            await asyncio.sleep(0.2)
            written.set()
            return obj

        request = asyncio.ensure_future(allocator.create(obj, write, dry_run=False))
        await writing.wait()
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        await asyncio.wait_for(written.wait(), 5)
        await asyncio.sleep(0.1)
        ip = obj["spec"]["clusterIP"]
        assert await _claimed(client, ip), "the written service's address was released: it could be handed out twice"


async def _cancelled_delete_still_releases(endpoint: str) -> None:
    async with StoreClient(endpoint) as client:
        allocator = ServiceAllocator(client)
        obj = svc("b")

        async def write() -> dict[str, Any]:
            return obj

        created = await allocator.create(obj, write, dry_run=False)
        ip = created["spec"]["clusterIP"]
        assert await _claimed(client, ip)
        removing, gate = asyncio.Event(), asyncio.Event()

        async def remove() -> dict[str, Any] | None:
            removing.set()
            await gate.wait()
            return created

        request = asyncio.ensure_future(allocator.delete(remove()))
        await removing.wait()
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        gate.set()
        for _ in range(50):
            if not await _claimed(client, ip):
                break
            await asyncio.sleep(0.05)
        assert not await _claimed(client, ip), "the deleted service's address stayed claimed"


def test_cancelled_create_keeps_the_written_services_address(endpoint: str) -> None:
    asyncio.run(_cancelled_create_keeps_the_written_services_address(endpoint))


def test_cancelled_delete_still_releases(endpoint: str) -> None:
    asyncio.run(_cancelled_delete_still_releases(endpoint))
