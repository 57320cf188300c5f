"""The pure cores: patches (property tests), selectors, continue tokens, tables, watch decisions, routing."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gifee.api import discovery, errors, patch, resources, routing, tables, versions
from gifee.api.selectors import (
    SelectorError,
    format_label_selector,
    labels_match,
    parse_field_selector,
    parse_label_selector,
)
from gifee.api.watchcore import Event, EventWindow, WatchFilter, decide

keys = st.text("abcdef", min_size=1, max_size=3)
scalars = st.one_of(st.integers(-5, 5), st.text("xyz", max_size=3), st.booleans())
json_values = st.recursive(scalars | st.lists(scalars, max_size=3),
                           lambda inner: st.dictionaries(keys, inner, max_size=4), max_leaves=12)
objects = st.dictionaries(keys, json_values, max_size=5)


@given(objects, objects)
def test_merge_patch_of_the_diff_gives_the_target(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert patch.merge_patch(a, patch.create_merge_patch(a, b)) == b


@given(objects, objects)
def test_strategic_patch_without_keyed_lists_is_a_merge_patch(a: dict[str, Any], b: dict[str, Any]) -> None:
    diff = patch.create_merge_patch(a, b)
    assert patch.strategic_merge_patch(a, diff, "ConfigMap") == patch.merge_patch(a, diff)


@given(objects, keys, json_values)
def test_json_patch_add_then_remove_restores(doc: dict[str, Any], key: str, value: Any) -> None:
    if key in doc:
        return
    added = patch.json_patch(doc, [{"op": "add", "path": f"/{key}", "value": value}])
    assert added[key] == value
    assert patch.json_patch(added, [{"op": "remove", "path": f"/{key}"}]) == doc


def test_json_patch_failures_leave_input_alone() -> None:
    doc = {"a": [1, 2]}
    with pytest.raises(patch.PatchError):
        patch.json_patch(doc, [{"op": "add", "path": "/a/-", "value": 3}, {"op": "test", "path": "/a/0", "value": 9}])
    assert doc == {"a": [1, 2]}
    assert patch.json_patch(doc, [{"op": "move", "from": "/a/0", "path": "/b"}]) == {"a": [2], "b": 1}
    assert patch.json_patch({"a~b": 1}, [{"op": "replace", "path": "/a~0b", "value": 2}]) == {"a~b": 2}


def test_strategic_merge_keys_and_directives() -> None:
    pod = {"spec": {"containers": [{"name": "a", "image": "1", "env": [{"name": "X", "value": "1"}]},
                                   {"name": "b", "image": "2"}]},
           "metadata": {"finalizers": ["f1"]}}
    out = patch.strategic_merge_patch(pod, {"spec": {"containers": [
        {"name": "a", "image": "9", "env": [{"name": "Y", "value": "2"}]},
        {"name": "b", "$patch": "delete"}, {"name": "c", "image": "3"}]},
        "metadata": {"finalizers": ["f2"]}}, "Pod")
    assert out["spec"]["containers"] == [
        {"name": "a", "image": "9", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
        {"name": "c", "image": "3"}]
    assert out["metadata"]["finalizers"] == ["f1", "f2"]
    replaced = patch.strategic_merge_patch(pod, {"spec": {"containers": [{"name": "z", "image": "0"},
                                                                         {"$patch": "replace"}]}}, "Pod")
    assert replaced["spec"]["containers"] == [{"name": "z", "image": "0"}]
    ordered = patch.strategic_merge_patch(pod, {"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}},
                                          "Pod")
    assert [c["name"] for c in ordered["spec"]["containers"]] == ["b", "a"]
    svc = {"spec": {"ports": [{"port": 80, "name": "http"}]}}
    assert patch.strategic_merge_patch(svc, {"spec": {"ports": [{"port": 443, "name": "https"}]}}, "Service")[
        "spec"]["ports"] == [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]
    retained = patch.strategic_merge_patch({"s": {"type": "A", "ru": {"x": 1}}},
                                           {"s": {"type": "B", "$retainKeys": ["type"]}}, "Deployment")
    assert retained == {"s": {"type": "B"}}
    assert patch.strategic_merge_patch({"m": {"a": 1}}, {"m": {"$patch": "replace", "b": 2}}, "X") == {"m": {"b": 2}}
    assert patch.strategic_merge_patch({"l": ["a", "b"]}, {"$deleteFromPrimitiveList/l": ["a"]}, "X") == {"l": ["b"]}


label_keys = st.from_regex(r"\A[a-z]([a-z0-9.-]{0,5}[a-z0-9])?\Z")
label_values = st.from_regex(r"\A([a-z0-9]([a-z0-9._-]{0,5}[a-z0-9])?)?\Z")


@st.composite
def requirements(draw: st.DrawFn) -> str:
    key = draw(label_keys)
    op = draw(st.sampled_from(["=", "==", "!=", "in", "notin", "exists", "!"]))
    if op in ("in", "notin"):
        vals = draw(st.lists(label_values.filter(bool), min_size=1, max_size=3))
        return f"{key} {op} ({','.join(vals)})"
    if op == "exists":
        return key
    if op == "!":
        return "!" + key
    return f"{key}{op}{draw(label_values)}"


@given(st.lists(requirements(), min_size=0, max_size=4), st.dictionaries(label_keys, label_values, max_size=4))
def test_label_selector_round_trips(reqs: list[str], labels: dict[str, str]) -> None:
    sel = parse_label_selector(",".join(reqs))
    assert len(sel) == len(reqs)
    again = parse_label_selector(format_label_selector(sel))
    assert again == sel
    assert labels_match(sel, labels) == labels_match(again, labels)


def test_label_selector_semantics_and_errors() -> None:
    sel = parse_label_selector("env in (prod, qa), tier!=front,!legacy,app")
    assert labels_match(sel, {"env": "qa", "app": "x"})
    assert not labels_match(sel, {"env": "qa", "app": "x", "legacy": ""})
    assert not labels_match(sel, {"env": "dev", "app": "x"})
    assert labels_match(parse_label_selector("a notin (x)"), {})
    for bad in ("a in ()", "a=b=c", ",a", "a,", "a in (x", "-x=1", "a=" + "v" * 64, "a b"):
        with pytest.raises(SelectorError):
            parse_label_selector(bad)
    fs = parse_field_selector("metadata.name=x,status.phase!=Running", ("metadata.name", "status.phase"))
    assert [(f.field, f.value, f.negate) for f in fs] == [("metadata.name", "x", False), ("status.phase", "Running", True)]
    with pytest.raises(SelectorError):
        parse_field_selector("spec.x=1", ("metadata.name",))


def test_continue_tokens() -> None:
    tok = versions.encode_continue(42, "ns/name\x00")
    assert versions.decode_continue(tok) == versions.ContinueToken(42, "ns/name\x00")
    for bad in ("???", "e30", versions.encode_continue(1, "/abs"), versions.encode_continue(3, "../x")):
        with pytest.raises(errors.ApiError) as e:
            versions.decode_continue(bad)
        assert e.value.code == 400


def test_watch_decisions_keep_the_view_consistent() -> None:
    flt = WatchFilter("ns", "", parse_label_selector("app=a"))

    def obj(labels: dict[str, str], ns: str = "ns") -> dict[str, Any]:
        return {"metadata": {"name": "x", "namespace": ns, "labels": labels}}

    assert decide(flt, Event("MODIFIED", obj({"app": "a"}), obj({"app": "b"}), 5)) == ("ADDED", obj({"app": "a"}))
    assert decide(flt, Event("MODIFIED", obj({"app": "b"}), obj({"app": "a"}), 5))[0] == "DELETED"  # type: ignore[index]
    assert decide(flt, Event("MODIFIED", obj({"app": "a"}), obj({"app": "a"}), 5))[0] == "MODIFIED"  # type: ignore[index]
    assert decide(flt, Event("ADDED", obj({"app": "a"}, "other"), None, 5)) is None
    window = EventWindow(2, 10)
    for rev in (11, 12, 13):
        window.append(Event("ADDED", obj({}), None, rev))
    assert window.since(10) is None and [e.revision for e in window.since(11) or []] == [12, 13]
    assert window.since(13) == []


def test_tables_and_durations() -> None:
    now = dt.datetime(2016, 12, 13, 12, 0, 0, tzinfo=dt.UTC)
    assert [tables.human_duration(s) for s in (5, 119, 150, 600, 3600 * 3 + 60, 3600 * 30, 86400 * 3 + 3600)] == [
        "5s", "119s", "2m30s", "10m", "3h1m", "30h", "3d1h"]
    pod = {"metadata": {"name": "p", "creationTimestamp": "2016-12-13T11:59:00Z"},
           "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
           "status": {"phase": "Running", "containerStatuses": [{"ready": True, "restartCount": 2}]}}
    t = tables.to_table("Pod", [pod], now=now)
    assert [c["name"] for c in t["columnDefinitions"]][:5] == ["Name", "Ready", "Status", "Restarts", "Age"]
    assert t["rows"][0]["cells"][:5] == ["p", "1/2", "Running", 2, "60s"]
    assert t["rows"][0]["object"]["kind"] == "PartialObjectMetadata"


def test_routing_and_discovery() -> None:
    t = routing.parse_resource_path("/apis/apps/v1/namespaces/x/deployments/d/scale")
    assert t and (t.res.kind, t.namespace, t.name, t.subresource) == ("Deployment", "x", "d", "scale")
    t = routing.parse_resource_path("/api/v1/namespaces/x/status")
    assert t and (t.res.kind, t.name, t.subresource) == ("Namespace", "x", "status")
    t = routing.parse_resource_path("/api/v1/watch/namespaces/x/pods")
    assert t and t.watch_prefix and t.res.plural == "pods" and t.namespace == "x"
    assert routing.parse_resource_path("/api/v1/namespaces/x/pods/p/bogus") is None
    assert routing.parse_resource_path("/apis/apps/v2/deployments") is None
    assert routing.output_format("application/json;as=Table;v=v1;g=meta.k8s.io,application/json", {}).table
    assert not routing.output_format("application/json", {}).table
    doc = discovery.resource_list("", "v1")
    assert doc is not None
    pods = next(r for r in doc["resources"] if r["name"] == "pods")
    assert pods["shortNames"] == ["po"] and pods["categories"] == ["all"]
    evict = next(r for r in doc["resources"] if r["name"] == "pods/eviction")
    assert (evict["group"], evict["version"], evict["kind"]) == ("policy", "v1", "Eviction")
    assert {g["name"] for g in discovery.api_group_list()["groups"]} == {"apps", "policy", "coordination.k8s.io"}
    assert len({(r.group, r.plural) for r in resources.RESOURCES}) == len(resources.RESOURCES)
