"""Fixtures for the scanner tests: the vulnerability database built once from the shared data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gifee.scan.vulndb.store import VulnDB, database_path

SHARED = Path("/work/shared/vulndata")


@pytest.fixture(scope="session")
def vulndb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not SHARED.is_dir():
        pytest.skip("shared vulnerability data missing")
    from gifee.scan.vulndb.update import update

    d = tmp_path_factory.mktemp("vulndb")
    update(SHARED, database_path(d))
    return d


@pytest.fixture
def db(vulndb_dir: Path) -> Iterator[VulnDB]:
    with VulnDB(database_path(vulndb_dir)) as opened:
        yield opened
