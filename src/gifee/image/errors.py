"""The image part's errors: each carries a message a user can act on.

The CLI prints `str(error)` and exits 1; nothing here ever needs a traceback.
"""

from __future__ import annotations


class ImageError(Exception):
    """Base of every error the image part raises on bad input or a bad store."""


class ImageNotFound(ImageError):
    """A reference names no image in the store."""


class BadReference(ImageError):
    """An image name, tag, digest or trust prefix that is not well formed."""


class BlobCorrupted(ImageError):
    """A blob's bytes do not hash to its digest (or its size differs)."""


class BadImage(ImageError):
    """A manifest, index, config or layout that does not follow the OCI image spec."""


class UnsafeLayer(ImageError):
    """A layer entry that would write outside the layer's root, or is otherwise refused."""


class BadBuildFile(ImageError):
    """A build file that cannot be built."""


class ImageNotTrusted(ImageError):
    """No signature by a trusted key verifies over the image's manifest digest."""
