"""Building images: from a build file or from a whole root directory (I/O shell).

The base image's layers (if any) are reused as they are; the build adds one
layer, then a config and a manifest, and names the result. The name is set
last, so a failed build leaves at most unnamed blobs for gc.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

from gifee.image import oci
from gifee.image.buildfile import BuildSpec, parse_build_file
from gifee.image.errors import BadBuildFile, ImageError
from gifee.image.layerwrite import rootfs_items, tree_items, write_layer
from gifee.image.store import Image, ImageStore


def timestamp(epoch: int | None) -> str:
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC) if epoch is not None else datetime.datetime.now(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parents(dest: str) -> list[tuple[str, Path | None]]:
    segments = dest.split("/")
    return [("/".join(segments[:i]), None) for i in range(1, len(segments))]


def _commit(
    store: ImageStore,
    name: str,
    base: Image | None,
    layer: oci.Descriptor,
    diff_id: str,
    config_values: dict[str, Any],
    epoch: int | None,
) -> Image:
    created = timestamp(epoch)
    layers = (base.layers if base else []) + [layer]
    diff_ids = (base.diff_ids if base else []) + [diff_id]
    config = oci.image_config(diff_ids, created, base=base.config if base else None, **config_values)
    config_bytes = oci.canonical_json(config)
    store.put_blob(config_bytes)
    manifest = oci.image_manifest(oci.descriptor(oci.CONFIG, config_bytes), layers, {oci.CREATED: created})
    return store.add_image(name, oci.canonical_json(manifest))


def build_from_spec(store: ImageStore, spec: BuildSpec, compression: str = "gzip", epoch: int | None = None) -> Image:
    base = store.resolve(spec.base) if spec.base else None
    items: dict[str, Path | None] = {}
    for add in spec.adds:
        for name, path in _parents(add.dest):
            items.setdefault(name, path)
        for name, p in tree_items(Path(add.src), add.dest):
            items[name] = p
    layer, diff_id = write_layer(store, items.items(), compression, owner=(0, 0), mtime=epoch)
    values = {"env": spec.env, "entrypoint": spec.entrypoint, "cmd": spec.cmd, "workdir": spec.workdir,
              "user": spec.user, "labels": spec.labels}
    return _commit(store, spec.name, base, layer, diff_id, values, epoch)


def build_from_file(store: ImageStore, path: Path, compression: str = "gzip", epoch: int | None = None) -> Image:
    try:
        text = path.read_text()
    except OSError as e:
        raise BadBuildFile(f"{path}: cannot read the build file: {e.strerror}") from None
    spec = parse_build_file(text, str(path.resolve().parent), str(path))
    return build_from_spec(store, spec, compression, epoch)


def build_from_rootfs(
    store: ImageStore,
    rootfs: Path,
    name: str,
    compression: str = "gzip",
    epoch: int | None = None,
    entrypoint: list[str] | None = None,
    cmd: list[str] | None = None,
    env: list[str] | None = None,
    workdir: str | None = None,
    labels: dict[str, str] | None = None,
) -> Image:
    """A one-layer image of everything below `rootfs`, owners and modes kept."""
    if not rootfs.is_dir():
        raise ImageError(f"{rootfs}: not a directory")
    if os.geteuid() != 0:
        # files we cannot read would be silently missing from the image; say so instead
        unreadable = [p for _, p in rootfs_items(rootfs) if p.is_file() and not p.is_symlink() and not os.access(p, os.R_OK)]
        if unreadable:
            raise ImageError(f"{unreadable[0]}: not readable ({len(unreadable)} such files); build as root")
    layer, diff_id = write_layer(store, rootfs_items(rootfs), compression, mtime=epoch)
    values = {"env": env or [], "entrypoint": entrypoint, "cmd": cmd, "workdir": workdir, "user": None,
              "labels": labels or {}}
    return _commit(store, name, None, layer, diff_id, values, epoch)
