"""Tests that replace a compiled class's methods run again, in a child pytest, with every module from source.

mypyc's compiled classes cannot have their methods replaced (their calls to each other go straight to
the C functions), so a test that plants a bug that way to show a check catches it would plant nothing.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys

import pytest

from gifee import compiled


def rerun_from_source(request: pytest.FixtureRequest, module: str) -> bool:
    """True if this test has just run from source in a child pytest (and passed there).

    False when `module` already runs from source here: the caller then goes on with the test itself.
    """
    if not compiled.is_compiled(importlib.import_module(module)):
        return False
    env = dict(os.environ, GIFEE_PURE_PYTHON="1")
    child = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", request.node.nodeid],
        env=env,
        cwd=request.config.rootpath,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert child.returncode == 0, f"from source: {child.stdout[-4000:]}{child.stderr[-2000:]}"
    assert re.search(r"^1 passed\b", child.stdout, re.M), child.stdout[-2000:]
    return True
