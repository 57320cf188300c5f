"""From the merged image view to the inventory: which distribution, which packages (pure).

Rules: the distribution comes from the first release file in `interesting.RELEASE_ORDER`
that resolves (through the image's symlinks) to a parsed file naming one; os-release fills
gaps from `debian_version` when it has no VERSION_ID (Debian testing/sid). The dpkg, apk and
rpm databases are read at their fixed paths after resolution (a database reached by two
paths counts once); dpkg `status.d` files, Python metadata and npm `package.json` files count
wherever they are visible. Warnings of every file used, and of resolution, are kept.
"""

from __future__ import annotations

from dataclasses import replace

from gifee.scan import interesting as wanted
from gifee.scan.facts import FileFacts
from gifee.scan.inventory import Distro, Inventory
from gifee.scan.layerindex import ImageView, resolve

_DATABASE_PATHS = [p for p, k in wanted.FIXED_PATHS.items()
                   if k in (wanted.DPKG_STATUS, wanted.APK_INSTALLED, wanted.RPMDB_SQLITE, wanted.RPMDB_OTHER)]
_ANYWHERE = (wanted.DPKG_STATUS_D, wanted.PYTHON_METADATA, wanted.NPM_PACKAGE)


def _lookup(view: ImageView, path: str, warnings: list[str]) -> tuple[str, FileFacts, str] | None:
    resolved, why = resolve(view.symlinks, path)
    if resolved is None:
        warnings.append(str(why))
        return None
    hit = view.files.get(resolved)
    return (resolved, *hit) if hit else None


def _distro(view: ImageView, warnings: list[str]) -> Distro | None:
    found: Distro | None = None
    for path in wanted.RELEASE_ORDER:
        hit = _lookup(view, path, warnings)
        if hit is None or hit[1].distro is None:
            continue
        if found is None:
            found = hit[1].distro
        if found.version_id:
            return found
        if hit[1].kind == wanted.DEBIAN_VERSION and found.id == "debian" and hit[1].distro.version_id:
            return replace(found, version_id=hit[1].distro.version_id)
    return found


def inventory_of(view: ImageView) -> Inventory:
    inv = Inventory(warnings=list(view.warnings))
    inv.distro = _distro(view, inv.warnings)
    used: set[str] = set()
    for path in _DATABASE_PATHS:
        hit = _lookup(view, path, inv.warnings)
        if hit is None or hit[0] in used:
            continue
        used.add(hit[0])
        real, facts, layer = hit
        inv.packages.extend(p.at("/" + real, layer) for p in facts.packages)
        inv.warnings.extend(facts.warnings)
    for path, (facts, layer) in sorted(view.files.items()):
        if facts.kind in _ANYWHERE:
            inv.packages.extend(p.at("/" + path, layer) for p in facts.packages)
            inv.warnings.extend(facts.warnings)
    return inv
