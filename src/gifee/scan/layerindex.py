"""One layer's index, and the image seen through its layers (pure).

A `LayerIndex` is what the scanner keeps of a layer: the parsed facts of every wanted file
(by path), the symlinks on the way to the fixed database paths, whiteouts, opaque
directories, and warnings. It is plain data, cached as JSON by layer digest.

Rules of the layered view (OCI image spec, "Applying changesets"), applied bottom layer
first: a layer's whiteout of P removes P and everything below it from the layers under it;
an opaque directory D hides everything the lower layers had below D; a file or symlink at P
replaces whatever lower layers had at P, and a symlink at P also hides lower entries below
P. A layer never hides its own entries.

Symlinks resolve inside the image only: an absolute target starts again at the image root,
`..` at the root stays at the root (as the kernel does in a chroot), and more than
`MAX_HOPS` links on one path is a loop (a warning, no result).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gifee.scan.facts import FileFacts

INDEX_FORMAT = 1
MAX_HOPS = 40


@dataclass
class LayerIndex:
    files: dict[str, FileFacts] = field(default_factory=dict)
    symlinks: dict[str, str] = field(default_factory=dict)
    whiteouts: list[str] = field(default_factory=list)
    opaque: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    complete: bool = True  # False when the layer could not be read to its end

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": INDEX_FORMAT,
            "files": {p: f.to_dict() for p, f in sorted(self.files.items())},
            "symlinks": dict(sorted(self.symlinks.items())),
            "whiteouts": list(self.whiteouts),
            "opaque": list(self.opaque),
            "warnings": list(self.warnings),
            "complete": self.complete,
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> LayerIndex:
        if d.get("format") != INDEX_FORMAT:
            raise ValueError(f"layer index format {d.get('format')!r}, expected {INDEX_FORMAT}")
        return LayerIndex(
            {str(p): FileFacts.from_dict(f) for p, f in d["files"].items()},
            {str(p): str(t) for p, t in d["symlinks"].items()},
            [str(p) for p in d["whiteouts"]],
            [str(p) for p in d["opaque"]],
            [str(w) for w in d["warnings"]],
            bool(d.get("complete", True)),
        )


@dataclass
class ImageView:
    """The merged result: each visible wanted file with the layer it came from."""

    files: dict[str, tuple[FileFacts, str]] = field(default_factory=dict)
    symlinks: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _below(path: str, top: str) -> bool:
    return top == "" or path == top or path.startswith(top + "/")


def _hide(view: ImageView, top: str, include_top: bool = True) -> None:
    for table in (view.files, view.symlinks):
        for p in [p for p in table if _below(p, top) and (include_top or p != top)]:
            del table[p]


def merge(layers: list[tuple[str, LayerIndex]]) -> ImageView:
    """Apply (layer digest, index) pairs bottom first."""
    view = ImageView()
    for digest, layer in layers:
        for path in layer.whiteouts:
            _hide(view, path)
        for path in layer.opaque:
            _hide(view, path, include_top=False)
        for path, target in layer.symlinks.items():
            _hide(view, path)
            view.symlinks[path] = target
        for path, facts in layer.files.items():
            view.symlinks.pop(path, None)
            view.files[path] = (facts, digest)
        view.warnings.extend(layer.warnings)
    return view


def resolve(symlinks: dict[str, str], path: str) -> tuple[str | None, str | None]:
    """(resolved path, None) or (None, why): follow symlinks in `path` inside the image."""
    pending = [s for s in path.split("/") if s not in ("", ".")]
    done: list[str] = []
    hops = 0
    while pending:
        segment = pending.pop(0)
        if segment == "..":
            if done:
                done.pop()
            continue
        current = "/".join([*done, segment])
        target = symlinks.get(current)
        if target is None:
            done.append(segment)
            continue
        hops += 1
        if hops > MAX_HOPS:
            return None, f"/{path}: more than {MAX_HOPS} symlinks (a loop?); not followed"
        if target.startswith("/"):
            done = []
        pending = [s for s in target.split("/") if s not in ("", ".")] + pending
    return "/".join(done), None
