"""Request routing and query parsing for the REST API: URL paths -> targets,
query strings -> typed options, Accept headers -> the output format.

Rules (Kubernetes' URL layout):
  /api/v1/<plural>[/<name>[/<sub>]]                      cluster-scoped, or all namespaces
  /api/v1/namespaces/<ns>/<plural>[/<name>[/<sub>]]      namespaced
  /apis/<group>/<version>/...                            the same under a group
  .../watch/...                                          the old watch prefix (= ?watch=1)
A namespace's own subresources (/api/v1/namespaces/<name>/status|finalize) are
told apart from namespaced collections by the registry. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gifee.api import errors, resources
from gifee.api.resources import Resource
from gifee.api.selectors import (
    FieldRequirement,
    Selector,
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)


@dataclass(frozen=True)
class Target:
    res: Resource
    namespace: str
    name: str
    subresource: str
    watch_prefix: bool = False


def parse_resource_path(path: str) -> Target | None:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    watch = False
    if rest and rest[0] == "watch":
        watch, rest = True, rest[1:]
    if not rest:
        return None
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 3:
        res = resources.lookup(group, version, rest[2])
        if res is not None and res.namespaced:
            namespace, rest = rest[1], rest[2:]
    res = resources.lookup(group, version, rest[0])
    if res is None or len(rest) > 3:
        return None
    name = rest[1] if len(rest) > 1 else ""
    sub = rest[2] if len(rest) > 2 else ""
    if sub and res.subresource(sub) is None:
        return None
    return Target(res, namespace, name, sub, watch)


# -- query strings

def _bool(query: dict[str, str], key: str) -> bool:
    v = query.get(key, "")
    if v in ("", "false", "0", "False"):
        return False
    if v in ("true", "1", "True"):
        return True
    raise errors.bad_request(f"invalid value for {key}: {v!r}: must be a boolean")


def _int(query: dict[str, str], key: str, default: int | None = None) -> int | None:
    v = query.get(key)
    if v is None or v == "":
        return default
    try:
        return int(v)
    except ValueError:
        raise errors.bad_request(f"invalid value for {key}: {v!r}: must be an integer") from None


@dataclass(frozen=True)
class ListOptions:
    label_selector: Selector
    field_selector: tuple[FieldRequirement, ...]
    watch: bool
    allow_bookmarks: bool
    resource_version: str
    resource_version_match: str
    limit: int
    continue_token: str
    timeout_seconds: int | None


def list_options(query: dict[str, str], res: Resource, watch_prefix: bool = False) -> ListOptions:
    allowed = ("metadata.name", "metadata.namespace") + res.fields
    try:
        labels = parse_label_selector(query.get("labelSelector", ""))
        fields = parse_field_selector(query.get("fieldSelector", ""), allowed)
    except SelectorError as e:
        raise errors.bad_request(f"unable to parse requirement: {e}") from None
    limit = _int(query, "limit", 0) or 0
    if limit < 0:
        raise errors.bad_request("limit must be non-negative")
    rv = query.get("resourceVersion", "")
    if rv and not rv.isdigit():
        raise errors.bad_request(f"invalid resourceVersion {rv!r}")
    match = query.get("resourceVersionMatch", "")
    if match not in ("", "Exact", "NotOlderThan"):
        raise errors.bad_request(f"invalid resourceVersionMatch {match!r}")
    if match and not rv:
        raise errors.bad_request("resourceVersionMatch is forbidden unless resourceVersion is provided")
    cont = query.get("continue", "")
    if cont and rv and rv != "0":
        raise errors.bad_request("specifying resource version is not allowed when using continue")
    return ListOptions(labels, fields, watch_prefix or _bool(query, "watch"), _bool(query, "allowWatchBookmarks"),
                       rv, match, limit, cont, _int(query, "timeoutSeconds"))


def delete_options(query: dict[str, str], body: dict[str, Any] | None) -> dict[str, Any]:
    """DeleteOptions from the body, with query parameters filling what it lacks."""
    opts = dict(body or {})
    if "gracePeriodSeconds" not in opts and "gracePeriodSeconds" in query:
        opts["gracePeriodSeconds"] = _int(query, "gracePeriodSeconds")
    if "propagationPolicy" not in opts and "propagationPolicy" in query:
        opts["propagationPolicy"] = query["propagationPolicy"]
    if "orphanDependents" not in opts and "orphanDependents" in query:
        opts["orphanDependents"] = _bool(query, "orphanDependents")
    if "dryRun" in query:
        opts["dryRun"] = [query["dryRun"]]
    policy = opts.get("propagationPolicy")
    if policy not in (None, "Orphan", "Background", "Foreground"):
        raise errors.bad_request(f"propagationPolicy {policy!r} is not supported")
    grace = opts.get("gracePeriodSeconds")
    if grace is not None and (not isinstance(grace, int) or isinstance(grace, bool)):
        raise errors.bad_request("gracePeriodSeconds must be an integer")
    return opts


# -- content negotiation

@dataclass(frozen=True)
class Output:
    table: bool = False
    include_object: str = "Metadata"


def output_format(accept: str, query: dict[str, str]) -> Output:
    for media in accept.split(","):
        parts = [p.strip() for p in media.split(";")]
        params = dict(p.partition("=")[::2] for p in parts[1:])
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io":
            return Output(True, query.get("includeObject", "Metadata"))
        if parts[0] in ("application/json", "*/*", "application/*", "") and "as" not in params:
            return Output()
    return Output()


def accepts_protobuf_openapi(accept: str) -> bool:
    return "application/com.github.proto-openapi.spec.v2" in accept
