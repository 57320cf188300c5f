"""An installed npm package (pure): the `package.json` of `node_modules/<name>/` or
`node_modules/@scope/<name>/`.

Rules: the file must be a JSON object with string `name` and `version`; anything else is a
warning. Only these two fields are read.
"""

from __future__ import annotations

import json

from gifee.scan.inventory import NPM, Package


def parse_package_json(data: bytes, where: str) -> tuple[list[Package], list[str]]:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as e:
        return [], [f"{where}: not valid JSON: {str(e)[:120]}"]
    if not isinstance(doc, dict):
        return [], [f"{where}: not a JSON object"]
    name, version = doc.get("name"), doc.get("version")
    if not isinstance(name, str) or not isinstance(version, str) or not name or not version:
        return [], [f"{where}: no string name and version; skipped"]
    return [Package(NPM, name, version)], []
