"""End to end: gifee store + API server + `gifee agent` running real pods (root).

One node serves the module (restart back-off base 1 s); the agent-restart test runs
last and kills the agent with SIGKILL while pods run."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.agent.harness import IMAGE, NODE, Node, make_node
from tests.api.harness import KUBECTL_120, KUBECTL_132

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    yield from make_node("--backoff-base", "1", "--backoff-max", "8", "--volume-refresh", "1")


def cstatus(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(next(c for c in pod["status"]["containerStatuses"] if c["name"] == name))


def cond(pod: dict[str, Any], kind: str) -> str:
    return str(next(c["status"] for c in pod["status"]["conditions"] if c["type"] == kind))


def logs(node: Node, pod: str, container: str, *extra: str) -> str:
    return node.kubectl(KUBECTL_132, "logs", pod, "-c", container, *extra).stdout


def test_node_registered_with_capacity_and_lease(node: Node) -> None:
    n = node.api("GET", f"/api/v1/nodes/{NODE}")
    status = n["status"]
    assert status["capacity"]["pods"] == "110" and int(status["capacity"]["cpu"]) >= 1
    assert status["capacity"]["memory"].endswith("Ki")
    assert {"type": "InternalIP", "address": "127.0.0.1"} in status["addresses"]
    assert next(c for c in status["conditions"] if c["type"] == "Ready")["status"] == "True"
    assert status["daemonEndpoints"]["kubeletEndpoint"]["Port"] == node.port
    lease = node.api("GET", f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{NODE}")
    first = lease["spec"]["renewTime"]
    node.wait("lease renewal", lambda: node.api(
        "GET", f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{NODE}")["spec"]["renewTime"] != first,
        timeout=10)


def test_two_containers_share_localhost_and_empty_dir(node: Node) -> None:
    node.create_pod("pair", [
        {"name": "web", "command": ["sh", "-c", "echo hello-from-web > /www/index.html; httpd -f -p 8080 -h /www"],
         "volumeMounts": [{"name": "www", "mountPath": "/www"}]},
        {"name": "client", "command": ["sh", "-c", "until wget -qO- http://127.0.0.1:8080/; do sleep 0.2; done; "
                                                   "cat /shared/index.html; sleep 3600"],
         "volumeMounts": [{"name": "www", "mountPath": "/shared", "readOnly": True}]},
    ], volumes=[{"name": "www", "emptyDir": {}}])
    pod = node.wait_phase("pair", "Running")
    assert pod["status"]["podIP"].startswith("10.25.0.")
    assert pod["status"]["hostIP"] == "127.0.0.1"
    node.wait("client output", lambda: logs(node, "pair", "client").count("hello-from-web") == 2)
    pod = node.wait("Ready", lambda: (p := node.pod("pair")) and cond(p, "Ready") == "True" and p)
    assert {c["type"] for c in pod["status"]["conditions"]} == {"PodScheduled", "Initialized", "ContainersReady",
                                                                 "Ready"}
    assert all(c["ready"] and c["started"] and "running" in c["state"] for c in pod["status"]["containerStatuses"])


def test_memory_empty_dir_is_a_sized_tmpfs(node: Node) -> None:
    node.create_pod("mem", [{"name": "c", "volumeMounts": [{"name": "cache", "mountPath": "/cache"}],
                             "command": ["sh", "-c", "grep ' /cache ' /proc/mounts | cut -d' ' -f3; "
                                                     "dd if=/dev/zero of=/cache/big bs=1024 count=2048 2>/dev/null "
                                                     "|| echo full; sleep 3600"]}],
                    volumes=[{"name": "cache", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}])
    node.wait_phase("mem", "Running")
    node.wait("output", lambda: logs(node, "mem", "c") == "tmpfs\nfull\n")
    uid = node.pod("mem")["metadata"]["uid"]
    assert uid in open("/proc/mounts").read()
    node.api("DELETE", "/api/v1/namespaces/default/pods/mem", {"gracePeriodSeconds": 0})
    node.wait("mem gone", lambda: not node.pod("mem"), timeout=20)
    node.wait("tmpfs unmounted", lambda: uid not in open("/proc/mounts").read())
    node.wait("volumes removed", lambda: not (node.data_dir / "agent" / "pods" / uid).exists())


def test_env_config_maps_secrets_and_volumes(node: Node) -> None:
    node.api("POST", "/api/v1/namespaces/default/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
        "data": {"color": "blue", "app.conf": "threads=4\n"}})
    node.api("POST", "/api/v1/namespaces/default/secrets", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec"},
        "data": {"password": base64.b64encode(b"s3cret").decode()}})
    hostdir = node.workdir / "hostpath"
    hostdir.mkdir()
    (hostdir / "from-host").write_text("host-file\n")
    script = ("echo COLOR=$COLOR PW=$PW NAME=$MY_NAME NS=$MY_NS IP=$MY_IP CFG_color=$CFG_color PLAIN=$PLAIN; "
              "cat /etc/app/app.conf /etc/sec/password; echo; cat /host/from-host; echo written > /host/out; "
              "sleep 3600")
    node.create_pod("envpod", [{
        "name": "main", "command": ["sh", "-c", script],
        "env": [{"name": "PLAIN", "value": "x-$(COLOR_MISSING)"},
                {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "color"}}},
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
                {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "MY_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
        "volumeMounts": [{"name": "conf", "mountPath": "/etc/app"}, {"name": "sec", "mountPath": "/etc/sec"},
                         {"name": "host", "mountPath": "/host"}],
        "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
    }], volumes=[{"name": "conf", "configMap": {"name": "cfg"}}, {"name": "sec", "secret": {"secretName": "sec"}},
                 {"name": "host", "hostPath": {"path": str(hostdir)}}])
    pod = node.wait_phase("envpod", "Running")
    out = node.wait("output", lambda: (o := logs(node, "envpod", "main")) and "host-file" in o and o)
    ip = pod["status"]["podIP"]
    assert f"COLOR=blue PW=s3cret NAME=envpod NS=default IP={ip} CFG_color=blue PLAIN=x-$(COLOR_MISSING)" in out
    assert "threads=4" in out and "s3cret" in out
    node.wait("hostPath write", lambda: (hostdir / "out").exists())
    # a changed config map reaches the running container's volume
    node.api("PATCH", "/api/v1/namespaces/default/configmaps/cfg", {"data": {"app.conf": "threads=8\n"}},
             "application/merge-patch+json")
    node.wait("config map refresh", lambda: node.kubectl(KUBECTL_132, "exec", "envpod", "--", "cat",
                                                         "/etc/app/app.conf").stdout == "threads=8\n", timeout=15)
    assert pod["status"]["qosClass"] == "Guaranteed"  # limits only: requests default to them
    # the limits reached the container's cgroup
    uuid = cstatus(pod, "main")["containerID"].removeprefix("gifee://")
    from gifee.runtime.cgroups import PodCgroup, cgroup_version

    dirs = PodCgroup(uuid).dirs
    if cgroup_version() == 2:
        assert (dirs[""] / "memory.max").read_text().strip() == str(64 * 2**20)
        assert (dirs[""] / "cpu.max").read_text().split() == ["50000", "100000"]
    else:
        assert (dirs["memory"] / "memory.limit_in_bytes").read_text().strip() == str(64 * 2**20)
        assert (dirs["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "50000"


def test_failing_container_restarts_with_back_off(node: Node) -> None:
    node.create_pod("crash", [{"name": "c", "command": ["sh", "-c", "echo attempt; exit 3"]}])
    seen_backoff = []

    def restarted() -> bool:
        pod = node.pod("crash")
        st = cstatus(pod, "c")
        if st["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff":
            seen_backoff.append(st)
        return bool(st["restartCount"] >= 3)

    t0 = time.monotonic()
    node.wait("3 restarts", restarted, timeout=40)
    elapsed = time.monotonic() - t0
    st = cstatus(node.pod("crash"), "c")
    assert st["lastState"]["terminated"]["exitCode"] == 3
    assert st["lastState"]["terminated"]["reason"] == "Error"
    assert seen_backoff, "never saw CrashLoopBackOff"
    assert elapsed >= 2.5, f"restarts came too fast for a 1 s back-off doubling: {elapsed:.1f}s"  # 0 + 1 + 2
    assert node.pod("crash")["status"]["phase"] == "Running"
    node.kubectl(KUBECTL_132, "logs", "crash", "--previous")
    events = node.api("GET", "/api/v1/namespaces/default/events")["items"]
    assert any(e["reason"] == "BackOff" and e["involvedObject"]["name"] == "crash" for e in events)


def test_never_and_on_failure_pods_end(node: Node) -> None:
    node.create_pod("ok-never", [{"name": "c", "command": ["sh", "-c", "echo done"]}], restartPolicy="Never")
    node.create_pod("bad-never", [{"name": "c", "command": ["sh", "-c", "exit 2"]}], restartPolicy="Never")
    node.create_pod("ok-onfail", [{"name": "c", "command": ["true"]}], restartPolicy="OnFailure")
    pod = node.wait_phase("ok-never", "Succeeded")
    assert cstatus(pod, "c")["state"]["terminated"]["exitCode"] == 0
    assert cstatus(pod, "c")["state"]["terminated"]["reason"] == "Completed"
    pod = node.wait_phase("bad-never", "Failed")
    assert cstatus(pod, "c")["state"]["terminated"]["exitCode"] == 2
    assert cstatus(pod, "c")["restartCount"] == 0
    node.wait_phase("ok-onfail", "Succeeded")
    assert logs(node, "ok-never", "c") == "done\n"
    # the sandbox of a finished pod is stopped
    sandboxes = [p for p in node.runtime_pods() if p["image"] == "gifee.local/pause:1" and p["state"] == "running"]
    uid = node.pod("bad-never")["metadata"]["uid"]
    state = json.loads((node.data_dir / "agent" / "state.json").read_text())["pods"][uid]
    node.wait("sandbox stopped", lambda: not any(p["uuid"] == state["sandbox"] for p in sandboxes) or
              not any(p["uuid"] == state["sandbox"] and p["state"] == "running" for p in node.runtime_pods()))


def test_init_containers(node: Node) -> None:
    marks = node.workdir / "init-marks"
    marks.mkdir()
    node.create_pod("inits", [{"name": "app", "command": ["sh", "-c", "cat /work/made; sleep 3600"],
                               "volumeMounts": [{"name": "work", "mountPath": "/work"}]}],
                    initContainers=[
                        {"name": "make", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                         "command": ["sh", "-c", "echo made-by-init > /work/made"],
                         "volumeMounts": [{"name": "work", "mountPath": "/work"}]},
                        {"name": "flaky", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                         "command": ["sh", "-c", "[ -e /m/tried ] || { touch /m/tried; exit 1; }"],
                         "volumeMounts": [{"name": "m", "mountPath": "/m"}]}],
                    volumes=[{"name": "work", "emptyDir": {}}, {"name": "m", "hostPath": {"path": str(marks)}}])
    pod = node.wait_phase("inits", "Running")
    init = {s["name"]: s for s in pod["status"]["initContainerStatuses"]}
    assert init["make"]["state"]["terminated"]["exitCode"] == 0 and init["make"]["restartCount"] == 0
    assert init["flaky"]["restartCount"] == 1 and init["flaky"]["lastState"]["terminated"]["exitCode"] == 1
    assert cond(pod, "Initialized") == "True"
    node.wait("app output", lambda: logs(node, "inits", "app") == "made-by-init\n")
    node.create_pod("init-fails", [{"name": "app", "command": ["true"]}], restartPolicy="Never",
                    initContainers=[{"name": "bad", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                                     "command": ["false"]}])
    pod = node.wait_phase("init-fails", "Failed")
    assert cond(pod, "Initialized") == "False"
    assert cstatus(pod, "app")["state"]["waiting"]["reason"] == "PodInitializing"


def test_host_network_and_capabilities(node: Node) -> None:
    from tests.api.harness import free_port

    port = free_port()
    node.create_pod("hostnet", [{"name": "web", "command": ["sh", "-c", f"mkdir /w; echo on-host > /w/i; "
                                                                       f"httpd -f -p 127.0.0.1:{port} -h /w"]}],
                    hostNetwork=True)
    pod = node.wait_phase("hostnet", "Running")
    assert pod["status"]["podIP"] == "127.0.0.1"
    body = node.wait("host port", lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/i", timeout=1).read())
    assert body == b"on-host\n"
    caps = "grep CapEff /proc/self/status; sleep 3600"
    node.create_pod("caps", [
        {"name": "none", "command": ["sh", "-c", caps], "securityContext": {"capabilities": {"drop": ["ALL"]}}},
        {"name": "admin", "command": ["sh", "-c", caps],
         "securityContext": {"capabilities": {"add": ["NET_ADMIN"], "drop": ["CHOWN"]}}},
        {"name": "user", "command": ["sleep", "3600"], "securityContext": {"runAsUser": 1000}}])
    node.wait_phase("caps", "Running")

    def eff(container: str) -> int:
        return int(node.wait("CapEff", lambda: logs(node, "caps", container)).split()[-1], 16)

    assert eff("none") == 0
    admin = eff("admin")
    assert admin & (1 << 12) and not admin & 1 and admin & (1 << 5)  # NET_ADMIN added, CHOWN dropped, KILL kept
    # exec runs as the container does: its capabilities, no_new_privs, its user, its PID namespace
    out = node.kubectl(KUBECTL_132, "exec", "caps", "-c", "none", "--", "grep", "-E", "CapEff|NoNewPrivs",
                       "/proc/self/status").stdout.split()
    assert int(out[1], 16) == 0 and out[3] == "1"
    assert node.kubectl(KUBECTL_132, "exec", "caps", "-c", "user", "--", "id", "-u").stdout == "1000\n"
    assert node.kubectl(KUBECTL_132, "exec", "caps", "-c", "user", "--", "cat", "/proc/1/cmdline").stdout == \
        "sleep\x003600\x00"
    node.api("DELETE", "/api/v1/namespaces/default/pods/hostnet", {"gracePeriodSeconds": 1})
    node.wait("hostnet gone", lambda: not node.pod("hostnet"), timeout=20)


def test_missing_config_map_waits_then_starts(node: Node) -> None:
    node.create_pod("needs-cm", [{"name": "c", "command": ["sh", "-c", "cat /cfg/k; sleep 3600"],
                                  "volumeMounts": [{"name": "v", "mountPath": "/cfg"}]}],
                    volumes=[{"name": "v", "configMap": {"name": "late"}}])
    node.wait("CreateContainerConfigError", lambda: cstatus(node.pod("needs-cm"), "c")["state"]["waiting"]["reason"]
              == "CreateContainerConfigError")
    assert node.pod("needs-cm")["status"]["phase"] == "Pending"
    node.api("POST", "/api/v1/namespaces/default/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late"}, "data": {"k": "arrived"}})
    node.wait_phase("needs-cm", "Running", timeout=30)
    node.wait("content", lambda: logs(node, "needs-cm", "c") == "arrived")


def test_image_change_restarts_the_container(node: Node) -> None:
    from gifee.image.store import ImageStore
    from tests.image.images import busybox_image

    busybox_image(ImageStore(node.data_dir / "images"), "example.com/busybox:2")
    node.create_pod("upgrade", [{"name": "c", "command": ["sleep", "3600"]}], terminationGracePeriodSeconds=1)
    before = cstatus(node.wait_phase("upgrade", "Running"), "c")
    node.api("PATCH", "/api/v1/namespaces/default/pods/upgrade",
             {"spec": {"containers": [{"name": "c", "image": "example.com/busybox:2"}]}},
             "application/strategic-merge-patch+json")
    after = node.wait("restart", lambda: (c := cstatus(node.pod("upgrade"), "c"))["restartCount"] == 1
                      and "running" in c["state"] and c)
    assert after["containerID"] != before["containerID"] and after["image"] == "example.com/busybox:2"
    uuid = after["containerID"].removeprefix("gifee://")
    assert next(p for p in node.runtime_pods() if p["uuid"] == uuid)["image"] == "example.com/busybox:2"


def test_image_errors_reported(node: Node) -> None:
    node.create_pod("noimage", [{"name": "c", "image": "example.com/absent:1", "imagePullPolicy": "Never"}])
    node.wait("ErrImageNeverPull", lambda: cstatus(node.pod("noimage"), "c")["state"]["waiting"]["reason"]
              == "ErrImageNeverPull")
    node.create_pod("nopull", [{"name": "c", "image": "127.0.0.1:1/absent:1", "imagePullPolicy": "IfNotPresent"}])
    st = node.wait("ErrImagePull", lambda: (c := cstatus(node.pod("nopull"), "c"))["state"]["waiting"]["reason"]
                   == "ErrImagePull" and c)
    assert "absent" in st["state"]["waiting"]["message"]
    assert node.pod("nopull")["status"]["phase"] == "Pending"
    node.api("DELETE", "/api/v1/namespaces/default/pods/noimage")
    node.api("DELETE", "/api/v1/namespaces/default/pods/nopull")
    node.wait("deleted", lambda: not node.pod("noimage") and not node.pod("nopull"))


def test_liveness_failure_restarts(node: Node) -> None:
    node.create_pod("live", [{
        "name": "c", "command": ["sh", "-c", "touch /tmp/healthy; sleep 2; rm /tmp/healthy; sleep 3600"],
        "livenessProbe": {"exec": {"command": ["test", "-f", "/tmp/healthy"]}, "periodSeconds": 1,
                          "failureThreshold": 2},
        "terminationGracePeriodSeconds": 1}], terminationGracePeriodSeconds=1)
    node.wait_phase("live", "Running")
    pod = node.wait("liveness restart", lambda: (p := node.pod("live")) and cstatus(p, "c")["restartCount"] >= 1 and p,
                    timeout=30)
    assert "terminated" in cstatus(pod, "c")["lastState"]
    events = [e for e in node.api("GET", "/api/v1/namespaces/default/events")["items"]
              if e["involvedObject"]["name"] == "live"]
    reasons = {e["reason"] for e in events}
    assert {"Started", "Unhealthy", "Killing"} <= reasons, reasons
    assert all(e["source"]["host"] == NODE for e in events)


def test_readiness_gates_ready_and_startup_probe(node: Node) -> None:
    node.create_pod("ready", [{
        "name": "web", "command": ["sh", "-c", "mkdir /w; echo ok > /w/index.html; sleep 3; httpd -f -p 8080 -h /w"],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/index.html", "port": "http"}, "periodSeconds": 1},
        "startupProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1, "failureThreshold": 30}}])
    pod = node.wait_phase("ready", "Running")
    assert cond(pod, "Ready") == "False"
    assert cstatus(pod, "web")["ready"] is False and cstatus(pod, "web")["started"] is False
    pod = node.wait("Ready", lambda: (p := node.pod("ready")) and cond(p, "Ready") == "True" and p, timeout=20)
    assert cstatus(pod, "web")["started"] is True and cstatus(pod, "web")["restartCount"] == 0


def test_graceful_deletion(node: Node) -> None:
    marks = node.workdir / "marks"
    marks.mkdir()
    node.create_pod("graceful", [
        {"name": "polite", "command": ["sh", "-c", "trap 'echo TERM > /m/polite; exit 0' TERM; "
                                                   "while true; do sleep 0.1; done"],
         "volumeMounts": [{"name": "m", "mountPath": "/m"}]},
        {"name": "stubborn", "command": ["sh", "-c", "trap 'echo TERM > /m/stubborn' TERM; "
                                                     "while true; do sleep 0.1; done"],
         "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "echo prestop > /m/prestop"]}}},
         "volumeMounts": [{"name": "m", "mountPath": "/m"}]},
    ], volumes=[{"name": "m", "hostPath": {"path": str(marks)}}], terminationGracePeriodSeconds=3)
    node.wait_phase("graceful", "Running")
    t0 = time.monotonic()
    node.api("DELETE", "/api/v1/namespaces/default/pods/graceful")
    node.wait("pod gone", lambda: not node.pod("graceful"), timeout=20)
    took = time.monotonic() - t0
    assert (marks / "polite").read_text() == "TERM\n"
    assert (marks / "stubborn").read_text() == "TERM\n"
    assert (marks / "prestop").read_text() == "prestop\n"
    assert 2.5 <= took < 10, f"deletion took {took:.1f}s for a 3 s grace period"


def test_kubectl_logs_and_exec(node: Node) -> None:
    node.create_pod("talk", [{"name": "c", "command": ["sh", "-c", "for i in 1 2 3 4 5; do echo line$i; done; "
                                                                   "sleep 3600"]}])
    node.wait_phase("talk", "Running")
    node.wait("logs", lambda: "line5" in logs(node, "talk", "c"))
    assert logs(node, "talk", "c", "--tail=2") == "line4\nline5\n"
    stamped = logs(node, "talk", "c", "--timestamps", "--tail=1")
    assert stamped.endswith(" line5\n") and stamped[:4].isdigit()
    out = node.kubectl(KUBECTL_132, "exec", "talk", "--", "sh", "-c", "echo out; echo err >&2; hostname")
    assert out.stdout == "out\ntalk\n" and "err" in out.stderr
    out = node.kubectl(KUBECTL_132, "exec", "-i", "talk", "--", "sh", "-c", "tr a-z A-Z", input="shout\n")
    assert out.stdout == "SHOUT\n"
    bad = node.kubectl(KUBECTL_132, "exec", "talk", "--", "sh", "-c", "exit 7", check=False)
    assert bad.returncode == 7
    assert node.kubectl(KUBECTL_120, "logs", "talk", "--tail=1").stdout == "line5\n"
    # kubectl 1.20 speaks SPDY/3.1
    old = node.kubectl(KUBECTL_120, "exec", "talk", "--", "sh", "-c", "echo out; echo err >&2; exit 5", check=False)
    assert (old.returncode, old.stdout) == (5, "out\n") and old.stderr.startswith("err\n")
    old = node.kubectl(KUBECTL_120, "exec", "-i", "talk", "--", "sh", "-c", "tr a-z A-Z", input="quiet\n")
    assert old.stdout == "QUIET\n"
    # -t: a terminal of its own (kubectl itself needs one: script(1) gives it a pty)
    cmd = f"{KUBECTL_132} --kubeconfig {node.cluster.kubeconfig} exec -it talk -- sh -c 'tty; exit 4'"
    tty = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, text=True, timeout=30,
                         stdin=subprocess.DEVNULL)
    assert "/dev/pts/" in tty.stdout and tty.returncode == 4, (tty.stdout, tty.stderr)
    # follow ends when the container does
    node.create_pod("short", [{"name": "c", "command": ["sh", "-c", "echo a; sleep 1; echo b"]}],
                    restartPolicy="Never")
    node.wait("short started", lambda: node.pod("short")["status"]["containerStatuses"][0]["containerID"])
    followed = node.kubectl(KUBECTL_132, "logs", "-f", "short", timeout=20)
    assert followed.stdout == "a\nb\n"


def test_agent_restart_adopts_pods(node: Node) -> None:
    node.create_pod("survivor", [{"name": "c", "command": ["sh", "-c", "sleep 3600"],
                                  "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1},
                                  "startupProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1}}])
    before = node.wait("Ready", lambda: (p := node.pod("survivor")) and cond(p, "Ready") == "True" and p)
    uid = before["metadata"]["uid"]

    def mine() -> set[str]:
        rec = json.loads((node.data_dir / "agent" / "state.json").read_text())["pods"][uid]
        return {rec["sandbox"], rec["containers"]["c"]["uuid"]}

    owned = mine()
    running_before = {p["uuid"] for p in node.runtime_pods() if p["state"] == "running"}
    assert owned <= running_before
    rv = node.pod("survivor")["metadata"]["resourceVersion"]
    node.kill_agent()
    # as if the agent had died between a launch and recording it: a tagged, unrecorded pod
    orphan = subprocess.run([sys.executable, "-m", "gifee", "--dir", str(node.data_dir), "run",
                             "--insecure-options=image", "--detach", "--net=none", IMAGE, "--", "sleep", "3600"],
                            capture_output=True, text=True, check=True).stdout.split()[-1]
    (node.data_dir / "agent" / "launched").mkdir(exist_ok=True)
    (node.data_dir / "agent" / "launched" / f"{orphan}.json").write_text(json.dumps({"uid": uid, "container": "c"}))
    time.sleep(1)
    node.start_agent()
    assert orphan not in {p["uuid"] for p in node.runtime_pods()}
    node.create_pod("newcomer", [{"name": "c", "command": ["sh", "-c", "sleep 3600"]}])
    node.wait_phase("newcomer", "Running")
    time.sleep(2)
    after = node.pod("survivor")
    assert cstatus(after, "c")["containerID"] == cstatus(before, "c")["containerID"]
    assert cstatus(after, "c")["restartCount"] == 0 and after["status"]["phase"] == "Running"
    assert mine() == owned
    # adopted with its probe results: never reported unready or not started meanwhile
    with urllib.request.urlopen(f"{node.cluster.url}/api/v1/namespaces/default/pods?watch=1&resourceVersion={rv}"
                                f"&fieldSelector=metadata.name%3Dsurvivor&timeoutSeconds=1", timeout=10) as r:
        seen = [json.loads(line)["object"] for line in r if line.strip()]
    assert all(cond(p, "Ready") == "True" and cstatus(p, "c")["started"] for p in seen
               if p.get("status", {}).get("conditions")), [p["status"] for p in seen]
    running_after = {p["uuid"] for p in node.runtime_pods() if p["state"] == "running"}
    assert owned <= running_after
    # no duplicates: the only new runtime pods belong to pods that (re)started since
    images = [p["image"] for p in node.runtime_pods() if p["state"] == "running"]
    assert images.count("gifee.local/pause:1") == len(
        [p for p in node.api("GET", "/api/v1/namespaces/default/pods")["items"]
         if p["status"].get("phase") in ("Running", "Pending")])
    # still reporting: the adopted pod's deletion goes through
    node.api("DELETE", "/api/v1/namespaces/default/pods/survivor", {"gracePeriodSeconds": 1})
    node.wait("survivor gone", lambda: not node.pod("survivor"), timeout=20)
