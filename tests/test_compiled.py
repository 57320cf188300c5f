"""The store's compiled modules: built by the install, used, and set aside when older than their sources."""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gifee import compiled

PURE = compiled.pure_python_requested()


@pytest.mark.skipif(PURE, reason="GIFEE_PURE_PYTHON is set: the modules run from source")
def test_the_install_built_and_uses_every_listed_module() -> None:
    """The test command's install compiles them; a build that skipped it would fail here."""
    for name in compiled.MODULES:
        module = importlib.import_module(name)
        assert compiled.is_compiled(module), f"{name} runs from {module.__file__}"
        assert compiled.extension_path(name) is not None
    assert compiled.stale_modules() == []


def test_pure_python_runs_every_listed_module_from_source() -> None:
    code = "import importlib, gifee.compiled as c; print(all(importlib.import_module(m).__file__.endswith('.py') for m in c.MODULES))"
    env = dict(os.environ, GIFEE_PURE_PYTHON="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def _tree(tmp_path: Path, extension: bool, recorded: str | None) -> Path:
    """A package with one module, maybe its extension, and maybe a record of what it was built from."""
    package = tmp_path / "gifee"
    package.mkdir()
    (package / "mod.py").write_text("x = 1\n")
    if extension:
        (package / ("mod" + importlib.machinery.EXTENSION_SUFFIXES[0])).write_bytes(b"")
    if recorded is not None:
        compiled.write_manifest(package, {"gifee.mod": recorded})
    return tmp_path


def test_an_extension_built_from_its_source_is_not_stale(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"x = 1\n").hexdigest()
    root = _tree(tmp_path, extension=True, recorded=digest)
    assert compiled.source_digests(["gifee.mod"], root) == {"gifee.mod": digest}
    assert compiled.stale_modules(["gifee.mod"], root) == []


def test_an_extension_built_from_another_source_is_stale(tmp_path: Path) -> None:
    root = _tree(tmp_path, extension=True, recorded=hashlib.sha256(b"x = 0\n").hexdigest())
    assert compiled.stale_modules(["gifee.mod"], root) == ["gifee.mod"]


def test_an_extension_without_a_record_is_stale(tmp_path: Path) -> None:
    root = _tree(tmp_path, extension=True, recorded=None)
    assert compiled.stale_modules(["gifee.mod"], root) == ["gifee.mod"]


def test_a_module_without_an_extension_is_not_stale(tmp_path: Path) -> None:
    root = _tree(tmp_path, extension=False, recorded=None)
    assert compiled.stale_modules(["gifee.mod"], root) == []
    assert compiled.extension_path("gifee.mod", root) is None


def test_an_edited_source_is_run_from_source(tmp_path: Path) -> None:
    """The whole point: after an edit, the edit runs (and a warning says why), not the old build."""
    if PURE or not all(compiled.extension_path(m) for m in compiled.MODULES):
        pytest.skip("no compiled build to go stale")
    # A copy of the installed tree whose grpcwire.py gains a line after the build.
    tree = tmp_path / "src"
    shutil.copytree(Path(compiled.__file__).parent, tree / "gifee")
    for lib in Path(compiled.__file__).parent.parent.glob("gifee_store__mypyc*"):
        shutil.copy(lib, tree / lib.name)
    wire = tree / "gifee" / "store" / "grpcwire.py"
    wire.write_text(wire.read_text() + "\nEDITED = True\n")
    code = (
        "import gifee.store.grpcwire as w, gifee.store.wal as wal; "
        "print(w.EDITED, w.__file__.endswith('.py'), wal.__file__.endswith('.py'))"
    )
    env = dict(os.environ, PYTHONPATH=str(tree))
    env.pop("GIFEE_PURE_PYTHON", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "True"]
    assert "built from other sources" in out.stderr


def test_a_source_copy_is_a_separate_module_from_source() -> None:
    copy = compiled.load_source("gifee.store.grpcwire")
    assert copy.__file__ is not None and copy.__file__.endswith("grpcwire.py")
    assert copy is not importlib.import_module("gifee.store.grpcwire")
    assert compiled.load_source("gifee.store.grpcwire") is copy


def test_a_wire_connection_built_with_a_bad_argument_fails_cleanly() -> None:
    """Compiled, a constructor that fails its argument check used to crash the process (its finalizer
    read a session pointer never set); now the session belongs to an interpreted owner."""
    code = (
        "from gifee.store.grpcwire import ServerConnection\n"
        "try:\n    ServerConnection('x')  # type: ignore\nexcept TypeError:\n    pass\n"
        "import gc; gc.collect(); print('alive')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "alive", (out.returncode, out.stderr[-2000:])
