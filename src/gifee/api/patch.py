"""Patch application: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and
Kubernetes' strategic merge patch.

Rules:
- JSON patch: add/remove/replace/move/copy/test on JSON pointers (RFC 6901);
  any failed operation fails the whole patch (the input is never modified).
- Merge patch: objects merge recursively, null deletes a key, anything else
  (lists included) replaces.
- Strategic merge patch: as merge patch, except lists whose field has a merge
  key (MERGE_KEYS: containers by name, container ports by containerPort,
  service ports by port, ...) merge element by element, primitive lists with
  the merge strategy (finalizers) are unions, and directives apply:
  `$patch: replace|delete|merge` in maps and list elements,
  `$setElementOrder/<field>`, `$deleteFromPrimitiveList/<field>`, `$retainKeys`.
Pure: documents in, new documents out; errors are PatchError.
"""

from __future__ import annotations

import copy
from typing import Any

JSON = Any


class PatchError(ValueError):
    pass


# -- RFC 6902

def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, *, for_add: bool) -> int:
    if token == "-" and for_add:
        return len(container)
    if not token.isdigit() or (token != "0" and token.startswith("0")):
        raise PatchError(f"invalid array index {token!r}")
    i = int(token)
    if i > len(container) or (i == len(container) and not for_add):
        raise PatchError(f"array index {i} out of bounds")
    return i


def _parent(doc: JSON, tokens: list[str]) -> JSON:
    cur = doc
    for t in tokens[:-1]:
        if isinstance(cur, dict):
            if t not in cur:
                raise PatchError(f"path component {t!r} not found")
            cur = cur[t]
        elif isinstance(cur, list):
            cur = cur[_index(cur, t, for_add=False)]
        else:
            raise PatchError(f"cannot descend into a scalar at {t!r}")
    return cur


def _get(doc: JSON, path: str) -> JSON:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path {path!r} not found")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, for_add=False)]
    raise PatchError(f"path {path!r} not found")


def _add(doc: JSON, path: str, value: JSON) -> JSON:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, for_add=True), value)
    else:
        raise PatchError(f"cannot add at {path!r}")
    return doc


def _remove(doc: JSON, path: str) -> JSON:
    tokens = _pointer(path)
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path {path!r} not found")
        del parent[last]
    elif isinstance(parent, list):
        del parent[_index(parent, last, for_add=False)]
    else:
        raise PatchError(f"path {path!r} not found")
    return doc


def json_patch(doc: JSON, ops: JSON) -> JSON:
    if not isinstance(ops, list):
        raise PatchError("a JSON patch is an array of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or not isinstance(op.get("path"), str):
            raise PatchError(f"invalid operation {op!r}")
        kind, path = op["op"], op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"operation {kind} needs a value")
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            doc = _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)
            doc = _remove(doc, path) if _pointer(path) else doc
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind in ("move", "copy"):
            src = op.get("from")
            if not isinstance(src, str):
                raise PatchError(f"operation {kind} needs from")
            if kind == "move" and (path + "/").startswith(src + "/") and path != src:
                raise PatchError("cannot move a value into itself")
            value = copy.deepcopy(_get(doc, src))
            if kind == "move":
                doc = _remove(doc, src)
            doc = _add(doc, path, value)
        elif kind == "test":
            if not _json_equal(_get(doc, path), op["value"]):
                raise PatchError(f"test failed at {path!r}")
        else:
            raise PatchError(f"unknown operation {kind!r}")
    return doc


def _json_equal(a: JSON, b: JSON) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


# -- RFC 7386

def merge_patch(target: JSON, patch: JSON) -> JSON:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def create_merge_patch(original: JSON, modified: JSON) -> JSON:
    """The merge patch that turns original into modified (both objects)."""
    if not isinstance(original, dict) or not isinstance(modified, dict):
        return copy.deepcopy(modified)
    out: dict[str, Any] = {}
    for k in original:
        if k not in modified:
            out[k] = None
    for k, v in modified.items():
        if k not in original:
            out[k] = copy.deepcopy(v)
        elif isinstance(v, dict) and isinstance(original[k], dict):
            sub = create_merge_patch(original[k], v)
            if sub:
                out[k] = sub
        elif not _json_equal(original[k], v):
            out[k] = copy.deepcopy(v)
    return out


# -- strategic merge patch

