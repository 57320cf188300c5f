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
    """mkdir -p of `path` inside `root`: the path is resolved inside the root first, so
    the directories made are those a symlink in the image leads to, under the root."""
    target = resolve_in_root(root, path)
    current = root
    for part in target.relative_to(root).parts:
        current = current / part
        if current.is_symlink():  # resolution saw no symlink here; something changed under us
            raise OSError(40, f"{path} in the image changed while it was being resolved")
        if not current.exists():
            current.mkdir(mode=0o755)
        elif not current.is_dir():
            raise NotADirectoryError(20, f"{path} in the image is not a directory")
    return target
