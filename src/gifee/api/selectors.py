"""Label and field selectors: parsing and matching.

Rules (Kubernetes' selector grammar):
  label selector   = requirement ("," requirement)*
  requirement      = key ("=" | "==" | "!=") value | key ("in" | "notin") "(" values ")"
                   | key | "!" key
  field selector   = key ("=" | "==" | "!=") value ("," ...)*
Keys are label keys ([prefix/]name); values may be empty. `notin` and `!=` match
objects that lack the key. A field selector may only name fields the resource
supports (metadata.name, metadata.namespace and the resource's own list), else
it is a BadRequest. Also: LabelSelector objects (matchLabels/matchExpressions)
as used by deployments, replica sets and PDBs. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                  r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


class SelectorError(ValueError):
    pass


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        raise SelectorError(f"unknown operator {self.op}")


Selector = tuple[Requirement, ...]


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c.isspace():
            i += 1
        elif text.startswith("==", i) or text.startswith("!=", i):
            out.append(text[i:i + 2])
            i += 2
        elif c in "=!(),":
            out.append(c)
            i += 1
        else:
            j = i
            while j < len(text) and not text[j].isspace() and text[j] not in "=!(),":
                j += 1
            out.append(text[i:j])
            i = j
    return out


def _check_key(key: str) -> str:
    if not _KEY.match(key) or len(key.rpartition("/")[2]) > 63:
        raise SelectorError(f"invalid label key {key!r}")
    return key


def _check_value(value: str) -> str:
    if len(value) > 63 or not _VALUE.match(value):
        raise SelectorError(f"invalid label value: {value!r}")
    return value


def parse_label_selector(text: str) -> Selector:
    toks = _tokens(text)
    reqs: list[Requirement] = []
    i = 0

    def peek(k: int = 0) -> str | None:
        return toks[i + k] if i + k < len(toks) else None

    while i < len(toks):
        if toks[i] == "!":
            if peek(1) is None:
                raise SelectorError("missing key after '!'")
            reqs.append(Requirement(_check_key(toks[i + 1]), "!"))
            i += 2
        else:
            key = toks[i]
            if key in "=!(),":
                raise SelectorError(f"unexpected {key!r}")
            _check_key(key)
            op = peek(1)
            if op is None or op == ",":
                reqs.append(Requirement(key, "exists"))
                i += 1
            elif op in ("=", "==", "!="):
                value = peek(2)
                if value is None or value == ",":
                    value_s = ""
                    i += 2
                else:
                    if value in "=!()":
                        raise SelectorError(f"unexpected {value!r} after {key}{op}")
                    value_s = value
                    i += 3
                reqs.append(Requirement(key, "!=" if op == "!=" else "=", (_check_value(value_s),)))
            elif op in ("in", "notin"):
                if peek(2) != "(":
                    raise SelectorError(f"expected '(' after {op}")
                i += 3
                values: list[str] = []
                while True:
                    t = peek()
                    if t is None:
                        raise SelectorError("missing ')'")
                    if t == ")":
                        i += 1
                        break
                    if t == ",":
                        i += 1
                        continue
                    values.append(_check_value(t))
                    i += 1
                if not values and op == "in":
                    raise SelectorError("for 'in' operator, values set can't be empty")
                reqs.append(Requirement(key, op, tuple(values)))
            else:
                raise SelectorError(f"unexpected {op!r} after {key}")
        if i < len(toks):
            if toks[i] != ",":
                raise SelectorError(f"expected ',' got {toks[i]!r}")
            i += 1
            if i == len(toks):
                raise SelectorError("trailing ','")
    return tuple(reqs)


def format_label_selector(sel: Selector) -> str:
    parts = []
    for r in sel:
        if r.op == "exists":
            parts.append(r.key)
        elif r.op == "!":
            parts.append("!" + r.key)
        elif r.op in ("=", "!="):
            parts.append(f"{r.key}{r.op}{r.values[0]}")
        else:
            parts.append(f"{r.key} {r.op} ({','.join(r.values)})")
    return ",".join(parts)


def labels_match(sel: Selector, labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    return all(r.matches(labels) for r in sel)


def from_label_selector_object(obj: dict[str, Any] | None) -> Selector:
    """metav1.LabelSelector -> requirements. None/{} matches everything (callers decide if that is allowed)."""
    if not obj:
        return ()
    reqs = [Requirement(k, "=", (str(v),)) for k, v in sorted((obj.get("matchLabels") or {}).items())]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in obj.get("matchExpressions") or []:
        op = ops.get(expr.get("operator", ""))
        if op is None:
            raise SelectorError(f"{expr.get('operator')!r} is not a valid label selector operator")
        reqs.append(Requirement(expr.get("key", ""), op, tuple(expr.get("values") or ())))
    return tuple(reqs)


# -- field selectors

@dataclass(frozen=True)
class FieldRequirement:
    field: str
    value: str
    negate: bool


def parse_field_selector(text: str, allowed: tuple[str, ...]) -> tuple[FieldRequirement, ...]:
    out = []
    for part in filter(None, (p.strip() for p in _split_unescaped(text))):
        for op in ("!=", "==", "="):
            key, sep, value = part.partition(op)
            if sep:
                key = key.strip()
                if key not in allowed:
                    raise SelectorError(f'field label not supported: {key}')
                out.append(FieldRequirement(key, _unescape(value.strip()), op == "!="))
                break
        else:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
    return tuple(out)


def _split_unescaped(text: str) -> list[str]:
    parts, cur, esc = [], "", False
    for c in text:
        if esc:
            cur += "\\" + c
            esc = False
        elif c == "\\":
            esc = True
        elif c == ",":
            parts.append(cur)
            cur = ""
        else:
            cur += c
    parts.append(cur)
    return parts


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def field_value(obj: dict[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def fields_match(reqs: tuple[FieldRequirement, ...], obj: dict[str, Any]) -> bool:
    return all((field_value(obj, r.field) == r.value) != r.negate for r in reqs)
