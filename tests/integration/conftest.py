"""Fixtures shared with the parts whose joints these tests check."""

from tests.scan.conftest import vulndb_dir  # noqa: F401  (the shared vulnerability data, loaded once)
