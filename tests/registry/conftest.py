"""Fixtures: one registry per target for the session (gifee's and the reference), a
fresh repository name per test so that tests sharing a registry never meet."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.registry.harness import RegistryProcess

TARGETS = ["gifee", "distribution"]


@pytest.fixture(scope="session", params=TARGETS)
def target(request: pytest.FixtureRequest) -> Iterator[RegistryProcess]:
    server = RegistryProcess(request.param)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def repo() -> str:
    return f"conformance/t-{uuid.uuid4().hex[:12]}"


def lacks(target: RegistryProcess, feature: str) -> None:
    """Skip on the reference registry for what Distribution 2.8 does not implement."""
    if target.kind == "distribution":
        pytest.skip(f"Distribution 2.8 lacks {feature}")
