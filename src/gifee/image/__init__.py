"""OCI images: the local image store, layer unpacking, building, signatures and trust.

`store.ImageStore` is the entry point for the runtime; `trust.TrustStore` decides
whether an image may run. See docs/IMAGES.md for the on-disk layout.
"""