# Merge keys by field name, as the core types declare them (patchMergeKey);
# PATH_MERGE_KEYS overrides by (kind, path) where one field name means two things.
MERGE_KEYS: dict[str, str] = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name",
    "ports": "containerPort", "env": "name", "volumes": "name", "volumeMounts": "mountPath",
    "volumeDevices": "devicePath", "imagePullSecrets": "name", "hostAliases": "ip",
    "conditions": "type", "ownerReferences": "uid", "addresses": "type", "taints": "key",
    "topologySpreadConstraints": "topologyKey", "resourceClaims": "name", "readinessGates": "conditionType",
    "containerStatuses": "name", "initContainerStatuses": "name", "podIPs": "ip",
}
PATH_MERGE_KEYS: dict[tuple[str, tuple[str, ...]], str] = {
    ("Service", ("spec", "ports")): "port",
    ("Endpoints", ("subsets",)): "",  # atomic
}
# Primitive lists merged as sets (patchStrategy "merge" on a list of strings).
SET_LISTS: frozenset[str] = frozenset({"finalizers"})


def merge_key_for(kind: str, path: tuple[str, ...]) -> str | None:
    override = PATH_MERGE_KEYS.get((kind, path))
    if override is not None:
        return override or None
    if path and path[-1] == "ports" and path[:2] == ("spec", "ports"):
        return "port"
    return MERGE_KEYS.get(path[-1]) if path else None


def strategic_merge_patch(original: JSON, patch: JSON, kind: str) -> JSON:
    if not isinstance(patch, dict):
        raise PatchError("a strategic merge patch is a JSON object")
    return _smp_map(copy.deepcopy(original) if isinstance(original, dict) else {}, patch, kind, ())


def _smp_map(orig: dict[str, Any], patch: dict[str, Any], kind: str, path: tuple[str, ...]) -> dict[str, Any]:
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: v for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return {}
    if directive not in (None, "merge"):
        raise PatchError(f"unknown patch directive {directive!r}")
    retain = patch.get("$retainKeys")
    orders: dict[str, list[Any]] = {}
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys"):
            continue
        if k.startswith("$setElementOrder/"):
            orders[k.partition("/")[2]] = v if isinstance(v, list) else []
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            field = k.partition("/")[2]
            if isinstance(orig.get(field), list) and isinstance(v, list):
                orig[field] = [x for x in orig[field] if x not in v]
            continue
        if v is None:
            orig.pop(k, None)
            continue
        sub = path + (k,)
        cur = orig.get(k)
        if isinstance(v, dict):
            if v.get("$patch") == "delete":
                orig.pop(k, None)
            else:
                orig[k] = _smp_map(cur if isinstance(cur, dict) else {}, v, kind, sub)
        elif isinstance(v, list):
            orig[k] = _smp_list(cur if isinstance(cur, list) else [], v, kind, sub)
        else:
            orig[k] = copy.deepcopy(v)
    for field, order in orders.items():
        if isinstance(orig.get(field), list):
            orig[field] = _reorder(orig[field], order, merge_key_for(kind, path + (field,)))
    if isinstance(retain, list):
        keep = set(retain)
        orig = {k: v for k, v in orig.items() if k in keep}
    return orig


def _smp_list(orig: list[Any], patch: list[Any], kind: str, path: tuple[str, ...]) -> list[Any]:
    field = path[-1]
    if any(isinstance(e, dict) and e.get("$patch") == "replace" for e in patch):
        return [copy.deepcopy(e) for e in patch if not (isinstance(e, dict) and "$patch" in e)]
    key = merge_key_for(kind, path)
    if key and all(isinstance(e, dict) for e in patch):
        out = [copy.deepcopy(e) for e in orig]
        for elem in patch:
            directive = elem.get("$patch")
            if key not in elem:
                raise PatchError(f"map: {elem!r} does not contain declared merge key: {key}")
            pos = next((i for i, o in enumerate(out) if isinstance(o, dict) and o.get(key) == elem[key]), None)
            if directive == "delete":
                if pos is not None:
                    del out[pos]
                continue
            body = {k: v for k, v in elem.items() if k != "$patch"}
            if pos is None:
                out.append(_smp_map({}, body, kind, path))
            else:
                out[pos] = _smp_map(out[pos], body, kind, path)
        return out
    if field in SET_LISTS:
        out = list(orig)
        for e in patch:
            if e not in out:
                out.append(copy.deepcopy(e))
        return out
    return copy.deepcopy(patch)


def _reorder(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    def ident(x: Any) -> Any:
        return x.get(key) if key and isinstance(x, dict) else x
    wanted = [ident(o) for o in order]
    ranked = [x for w in wanted for x in items if ident(x) == w]
    rest = [x for x in items if ident(x) not in wanted]
    if len(ranked) + len(rest) != len(items):
        return items
    return ranked + rest
