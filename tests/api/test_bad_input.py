"""Bad requests get a Kubernetes Status and change nothing; the server keeps serving."""

from __future__ import annotations

import uuid

from tests.api.harness import Cluster


def _status(code: int, body: object, reason: str) -> None:
    assert isinstance(body, dict), body
    assert body.get("kind") == "Status" and body.get("apiVersion") == "v1" and body.get("status") == "Failure", body
    assert body.get("code") == code and body.get("reason") == reason, body


def test_bad_requests_get_status_objects(cluster: Cluster) -> None:
    ns = "bad-" + uuid.uuid4().hex[:6]
    code, body = cluster.http("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
    assert code == 201, body
    base = f"/api/v1/namespaces/{ns}/configmaps"
    _status(400, cluster.http("POST", base, b"{not json")[1], "BadRequest")
    _status(400, cluster.http("POST", base, [1, 2])[1], "BadRequest")
    _status(400, cluster.http("POST", base, {"kind": "Pod", "metadata": {"name": "x"}})[1], "BadRequest")
    _status(422, cluster.http("POST", base, {"metadata": {"name": "Not_Valid"}})[1], "Invalid")
    _status(400, cluster.http("POST", base, b"\x00", content_type="application/vnd.kubernetes.protobuf")[1],
            "BadRequest")  # not a k8s\x00 envelope; kinds without a protobuf schema are 415 (test_protobuf.py)
    _status(404, cluster.http("GET", f"{base}/missing")[1], "NotFound")
    _status(404, cluster.http("GET", "/api/v1/nonsense")[1], "NotFound")
    _status(405, cluster.http("POST", f"{base}/x")[1], "MethodNotAllowed")
    _status(400, cluster.http("GET", f"{base}?labelSelector=a%20in%20(")[1], "BadRequest")
    _status(400, cluster.http("GET", f"{base}?limit=x")[1], "BadRequest")
    _status(400, cluster.http("GET", f"{base}?limit=1&continue=garbage")[1], "BadRequest")
    code, body = cluster.http("POST", base, {"metadata": {"name": "c"}, "data": {"k": "v"}})
    assert code == 201
    _status(415, cluster.http("PATCH", f"{base}/c", {"data": {}}, content_type="application/apply-patch+yaml")[1],
            "UnsupportedMediaType")
    _status(422, cluster.http("PATCH", f"{base}/c", [{"op": "test", "path": "/data/k", "value": "no"}],
                              content_type="application/json-patch+json")[1], "Invalid")
    _status(422, cluster.http("PATCH", f"{base}/c", {"data": {"bad key!": "v"}},
                              content_type="application/merge-patch+json")[1], "Invalid")
    _status(409, cluster.http("PUT", f"{base}/c", {"metadata": {"name": "c", "resourceVersion": "1"}})[1], "Conflict")
    _status(400, cluster.http("PUT", f"{base}/c", {"metadata": {"name": "other"}})[1], "BadRequest")
    _status(409, cluster.http("DELETE", f"{base}/c", {"preconditions": {"uid": "nope"}})[1], "Conflict")
    # nothing above changed the object
    code, body = cluster.http("GET", f"{base}/c")
    assert code == 200 and body["data"] == {"k": "v"} and body["metadata"].get("labels") is None
    _status(404, cluster.http("POST", "/api/v1/namespaces/nope/configmaps", {"metadata": {"name": "x"}})[1],
            "NotFound")
    code, body = cluster.http("GET", "/healthz")
    assert code == 200 and body == "ok"


def test_discovery_documents(cluster: Cluster) -> None:
    code, body = cluster.http("GET", "/api")
    assert code == 200 and body["versions"] == ["v1"]
    code, body = cluster.http("GET", "/apis/apps/v1")
    assert code == 200 and {r["name"] for r in body["resources"]} >= {"deployments", "deployments/scale",
                                                                       "replicasets", "replicasets/status"}
    code, body = cluster.http("GET", "/apis", headers={
        "Accept": "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"})
    assert code == 200 and body["kind"] == "APIGroupList"
    code, body = cluster.http("GET", "/version")
    assert code == 200 and body["major"] == "1"


async def test_gifee_api_client(cluster: Cluster) -> None:
    from gifee.api.client import ApiClient, resource_path
    from gifee.api.errors import ApiError

    assert resource_path("deployments", "ns", "d", "scale") == "/apis/apps/v1/namespaces/ns/deployments/d/scale"
    async with ApiClient(cluster.url) as api:
        ns = "cl-" + uuid.uuid4().hex[:6]
        await api.create("namespaces", {"metadata": {"name": ns}})
        lst = await api.list("leases", namespace=ns)
        created = await api.create("leases", {"metadata": {"name": "l"}, "spec": {"holderIdentity": "me"}},
                                   namespace=ns)
        assert created["kind"] == "Lease"
        await api.patch("leases", "l", {"spec": {"holderIdentity": "you"}}, namespace=ns)
        events = []
        async for ev in api.watch("leases", namespace=ns, resource_version=lst["metadata"]["resourceVersion"],
                                  timeout_seconds=1, bookmarks=False):
            events.append((ev["type"], ev["object"]["spec"]["holderIdentity"]))
        assert events == [("ADDED", "me"), ("MODIFIED", "you")]
        try:
            await api.get("leases", "missing", namespace=ns)
            raise AssertionError("expected NotFound")
        except ApiError as e:
            assert e.code == 404 and e.reason == "NotFound"


def test_expect_100_continue(cluster: Cluster) -> None:
    """A client that waits for "100 Continue" before its body (curl, for big bodies) gets it at once;
    an unknown expectation is refused with 417."""
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(cluster.url)
    body = b'{"metadata": {"name": "expect-' + uuid.uuid4().hex[:6].encode() + b'"}, "data": {"k": "v"}}'
    with socket.create_connection((u.hostname, u.port), timeout=5) as s:
        s.sendall(b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                  b"\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")  # before the body was sent
        s.sendall(body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 201"), answer
    with socket.create_connection((u.hostname, u.port), timeout=5) as s:
        s.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\nExpect: something\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 417"), "unknown expectation"
