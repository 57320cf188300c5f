"""Scan an image or a root directory: index, merge, list, match, report (I/O shell).

Each layer's index comes from the cache (`layercache`) when its digest was seen before,
otherwise from reading the layer's tar stream (`tarindex`), and is then cached. The layers
are merged bottom first (`layerindex.merge`), the inventory is taken from the merged view
(`installed`), and the packages are matched against the vulnerability database
(`vulndb.matcher.match_package`) into a `report.Report`. A root directory is read in place
(`dirindex`) and never cached.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from gifee.scan.installed import inventory_of
from gifee.scan.inventory import Inventory
from gifee.scan.layercache import LayerCache
from gifee.scan.layerindex import LayerIndex, merge
from gifee.scan.report import Report, build_report
from gifee.scan.targets import ImageTarget
from gifee.scan.versions import scheme_for_namespace
from gifee.scan.vulndb.matcher import Finding, match_package
from gifee.scan.vulndb.store import VulnDB


@dataclass
class Timing:
    indexed: int = 0
    cached: int = 0
    notes: list[str] = field(default_factory=list)


def layer_indexes(image: ImageTarget, layer_cache: LayerCache, timing: Timing | None = None) -> list[tuple[str, LayerIndex]]:
    from gifee.scan.tarindex import index_layer

    out: list[tuple[str, LayerIndex]] = []
    for i, layer in enumerate(image.layers):
        index = layer_cache.get(layer.digest)
        if index is not None:
            if timing:
                timing.cached += 1
        else:
            what = f"{image.label}: layer {i} ({layer.digest[:19]})"
            try:
                with layer.open() as blob:
                    index = index_layer(blob, layer.compression, layer.digest, what)
            except OSError as e:
                index = LayerIndex(warnings=[f"{what}: cannot read the layer blob: {e.strerror}"], complete=False)
            layer_cache.put(layer.digest, index)
            if timing:
                timing.indexed += 1
        out.append((layer.digest, index))
    return out


def image_inventory(image: ImageTarget, layer_cache: LayerCache, timing: Timing | None = None) -> Inventory:
    return inventory_of(merge(layer_indexes(image, layer_cache, timing)))


def root_inventory(root: Path) -> Inventory:
    from gifee.scan.dirindex import index_root

    if not root.is_dir():
        return Inventory(warnings=[f"{root}: not a directory"])
    return inventory_of(merge([("", index_root(root))]))


def _orderable(namespace: str) -> bool:
    try:
        scheme_for_namespace(namespace)
    except KeyError:
        return False
    return True


def report_for(target: str, inventory: Inventory, db: VulnDB, layers: list[str] | None = None) -> Report:
    @cache
    def match(namespace: str, package: str, version: str) -> tuple[list[Finding], list[str]]:
        return match_package(db, namespace, package, version)

    report = build_report(target, inventory, match, layers, _orderable)
    _note_missing_data(report, inventory, db)
    return report


def _note_missing_data(report: Report, inventory: Inventory, db: VulnDB) -> None:
    """"No findings" must not be mistaken for "not vulnerable" when the database knows nothing."""
    known = set(db.stats()["namespaces"])
    used = {report.namespace} if report.namespace and any(p.kind in ("deb", "apk", "rpm") for p in inventory.packages) else set()
    used |= {"PyPI" for p in inventory.packages if p.kind == "python"} | {"npm" for p in inventory.packages if p.kind == "npm"}
    for namespace in sorted(n for n in used if n not in known):
        report.warnings.append(f"the vulnerability database has no records for {namespace}: its packages were not checked")


def scan_image(image: ImageTarget, db: VulnDB, cache_root: Path | None, timing: Timing | None = None,
               use_cache: bool = True) -> Report:
    """`use_cache=False` indexes every layer again but still writes the cache."""
    inventory = image_inventory(image, LayerCache(cache_root, read=use_cache), timing)
    return report_for(image.label, inventory, db, [layer.digest for layer in image.layers])


def scan_root(root: Path, db: VulnDB) -> Report:
    return report_for(os.fspath(root), root_inventory(root), db)
