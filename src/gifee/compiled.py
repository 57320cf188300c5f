"""Which modules the build compiles to C with mypyc, and running them from source when asked or stale.

The store's hot path (the gRPC wire, the Raft core and its shell, the WAL, the state machine and
MVCC) is plain typed Python that mypyc compiles into C extension modules at build time (setup.py
reads `MODULES` from here). The sources stay the reference: every compiled module also runs as it
is, and the two must behave the same. Measured on one client's puts (`benchmarks/README.md`):
about 10 % less CPU per request and a lower median latency than the same modules interpreted.

An editable install builds the extensions next to their sources, where Python's import prefers
them. A source edited after the build would then be silently ignored. So the build records each
compiled source's SHA-256 in `compiled.<ABI>.json` beside this file (file times cannot tell: the build
leaves an unchanged extension's old time), and when a source no longer matches its record (or
`GIFEE_PURE_PYTHON=1` is set) all of them are loaded from source, with a warning in the stale
case. They go together because the compiled modules share one C library and call each other's
classes directly. Rebuild with `pip install -e .`.

What this module never does: compile anything, or choose for modules outside `MODULES`.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

# Dotted names. Each is a typed module that mypyc accepts; what it may not do there (weak
# references to its objects, subclasses defined in interpreted modules unless allowed,
# monkeypatched methods) is checked by running the test suite on the compiled build.
MODULES = (
    "gifee.store.grpcwire",
    "gifee.store.grpcport",
    "gifee.store.raft.core",
    "gifee.store.raft.log",
    "gifee.store.raft.progress",
    "gifee.store.raftnode",
    "gifee.store.raftstorage",
    "gifee.store.wal",
    "gifee.store.statemachine",
    "gifee.store.mvcc",
)

_ROOT = Path(__file__).resolve().parent.parent  # the directory that holds the gifee package
# In the gifee package, one per interpreter ABI as the extensions are (compiled.cpython-311-x86_64-linux-gnu.json):
# {module: SHA-256 of the source it was built from}.
MANIFEST = "compiled" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so").removesuffix(".so") + ".json"


def source_path(module: str, root: Path = _ROOT) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".py")


def extension_path(module: str, root: Path = _ROOT) -> Path | None:
    """The built extension of a module, if there is one beside its source."""
    source = source_path(module, root)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = source.with_suffix(suffix)
        if candidate.exists():
            return candidate
    return None


def source_digest(module: str, root: Path = _ROOT) -> str:
    return hashlib.sha256(source_path(module, root).read_bytes()).hexdigest()


def source_digests(modules: Sequence[str] = MODULES, root: Path = _ROOT) -> dict[str, str]:
    return {module: source_digest(module, root) for module in modules}


def write_manifest(package_dir: Path, digests: dict[str, str]) -> None:
    """Record the sources the extensions were built from (the build, once they are compiled)."""
    (package_dir / MANIFEST).write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")


def stale_modules(modules: Sequence[str] = MODULES, root: Path = _ROOT) -> list[str]:
    """Modules with an extension whose source is not the one it was built from."""
    try:
        built = json.loads((root / "gifee" / MANIFEST).read_text())
    except (OSError, ValueError):
        built = {}
    return [
        module
        for module in modules
        if extension_path(module, root) is not None and built.get(module) != source_digest(module, root)
    ]


class _FromSource(importlib.abc.MetaPathFinder):
    """Finds the compiled modules' sources ahead of the path finder, which would pick the extensions."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, source_path(fullname))


def load_source(module: str) -> ModuleType:
    """A second copy of a compiled module, run from its source (for tests that patch its classes)."""
    name = module + "__source"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, source_path(module))
    assert spec is not None and spec.loader is not None
    copy = importlib.util.module_from_spec(spec)
    sys.modules[name] = copy  # dataclasses look their module up while the class is made
    spec.loader.exec_module(copy)
    return copy


def is_compiled(module: ModuleType) -> bool:
    return not (module.__file__ or "").endswith(".py")


def pure_python_requested() -> bool:
    """GIFEE_PURE_PYTHON set (and not 0): at build time nothing is compiled, at run time nothing compiled runs."""
    return os.environ.get("GIFEE_PURE_PYTHON", "") not in ("", "0")


def choose() -> None:
    """Run the compiled modules from source if asked to, or if any is stale (called by gifee/__init__)."""
    if any(isinstance(f, _FromSource) for f in sys.meta_path):
        return
    if pure_python_requested():
        sys.meta_path.insert(0, _FromSource())
        return
    stale = stale_modules()
    if stale:
        print(
            "gifee: compiled modules were built from other sources, running all of them from source "
            f"(rebuild with `pip install -e .`): {', '.join(stale)}",
            file=sys.stderr,
        )
        sys.meta_path.insert(0, _FromSource())
