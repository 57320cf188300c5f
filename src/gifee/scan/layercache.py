"""Layer indexes cached by layer digest: `<dir>/scan/layers/<hex>.json` (I/O shell).

A layer is immutable under its digest, so an index never goes stale; only a change of
`layerindex.INDEX_FORMAT` (or of what the indexer reads) invalidates it, and then the file is
simply read as a miss and rewritten. Files are written whole to a temporary name and
renamed, so concurrent scans never see half an index. An unreadable or damaged cache file is
a miss, never an error.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from gifee.scan.layerindex import LayerIndex

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def cache_dir(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / "scan" / "layers"


class LayerCache:
    def __init__(self, root: Path | None, read: bool = True) -> None:
        self.root = root  # None: no caching
        self.read = read
        self.hits = 0
        self.misses = 0

    def _path(self, digest: str) -> Path | None:
        if self.root is None or not _DIGEST.match(digest):
            return None
        return self.root / (digest.split(":", 1)[1] + ".json")

    def get(self, digest: str) -> LayerIndex | None:
        path = self._path(digest)
        if path is None or not self.read:
            return None
        try:
            index = LayerIndex.from_dict(json.loads(path.read_bytes()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            self.misses += 1
            return None
        self.hits += 1
        return index

    def put(self, digest: str, index: LayerIndex) -> None:
        path = self._path(digest)
        if path is None or not index.complete:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(index.to_dict(), f, separators=(",", ":"))
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError:
            pass  # a cache that cannot be written only costs time
