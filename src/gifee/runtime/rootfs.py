"""Paths inside a pod's root, resolved as the pod would see them.

An image is hostile input: `/data` in it may be a symlink to `/etc` of the host as
seen from outside the pod, or to `../../..`. Before the runtime creates a mount
point, a working directory or /etc/hosts inside a root, it resolves the path one
component at a time, reading symlinks itself and treating their absolute targets
and `..` as relative to the pod's root, never the host's: the result is always a
path under the root.
"""

from __future__ import annotations

import os
from pathlib import Path

MAX_SYMLINKS = 40  # as the kernel's path walk: a loop ends in ELOOP, not a hang


def resolve_in_root(root: Path, path: str) -> Path:
    """The host path for `path` inside `root`, following symlinks within the root."""
    parts = [p for p in path.split("/") if p and p != "."]
    resolved: list[str] = []
    followed = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        try:
            target = os.readlink(candidate)
        except OSError:  # not a symlink, or does not exist yet: take it as it is
            resolved.append(part)
            continue
        followed += 1
        if followed > MAX_SYMLINKS:
            raise OSError(40, f"too many levels of symbolic links in {path}")
        if target.startswith("/"):
            resolved = []
        parts = [p for p in target.split("/") if p and p != "."] + parts
    return root.joinpath(*resolved)


def make_dirs_in_root(root: Path, path: str) -> Path:
    """mkdir -p of `path` inside `root`, each component resolved inside the root."""
    current = "/"
    target = root
    for part in [p for p in path.split("/") if p and p != "."]:
        current = os.path.join(current, part)
        target = resolve_in_root(root, current)
        if not target.is_dir():
            if target.exists() or target.is_symlink():
                raise NotADirectoryError(20, f"{current} in the image is not a directory")
            target.mkdir(mode=0o755)
    return target
