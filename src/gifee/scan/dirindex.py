"""Index a root directory in place, as if it were one layer (I/O shell, no cache).

The tree is walked without following any symlink: directories are entered only when they are
real directories (checked on the entry itself), wanted files are opened with O_NOFOLLOW and
must be regular files, and symlinks are recorded as text for `layerindex.resolve`, which
keeps them inside the root. `proc`, `sys` and `dev` at the top are not walked, nor are other
file systems mounted below the root.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from gifee.scan import interesting as wanted
from gifee.scan.facts import read_facts, too_large
from gifee.scan.layerindex import LayerIndex

_SKIP_TOP = {"proc", "sys", "dev"}
MAX_WARNINGS = 50


def _read(path: str, cap: int) -> tuple[bytes | None, int]:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, -1
        if st.st_size > cap:
            return None, st.st_size
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(cap + 1), st.st_size
    finally:
        os.close(fd)


def index_root(root: Path) -> LayerIndex:
    index = LayerIndex()

    def warn(text: str) -> None:
        if len(index.warnings) < MAX_WARNINGS:
            index.warnings.append(f"{root}: {text}")

    try:
        root_dev = os.stat(root).st_dev
    except OSError as err:
        index.complete = False
        warn(f"cannot read: {err.strerror}")
        return index
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            entries = list(os.scandir(os.path.join(root, rel) if rel else root))
        except OSError as err:
            warn(f"/{rel}: cannot list: {err.strerror}")
            continue
        for e in entries:
            path = f"{rel}/{e.name}" if rel else e.name
            try:
                if e.is_symlink():
                    if wanted.symlink_wanted(path):
                        index.symlinks[path] = os.readlink(e.path)
                elif e.is_dir(follow_symlinks=False):
                    if not (rel == "" and e.name in _SKIP_TOP) and e.stat(follow_symlinks=False).st_dev == root_dev:
                        stack.append(path)
                elif e.is_file(follow_symlinks=False):
                    kind = wanted.kind_of(path)
                    if kind is None:
                        continue
                    cap = wanted.SIZE_CAPS[kind]
                    data, size = _read(e.path, cap)
                    if data is not None and len(data) <= cap:
                        index.files[path] = read_facts(kind, path, data)
                    elif size >= 0:
                        index.files[path] = too_large(kind, path, max(size, len(data or b"")))
            except OSError as err:
                warn(f"/{path}: cannot read: {err.strerror}")
    return index
