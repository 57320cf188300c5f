"""Discovery documents built from the resource registry.

Rules: /api answers APIVersions, /api/v1 and /apis/<g>/<v> an APIResourceList,
/apis an APIGroupList, /apis/<g> an APIGroup, /version the version Info. These
are the classic (unaggregated) formats: a kubectl that asks for aggregated
discovery (apidiscovery.k8s.io/v2) in Accept also lists plain application/json,
and client-go falls back to the classic documents when the response's
Content-Type says so. Pure: dicts in, dicts out.
"""

from __future__ import annotations

import platform
from typing import Any

from gifee.api.resources import GROUP_ORDER, Resource, group_versions, resources_of

GIT_VERSION = "v1.32.0-gifee"


def version_info() -> dict[str, str]:
    return {
        "major": "1", "minor": "32", "gitVersion": GIT_VERSION, "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean", "buildDate": "2016-12-13T00:00:00Z", "goVersion": "go1.23 (gifee: python"
        f"{platform.python_version()})", "compiler": "gc", "platform": "linux/amd64",
    }


def api_versions(server_address: str) -> dict[str, Any]:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}


def _resource_entries(r: Resource) -> list[dict[str, Any]]:
    main: dict[str, Any] = {"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                            "kind": r.kind, "verbs": list(r.verbs)}
    if r.short_names:
        main["shortNames"] = list(r.short_names)
    if r.categories:
        main["categories"] = list(r.categories)
    out = [main]
    for sub in r.subresources:
        entry: dict[str, Any] = {"name": f"{r.plural}/{sub.name}", "singularName": "", "namespaced": r.namespaced,
                                 "kind": sub.kind, "verbs": list(sub.verbs)}
        if sub.group:
            entry["group"] = sub.group
            entry["version"] = sub.version
        out.append(entry)
    return out


def resource_list(group: str, version: str) -> dict[str, Any] | None:
    resources = resources_of(group, version)
    if not resources:
        return None
    entries = [e for r in resources for e in _resource_entries(r)]
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version, "resources": entries}


def api_group(group: str) -> dict[str, Any] | None:
    versions = group_versions().get(group)
    if not group or not versions:
        return None
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": gvs, "preferredVersion": gvs[0]}


def api_group_list() -> dict[str, Any]:
    groups = [g for g in (api_group(name) for name in GROUP_ORDER if name) if g is not None]
    for g in groups:
        del g["kind"], g["apiVersion"]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


# A minimal OpenAPI v2 document in gnostic's protobuf encoding (swagger "2.0", info
# {title, version}). kubectl asks for protobuf; a document that names no kinds makes
# its client-side validation skip every kind, and its fieldValidation probe find no
# server-side support, so `kubectl apply` works without --validate=false.
def _pb_string(field_number: int, value: str) -> bytes:
    data = value.encode()
    return bytes([field_number << 3 | 2, len(data)]) + data


def openapi_v2_protobuf() -> bytes:
    info = _pb_string(1, "gifee") + _pb_string(2, GIT_VERSION)
    return _pb_string(1, "2.0") + bytes([2 << 3 | 2, len(info)]) + info


def openapi_v2_json() -> dict[str, Any]:
    return {"swagger": "2.0", "info": {"title": "gifee", "version": GIT_VERSION}, "paths": {}, "definitions": {}}
