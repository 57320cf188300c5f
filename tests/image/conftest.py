"""Fixtures for the image tests: a fresh store, and skipping root-only tests when not root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gifee.image.store import Image, ImageStore
from tests.image.images import busybox_image


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root")
    for item in items:
        if "root" in item.keywords and "tests/image" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "images")


@pytest.fixture
def busybox(store: ImageStore) -> Image:
    return busybox_image(store)
