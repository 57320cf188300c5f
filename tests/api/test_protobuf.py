"""Kubernetes protobuf request bodies: the codec's properties, its table against the
descriptors kubectl 1.32 carries, and kubectl's typed commands against the API server
(on gifee's store and on etcd), with kubectl 1.20 (JSON) doing the same."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import uuid
import zlib
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gifee.api import protobuf as pb
from tests.api.harness import KUBECTL_120, KUBECTL_132, Cluster

PB = pb.MEDIA_TYPE

# -- strategies: JSON dicts within the schema

_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=8)
_times = st.datetimes(min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2200, 1, 1)).map(
    lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ"))
_base64 = st.binary(max_size=12).map(lambda b: base64.b64encode(b).decode())
_quantities = st.sampled_from(["0", "1", "100m", "1Gi", "2.5", "512Mi"])


def _scalar(kind: str, nonzero: bool) -> st.SearchStrategy[Any]:
    if kind == pb.STRING:
        return _names if nonzero else st.one_of(st.just(""), _names)
    if kind == pb.BYTES:
        return _base64.filter(lambda s: s != "") if nonzero else _base64
    if kind == pb.BOOL:
        return st.just(True) if nonzero else st.booleans()
    if kind in (pb.INT32, pb.INT64):
        bits = 31 if kind == pb.INT32 else 63
        ints = st.integers(-(1 << bits), (1 << bits) - 1)
        return ints.filter(bool) if nonzero else ints
    if kind == pb.TIME:
        return _times
    if kind == pb.QUANTITY:
        return _quantities
    if kind == pb.INTORSTR:
        return st.one_of(st.integers(-(1 << 31), (1 << 31) - 1).filter(lambda n: n != 0 or not nonzero),
                         _names if nonzero else st.one_of(st.just(""), _names))
    raise AssertionError(kind)


@cache
def message_strategy(name: str, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    optional: dict[str, st.SearchStrategy[Any]] = {}
    inline: list[st.SearchStrategy[dict[str, Any]]] = []
    for f in pb.SCHEMA[name].values():
        if f.card == pb.INLINE:
            inline.append(message_strategy(f.message, depth + 1))
            continue
        if f.kind == pb.MSG:
            if depth > 6:
                continue
            sub = message_strategy(f.message, depth + 1)
            optional[f.json] = st.lists(sub, min_size=1, max_size=2) if f.card == pb.REP else sub
        elif f.card == pb.REP:
            optional[f.json] = st.lists(_scalar(f.kind, False), min_size=1, max_size=3)
        elif f.card == pb.MAP:
            optional[f.json] = st.dictionaries(_names, _scalar(f.kind, False), min_size=1, max_size=3)
        else:
            optional[f.json] = _scalar(f.kind, f.card == pb.ONE)
    base = st.fixed_dictionaries({}, optional=optional)
    if not inline:
        return base
    return st.tuples(base, *inline).map(lambda parts: {k: v for part in parts for k, v in part.items()})


_objects = st.sampled_from(sorted(pb.KINDS.items())).flatmap(
    lambda item: message_strategy(item[1]).map(
        lambda body: {"apiVersion": item[0][0], "kind": item[0][1], **body}))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_objects)
def test_encode_then_decode_is_identity(obj: dict[str, Any]) -> None:
    data = pb.encode_object(obj)
    assert data.startswith(b"k8s\x00")
    assert pb.decode_object(data) == obj


def _unknown_fields(draw: Callable[[st.SearchStrategy[Any]], Any]) -> bytes:
    out = b""
    for _ in range(draw(st.integers(0, 3))):
        number = draw(st.integers(100, 5000))
        wire = draw(st.sampled_from([0, 1, 2, 5]))
        if wire == 0:
            out += pb.encode_varint(number << 3) + pb.encode_varint(draw(st.integers(0, 1 << 63)))
        elif wire == 1:
            out += pb.encode_varint(number << 3 | 1) + draw(st.binary(min_size=8, max_size=8))
        elif wire == 5:
            out += pb.encode_varint(number << 3 | 5) + draw(st.binary(min_size=4, max_size=4))
        else:
            payload = draw(st.binary(max_size=10))
            out += pb.encode_varint(number << 3 | 2) + pb.encode_varint(len(payload)) + payload
    return out


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_unknown_fields_are_skipped(data: st.DataObject) -> None:
    body = data.draw(message_strategy("apps.v1.Deployment"))
    raw = pb.encode_message("apps.v1.Deployment", body)
    noisy = _unknown_fields(data.draw) + raw + _unknown_fields(data.draw)
    assert pb.decode_message("apps.v1.Deployment", noisy) == body


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_garbage_raises_protobuf_error_only(data: bytes) -> None:
    for body in (data, b"k8s\x00" + data):
        try:
            pb.decode_object(body)
        except pb.ProtobufError:
            pass
    try:
        pb.decode_message("apps.v1.Deployment", data)
    except pb.ProtobufError:
        pass


def test_wire_details() -> None:
    # negative int32/int64 are 10-byte varints; IntOrString, Quantity and Time have their own shapes
    assert pb.encode_varint(-1) == b"\xff" * 9 + b"\x01"
    svc = {"spec": {"ports": [{"port": 80, "targetPort": "http"}, {"port": 0, "targetPort": 8080}]}}
    assert pb.decode_message("core.v1.Service", pb.encode_message("core.v1.Service", svc)) == svc
    pod = pb.encode_message("core.v1.Pod", {"spec": {"terminationGracePeriodSeconds": -5}})
    assert pb.decode_message("core.v1.Pod", pod) == {"spec": {"terminationGracePeriodSeconds": -5}}
    meta = pb.decode_message("meta.v1.ObjectMeta", pb.encode_message(
        "meta.v1.ObjectMeta", {"creationTimestamp": "2016-05-04T03:02:01Z"}))
    assert meta == {"creationTimestamp": "2016-05-04T03:02:01Z"}
    # a zero creationTimestamp (what kubectl sends) is JSON's null: dropped
    assert pb.decode_message("meta.v1.ObjectMeta", b"\x42\x00\x0a\x01x") == {"name": "x"}
    # omitempty zeros from Go's marshaller are dropped; pointers keep them
    spec = b"\x08\x00" + b"\x28\x00"  # replicas (pointer) = 0, minReadySeconds = 0
    assert pb.decode_message("apps.v1.DeploymentSpec", spec) == {"replicas": 0}
    # packed repeated varints are accepted
    packed = b"\x22\x03\x01\x02\x03"
    assert pb.decode_message("core.v1.PodSecurityContext", packed) == {"supplementalGroups": [1, 2, 3]}
    with pytest.raises(pb.UnsupportedKind):
        pb.decode_object(pb.encode_unknown("batch/v1", "Job", b""))
    # a set field the table lacks (PodSpec.affinity = 18): skipped, or refused when strict;
    # empty ones (what Go writes for unset non-pointer fields) and managedFields pass
    affinity = _pod_with_uncovered_field()
    assert pb.decode_object(affinity) == {"apiVersion": "v1", "kind": "Pod", "spec": {"restartPolicy": "Never"}}
    with pytest.raises(pb.UnsupportedField):
        pb.decode_object(affinity, strict=True)
    empty = b"\x12\x03\x92\x01\x00" + b"\x0a\x04\x8a\x01\x01\x00"  # spec.affinity = "", metadata.managedFields
    assert pb.decode_message("core.v1.Pod", empty, strict=True) == {"spec": {}, "metadata": {}}
    with pytest.raises(pb.ProtobufError):
        pb.decode_object(b"k8s\x00\x12\x05ab")  # truncated


def _pod_with_uncovered_field() -> bytes:
    spec = b"\x1a\x05Never" + b"\x92\x01\x02\x0a\x00"  # restartPolicy, affinity {nodeAffinity {}}
    return pb.encode_unknown("v1", "Pod", b"\x12" + bytes([len(spec)]) + spec)


# -- the table against kubectl 1.32's own descriptors

_PROTO_TYPES = {pb.STRING: 9, pb.BYTES: 12, pb.BOOL: 8, pb.INT32: 5, pb.INT64: 3, pb.DOUBLE: 1}
_SPECIAL = {pb.TIME: ".k8s.io.apimachinery.pkg.apis.meta.v1.Time",
            pb.MICROTIME: ".k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime",
            pb.QUANTITY: ".k8s.io.apimachinery.pkg.api.resource.Quantity",
            pb.INTORSTR: ".k8s.io.apimachinery.pkg.util.intstr.IntOrString"}


def _full(name: str) -> str:
    return (".k8s.io.apimachinery.pkg.apis." if name.startswith("meta.") else ".k8s.io.api.") + name


@cache
def kubectl_files() -> dict[str, Any]:
    """The generated.proto FileDescriptorProtos embedded (gzipped) in kubectl 1.32, by file name."""
    descriptor_pb2 = pytest.importorskip("google.protobuf.descriptor_pb2")
    if not Path(KUBECTL_132).exists():
        pytest.skip("kubectl 1.32 not installed")
    data = Path(KUBECTL_132).resolve().read_bytes()
    out: dict[str, Any] = {}
    for m in re.finditer(rb"\x1f\x8b\x08\x00\x00\x00\x00\x00", data):
        try:
            raw = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[m.start():m.start() + 400_000])
        except zlib.error:
            continue
        if b"generated.proto" not in raw[:120]:
            continue
        fd = descriptor_pb2.FileDescriptorProto()
        fd.ParseFromString(raw)
        out[fd.name] = fd
    return out


@cache
def kubectl_descriptors() -> dict[str, Any]:
    """Message descriptors by full name (.k8s.io.api.core.v1.Pod, nested map entries included)."""
    out: dict[str, Any] = {}

    def add(msg: Any, prefix: str) -> None:
        out[prefix + msg.name] = msg
        for nested in msg.nested_type:
            add(nested, prefix + msg.name + ".")
    for fd in kubectl_files().values():
        for msg in fd.message_type:
            add(msg, f".{fd.package}.")
    return out


def test_schema_matches_kubectl_descriptors() -> None:
    if not Path(KUBECTL_132).exists():
        pytest.skip("kubectl 1.32 not installed")
    desc = kubectl_descriptors()
    assert _full("core.v1.Pod") in desc
    checked = 0
    for name, table in pb.SCHEMA.items():
        msg = desc[_full(name)]
        by_number = {f.number: f for f in msg.field}
        for number, f in table.items():
            d = by_number.get(number)
            assert d is not None, f"{name} field {number} does not exist"
            if f.card == pb.INLINE:
                assert d.type == 11 and d.type_name == _full(f.message), (name, number)
                continue
            assert d.name == f.json, (name, number, d.name, f.json)
            assert (d.label == 3) == (f.card in (pb.REP, pb.MAP)), (name, number)
            value = d
            if f.card == pb.MAP:
                entry = desc[d.type_name]
                assert entry.options.map_entry, (name, number)
                key, value = entry.field
                assert key.type == 9
            if f.kind == pb.MSG:
                assert value.type == 11 and value.type_name == _full(f.message), (name, number)
            elif f.kind in _SPECIAL:
                assert value.type == 11 and value.type_name == _SPECIAL[f.kind], (name, number)
            else:
                assert value.type == _PROTO_TYPES[f.kind], (name, number, value.type)
            checked += 1
    assert checked > 200


def test_google_protobuf_reads_what_we_write() -> None:
    """An independent decoder, built from kubectl's descriptors, parses our bytes to the same values."""
    if not Path(KUBECTL_132).exists():
        pytest.skip("kubectl 1.32 not installed")
    from google.protobuf import descriptor_pool, json_format, message_factory

    files = kubectl_files()
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(name: str) -> None:
        if name in added:
            return
        fd = type(files[name])()
        fd.CopyFrom(files[name])
        del fd.dependency[:]
        fd.ClearField("options")
        fd.dependency.extend(d for d in files[name].dependency if d in files)
        for d in fd.dependency:
            add(d)
        pool.Add(fd)
        added.add(name)
    add("k8s.io/api/apps/v1/generated.proto")
    dep = {"metadata": {"name": "web", "labels": {"app": "web"}}, "spec": {
        "replicas": 3, "selector": {"matchLabels": {"app": "web"}},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{
            "name": "nginx", "image": "nginx:1.25", "ports": [{"containerPort": 80, "protocol": "TCP"}],
            "resources": {"limits": {"cpu": "500m"}}, "env": [{"name": "A", "value": "b"}]}]}}}}
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("k8s.io.api.apps.v1.Deployment"))
    parsed = cls.FromString(pb.encode_message("apps.v1.Deployment", dep))
    as_dict = json_format.MessageToDict(parsed, preserving_proto_field_name=True)
    spec = as_dict["spec"]
    assert spec["replicas"] == 3 and spec["selector"] == {"matchLabels": {"app": "web"}}
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": {"type": "1", "intVal": 0, "strVal": "25%"},
                                                 "maxUnavailable": {"type": "0", "intVal": 1, "strVal": ""}}
    container = spec["template"]["spec"]["containers"][0]
    assert container["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert container["resources"] == {"limits": {"cpu": {"string": "500m"}}}
    # and back: google's bytes decode to the dict
    assert pb.decode_message("apps.v1.Deployment", parsed.SerializeToString()) == dep


# -- kubectl against the API server

def _ns() -> str:
    return "pb-" + uuid.uuid4().hex[:8]


def _get(cluster: Cluster, path: str) -> dict[str, Any]:
    code, body = cluster.http("GET", path)
    assert code == 200, body
    assert isinstance(body, dict)
    return body


KUBECTLS = [pytest.param(KUBECTL_132, id="kubectl-1.32"), pytest.param(KUBECTL_120, id="kubectl-1.20")]


@pytest.mark.parametrize("kubectl", KUBECTLS)
def test_kubectl_create_commands(cluster: Cluster, kubectl: str, tmp_path: Path) -> None:
    ns = _ns()
    k = cluster.kubectl
    assert f"namespace/{ns} created" in k(kubectl, "create", "namespace", ns).stdout
    assert _get(cluster, f"/api/v1/namespaces/{ns}")["status"]["phase"] == "Active"

    k(kubectl, "-n", ns, "create", "configmap", "cm", "--from-literal=a=b", "--from-literal=c=d")
    blob = bytes(range(256))
    (tmp_path / "blob.bin").write_bytes(blob)
    (tmp_path / "t.txt").write_text("hello\n")
    k(kubectl, "-n", ns, "create", "configmap", "files", f"--from-file={tmp_path / 'blob.bin'}",
      f"--from-file={tmp_path / 't.txt'}")
    cm = _get(cluster, f"/api/v1/namespaces/{ns}/configmaps/cm")
    assert cm["data"] == {"a": "b", "c": "d"} and cm["metadata"]["namespace"] == ns
    files = _get(cluster, f"/api/v1/namespaces/{ns}/configmaps/files")
    assert files["data"] == {"t.txt": "hello\n"}
    assert base64.b64decode(files["binaryData"]["blob.bin"]) == blob

    k(kubectl, "-n", ns, "create", "secret", "generic", "s", "--from-literal=user=admin", "--from-literal=pw=s3cr=t")
    secret = _get(cluster, f"/api/v1/namespaces/{ns}/secrets/s")
    assert {key: base64.b64decode(v).decode() for key, v in secret["data"].items()} == {"user": "admin",
                                                                                         "pw": "s3cr=t"}
    assert secret["type"] == "Opaque"
    k(kubectl, "-n", ns, "create", "secret", "docker-registry", "reg", "--docker-server=r.example",
      "--docker-username=u", "--docker-password=p")
    reg = _get(cluster, f"/api/v1/namespaces/{ns}/secrets/reg")
    assert reg["type"] == "kubernetes.io/dockerconfigjson"
    assert "r.example" in json.loads(base64.b64decode(reg["data"][".dockerconfigjson"]))["auths"]

    k(kubectl, "-n", ns, "create", "deployment", "web", "--image=nginx:1.25", "--replicas=3", "--port=80")
    dep = _get(cluster, f"/apis/apps/v1/namespaces/{ns}/deployments/web")
    assert dep["spec"]["replicas"] == 3 and dep["spec"]["selector"] == {"matchLabels": {"app": "web"}}
    assert dep["metadata"]["labels"] == {"app": "web"} and dep["metadata"]["generation"] == 1
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "nginx:1.25" and container["ports"][0]["containerPort"] == 80
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"  # server defaults applied
    k(kubectl, "-n", ns, "create", "deployment", "zero", "--image=busybox", "--replicas=0")
    assert _get(cluster, f"/apis/apps/v1/namespaces/{ns}/deployments/zero")["spec"]["replicas"] == 0

    k(kubectl, "-n", ns, "create", "service", "clusterip", "web", "--tcp=80:8080", "--tcp=443:https")
    svc = _get(cluster, f"/api/v1/namespaces/{ns}/services/web")
    ports = {p["port"]: p["targetPort"] for p in svc["spec"]["ports"]}
    assert ports == {80: 8080, 443: "https"} and svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["selector"] == {"app": "web"}
    k(kubectl, "-n", ns, "create", "service", "externalname", "ext", "--external-name=example.com")
    assert _get(cluster, f"/api/v1/namespaces/{ns}/services/ext")["spec"]["externalName"] == "example.com"

    if kubectl == KUBECTL_132:  # 1.20 creates policy/v1beta1 PDBs, which are not served
        k(kubectl, "-n", ns, "create", "poddisruptionbudget", "pdb", "--selector=app=web", "--min-available=50%")
        pdb = _get(cluster, f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/pdb")
        assert pdb["spec"]["minAvailable"] == "50%"
        assert pdb["spec"]["selector"] == {"matchLabels": {"app": "web"}}

    k(kubectl, "-n", ns, "run", "solo", "--image=busybox", "--labels=x=y", "--env=A=B", "--port=81")
    pod = _get(cluster, f"/api/v1/namespaces/{ns}/pods/solo")
    assert pod["metadata"]["labels"] == {"x": "y"}
    assert pod["spec"]["containers"][0]["env"] == [{"name": "A", "value": "B"}]

    out = k(kubectl, "-n", ns, "expose", "deployment", "web", "--name=exposed", "--port=8000",
            "--target-port=80").stdout
    assert "exposed" in out
    exposed = _get(cluster, f"/api/v1/namespaces/{ns}/services/exposed")
    assert exposed["spec"]["ports"][0]["port"] == 8000 and exposed["spec"]["selector"] == {"app": "web"}

    k(kubectl, "-n", ns, "scale", "deployment", "web", "--replicas=1")
    assert _get(cluster, f"/apis/apps/v1/namespaces/{ns}/deployments/web")["spec"]["replicas"] == 1

    # an existing name: the server's AlreadyExists reaches kubectl as it does for JSON
    again = k(kubectl, "-n", ns, "create", "configmap", "cm", "--from-literal=a=b", check=False)
    assert again.returncode != 0 and "already exists" in again.stderr
    if kubectl == KUBECTL_132:  # 1.20 looks for dry-run support in the OpenAPI document, which names no kinds
        k(kubectl, "-n", ns, "create", "configmap", "dry", "--from-literal=a=b", "--dry-run=server")
        assert cluster.http("GET", f"/api/v1/namespaces/{ns}/configmaps/dry")[0] == 404


@pytest.mark.parametrize("kubectl", KUBECTLS)
def test_kubectl_drain_evicts(cluster: Cluster, kubectl: str) -> None:
    ns, node = _ns(), "node-" + uuid.uuid4().hex[:6]
    cluster.kubectl(kubectl, "create", "namespace", ns)
    assert cluster.http("POST", "/api/v1/nodes", {"metadata": {"name": node}})[0] == 201
    pod = {"metadata": {"name": "p"}, "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}}
    assert cluster.http("POST", f"/api/v1/namespaces/{ns}/pods", pod)[0] == 201
    out = cluster.kubectl(kubectl, "drain", node, "--force", "--grace-period=0", "--timeout=30s")
    assert "evicted" in out.stdout or "evicted" in out.stderr
    assert _get(cluster, f"/api/v1/nodes/{node}")["spec"]["unschedulable"] is True
    assert cluster.http("GET", f"/api/v1/namespaces/{ns}/pods/p")[0] == 404


def test_protobuf_bodies_over_http(cluster: Cluster) -> None:
    ns = _ns()
    body = pb.encode_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    code, created = cluster.http("POST", "/api/v1/namespaces", body, content_type=PB,
                                 headers={"Accept": f"{PB},application/json"})
    assert code == 201 and created["metadata"]["name"] == ns, created
    # update (PUT) with a protobuf body
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}}
    assert cluster.http("POST", f"/api/v1/namespaces/{ns}/configmaps", pb.encode_object(cm), content_type=PB)[0] == 201
    current = _get(cluster, f"/api/v1/namespaces/{ns}/configmaps/c")
    current["data"] = {"a": "2"}
    code, updated = cluster.http("PUT", f"/api/v1/namespaces/{ns}/configmaps/c", pb.encode_object(current),
                                 content_type=PB)
    assert code == 200 and updated["data"] == {"a": "2"}, updated
    # eviction of an unbound pod with DeleteOptions in protobuf
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    assert cluster.http("POST", f"/api/v1/namespaces/{ns}/pods", pb.encode_object(pod), content_type=PB)[0] == 201
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p", "namespace": ns},
                "deleteOptions": {"gracePeriodSeconds": 0}}
    code, status = cluster.http("POST", f"/api/v1/namespaces/{ns}/pods/p/eviction", pb.encode_object(eviction),
                                content_type=PB)
    assert code == 201, status
    assert cluster.http("GET", f"/api/v1/namespaces/{ns}/pods/p")[0] == 404
    # a kind without a schema: 415 with a Status that says which kinds work; garbage: 400
    code, status = cluster.http("POST", f"/apis/apps/v1/namespaces/{ns}/deployments",
                                pb.encode_unknown("apps/v1", "StatefulSet", b""), content_type=PB)
    assert code == 415 and status["reason"] == "UnsupportedMediaType" and "StatefulSet" in status["message"]
    assert "Deployment" in status["message"]
    code, status = cluster.http("POST", f"/api/v1/namespaces/{ns}/configmaps", b"k8s\x00\x12\x09abc",
                                content_type=PB)
    assert code == 400 and status["reason"] == "BadRequest", status
    # a field the table does not cover is refused, not dropped
    code, status = cluster.http("POST", f"/api/v1/namespaces/{ns}/pods", _pod_with_uncovered_field(),
                                content_type=PB)
    assert code == 415 and "core.v1.PodSpec: field 18" in status["message"], status
