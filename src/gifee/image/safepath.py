"""What a layer's tar entry may do, decided before anything is written (pure).

Rules:
- An entry's name is made relative (leading `/` dropped) and its `.` and `..`
  segments resolved lexically; a name whose `..` climbs above the root is
  refused (`UnsafeLayer`). The result is a tuple of plain segments, none of them
  empty, `.` or `..`, so joining it below a root stays below that root.
- Hard link targets obey the same rule; symlink targets are kept as text (they
  are interpreted inside the container's root, and gifee never follows them:
  the unpacker opens every path segment with O_NOFOLLOW).
- Character and block devices and sockets are skipped; setuid and setgid bits
  are stripped from every mode.
- `.wh.NAME` is a whiteout of NAME, `.wh..wh..opq` makes its directory opaque
  (OCI image spec, "Whiteouts"); a whiteout of `.` or `..` is refused.

Theory of operation: `classify` maps one tar header (name, type, link name,
mode) to an `Entry` that says what the unpacker shell must do. The shell then
only has to carry out a plan it cannot get wrong: create a plain segment under
a directory it holds open.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gifee.image.errors import UnsafeLayer

Kind = Literal["dir", "file", "symlink", "hardlink", "fifo", "whiteout", "opaque", "skip"]
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
# Permission bits and the sticky bit; setuid (0o4000) and setgid (0o2000) never survive.
SAFE_MODE_BITS = 0o1777


@dataclass(frozen=True)
class Entry:
    kind: Kind
    path: tuple[str, ...]
    mode: int = 0o644
    symlink_target: str = ""
    hardlink_target: tuple[str, ...] = ()
    reason: str = ""


def entry_path(name: str) -> tuple[str, ...]:
    """The segments of a tar entry name below the root; UnsafeLayer if it climbs out."""
    if "\x00" in name:
        raise UnsafeLayer(f"layer entry {name!r}: NUL byte in name")
    out: list[str] = []
    for segment in name.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if not out:
                raise UnsafeLayer(f"layer entry {name!r}: '..' leads outside the root")
            out.pop()
        else:
            out.append(segment)
    return tuple(out)


def safe_mode(mode: int) -> int:
    return mode & SAFE_MODE_BITS


def classify(name: str, tar_type: str, linkname: str, mode: int) -> Entry:
    """Decide what one tar entry does. `tar_type` is one of file, dir, symlink,
    hardlink, fifo, char, block, other."""
    path = entry_path(name)
    if not path:
        return Entry("skip", path, reason="the root directory itself")
    base = path[-1]
    if base == OPAQUE_MARKER:
        return Entry("opaque", path[:-1])
    if base.startswith(WHITEOUT_PREFIX):
        target = base[len(WHITEOUT_PREFIX):]
        if target in ("", ".", ".."):
            raise UnsafeLayer(f"layer entry {name!r}: whiteout of {target!r} is not allowed")
        return Entry("whiteout", path[:-1] + (target,))
    if tar_type == "file":
        return Entry("file", path, safe_mode(mode))
    if tar_type == "dir":
        return Entry("dir", path, safe_mode(mode))
    if tar_type == "symlink":
        if not linkname or "\x00" in linkname:
            raise UnsafeLayer(f"layer entry {name!r}: symlink with an empty or invalid target")
        return Entry("symlink", path, symlink_target=linkname)
    if tar_type == "hardlink":
        link = entry_path(linkname)
        if not link:
            raise UnsafeLayer(f"layer entry {name!r}: hard link to the root directory")
        return Entry("hardlink", path, hardlink_target=link)
    if tar_type == "fifo":
        return Entry("fifo", path, safe_mode(mode))
    if tar_type in ("char", "block"):
        return Entry("skip", path, reason="device node")
    return Entry("skip", path, reason=f"unsupported tar entry type {tar_type}")
