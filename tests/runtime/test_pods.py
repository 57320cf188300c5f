"""`gifee run` and its companions as real processes: isolation, limits, the pod
lifecycle without a daemon, and the host's safety. Needs root (CI is root)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gifee.runtime.cgroups import PodCgroup
from gifee.runtime.spec import DEFAULT_CAPABILITIES
from tests.runtime.podtools import Gifee, make_runtime_dir, rss_kb, shim_pid_of

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def gifee(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gifee]:
    yield from make_runtime_dir(tmp_path_factory.mktemp("runtime"))


def test_foreground_pod_returns_exit_code_and_output(gifee: Gifee) -> None:
    result = gifee.pod("--", "/bin/sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 7")
    assert result.returncode == 7, result.stderr
    assert "to-stdout" in result.stdout
    assert "to-stderr" in result.stderr


def test_command_not_found_is_a_clear_error(gifee: Gifee) -> None:
    result = gifee.pod("--", "/no/such/program")
    assert result.returncode != 0
    assert "/no/such/program" in result.stderr
    assert "Traceback" not in result.stderr


def test_pod_sees_only_itself(gifee: Gifee, tmp_path: Path) -> None:
    sentinel = tmp_path / "host-only-file"
    sentinel.write_text("secret")
    script = (f"hostname; echo PROCS; ps -o pid,comm; echo MOUNTS; cat /proc/mounts; "
              f"echo SENTINEL; cat {sentinel} 2>&1; echo CAPS; grep -E 'CapBnd|CapEff|NoNewPrivs' /proc/self/status")
    result = gifee.pod("--hostname", "isolated", "--", "/bin/sh", "-c", script)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    hostname, _, rest = out.partition("PROCS")
    assert hostname.strip() == "isolated"
    procs, _, rest = rest.partition("MOUNTS")
    pids = [line.split()[0] for line in procs.strip().splitlines()[1:]]
    assert pids[0] == "1" and len(pids) <= 3, procs  # the pod's sh, ps and nothing of the host
    mounts, _, rest = rest.partition("SENTINEL")
    mount_points = {line.split()[1] for line in mounts.strip().splitlines()}
    assert mount_points == {"/", "/proc", "/sys", "/dev", "/dev/pts", "/dev/shm"}, mounts
    sentinel_out, _, caps = rest.partition("CAPS")
    assert "secret" not in sentinel_out
    fields = dict(line.split(":\t") for line in caps.strip().splitlines())
    expected = sum(1 << c for c in DEFAULT_CAPABILITIES)
    assert int(fields["CapBnd"], 16) == expected
    assert int(fields["CapEff"], 16) == expected
    assert fields["NoNewPrivs"].strip() == "1"


def test_pods_do_not_see_each_others_files(gifee: Gifee) -> None:
    first = gifee.detach("--", "/bin/sh", "-c", "echo mine > /tmp/private; sleep 30")
    try:
        gifee.wait_for_log(first, "")
        time.sleep(0.3)
        result = gifee.pod("--", "/bin/sh", "-c", "cat /tmp/private 2>&1; ls /tmp")
        assert "mine" not in result.stdout
    finally:
        gifee.run("stop", "--force", first)


def test_detached_pod_lifecycle_and_shim_overhead(gifee: Gifee) -> None:
    started = time.monotonic()
    uuid = gifee.detach("--", "/bin/sh", "-c", "echo started; exec sleep 60")
    assert time.monotonic() - started < 10
    info = gifee.status(uuid)
    assert info["state"] == "running"
    first_pid = info["pid"]
    shim = shim_pid_of(first_pid)
    with open(f"/proc/{shim}/comm") as f:
        assert "python" not in f.read()  # no Python process stays beside the pod
    assert rss_kb(shim) < 5 * 1024
    listed = gifee.run("list", "--no-legend").stdout
    assert uuid[:8] in listed and "running" in listed
    assert "started" in gifee.wait_for_log(uuid, "started")
    # sleep as PID 1 ignores SIGTERM (no handler): the grace period ends in SIGKILL
    gifee.run("stop", "--grace-period", "0.5", uuid)
    info = gifee.status(uuid, wait=True)
    assert info["state"] == "exited"
    assert info["signal"] == 9 and info["exit_code"] == 137
    gifee.run("rm", uuid)
    assert uuid[:8] not in gifee.run("list").stdout
    assert not PodCgroup(uuid).exists()


def test_status_wait_returns_exit_code(gifee: Gifee) -> None:
    uuid = gifee.detach("--", "/bin/sh", "-c", "sleep 0.3; exit 42")
    info = gifee.status(uuid, wait=True)
    assert info["exit_code"] == 42 and info["oom_killed"] is False


def test_memory_limit_kills_the_pod_not_the_host(gifee: Gifee) -> None:
    # tail keeps a line without newlines in memory: 300 MB of zeros against a 32 MB limit
    result = gifee.pod("--memory=32M", "--", "/bin/sh", "-c", "head -c 300000000 /dev/zero | tail >/dev/null")
    assert result.returncode != 0
    uuid = _last_pod(gifee)
    info = gifee.status(uuid)
    assert info["oom_killed"] is True, info


def test_fork_bomb_stops_at_the_pids_limit(gifee: Gifee) -> None:
    # Each subshell keeps trying to fork; with 16 pids allowed, forks start failing.
    uuid = gifee.detach("--pids=16", "--", "/bin/sh", "-c",
                        "for i in $(seq 1 60); do (sleep 30 &) 2>>/tmp/errors; done; "
                        "echo tried; grep -c fork /tmp/errors; sleep 30")
    try:
        out = gifee.wait_for_log(uuid, "tried")
        assert "tried" in out, out
        failures = int(gifee.wait_for_log(uuid, "tried\n").split("tried\n", 1)[1].split()[0])
        assert failures > 0, out
        assert 1 <= len(PodCgroup(uuid).pids()) <= 16
        assert subprocess.run(["/bin/true"]).returncode == 0  # the host still forks
    finally:
        gifee.run("stop", "--force", uuid)


def test_cpu_limit_sets_the_quota(gifee: Gifee) -> None:
    uuid = gifee.detach("--cpu=750m", "--", "/bin/sleep", "30")
    try:
        cgroup = PodCgroup(uuid)
        if cgroup.version == 1:
            quota = (cgroup.dirs["cpu"] / "cpu.cfs_quota_us").read_text().strip()
            period = (cgroup.dirs["cpu"] / "cpu.cfs_period_us").read_text().strip()
        else:
            quota, period = (cgroup.dirs[""] / "cpu.max").read_text().split()
        assert (int(quota), int(period)) == (75_000, 100_000)
    finally:
        gifee.run("stop", "--force", uuid)


def test_volumes_and_readonly_root(gifee: Gifee, tmp_path: Path) -> None:
    rw = tmp_path / "rw"
    ro = tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    (ro / "given").write_text("from host")
    result = gifee.pod(f"--volume={rw}:/data", f"--volume={ro}:/config:ro", "--readonly-root", "--",
                       "/bin/sh", "-c",
                       "echo written > /data/out; cat /config/given; echo x > /config/new 2>&1 || echo ro-refused; "
                       "touch /rootfile 2>&1 || echo root-refused")
    assert result.returncode == 0, result.stderr
    assert (rw / "out").read_text() == "written\n"
    assert "from host" in result.stdout
    assert "ro-refused" in result.stdout and not (ro / "new").exists()
    assert "root-refused" in result.stdout


def test_env_and_arguments(gifee: Gifee) -> None:
    result = gifee.pod("--env=GREETING=hello pod", "--", "/bin/sh", "-c", 'echo "$GREETING"; echo "$PATH"')
    lines = result.stdout.splitlines()
    assert lines[0] == "hello pod"
    assert lines[1] == "/usr/sbin:/usr/bin:/sbin:/bin"  # the image's PATH


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_default_network_with_port_forwarding(gifee: Gifee) -> None:
    port = _free_port()
    uuid = gifee.detach(f"--port={port}:8080", "--", "/bin/sh", "-c",
                        "mkdir -p /www && echo served-from-pod > /www/index.html && exec httpd -f -p 8080 -h /www")
    try:
        info = gifee.status(uuid)
        ip = info["networks"]["default"]["ip"]
        assert ip.startswith("10.24.0.")
        body = ""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read().decode()
                break
            time.sleep(0.1)
        assert body == "served-from-pod\n"
        # and another pod reaches it by its address
        result = gifee.pod("--", "/bin/sh", "-c", f"wget -q -O - http://{ip}:8080/")
        assert result.stdout == "served-from-pod\n", result.stderr
    finally:
        gifee.run("stop", "--force", uuid)
    gifee.status(uuid, wait=True)
    gifee.run("gc", "--grace-period=0s")
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)


def test_net_none_has_only_loopback(gifee: Gifee) -> None:
    result = gifee.pod("--net=none", "--", "/bin/sh", "-c", "ls /sys/class/net")
    assert result.stdout.split() == ["lo"]


def test_enter_runs_inside_the_pod(gifee: Gifee) -> None:
    uuid = gifee.detach("--hostname", "enterme", "--", "/bin/sleep", "60")
    try:
        result = gifee.run("enter", uuid, "--", "/bin/sh", "-c", "hostname; ps -o pid,comm")
        lines = result.stdout.split()
        assert lines[0] == "enterme"
        assert "sleep" in result.stdout and result.stdout.count("\n") <= 5
    finally:
        gifee.run("stop", "--force", uuid)


def test_killing_the_shim_ends_the_pod(gifee: Gifee) -> None:
    uuid = gifee.detach("--", "/bin/sleep", "60")
    info = gifee.status(uuid)
    first = info["pid"]
    os.kill(shim_pid_of(first), 9)
    info = gifee.status(uuid, wait=True)
    assert info["state"] == "exited"
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{first}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{first}") or "Z" in open(f"/proc/{first}/stat").read().split()[2]


def test_gc_collects_exited_pods(gifee: Gifee) -> None:
    result = gifee.pod("--", "/bin/true")
    assert result.returncode == 0
    uuid = _last_pod(gifee)
    out = gifee.run("gc", "--grace-period=0s").stdout
    assert uuid in out
    assert not list(gifee.dir.glob(f"pods/*/{uuid}"))


def test_tampered_image_is_refused_before_anything_runs(gifee: Gifee, tmp_path: Path) -> None:
    from gifee.image.store import ImageStore
    from tests.image.images import busybox_image

    store = ImageStore(gifee.dir / "images")
    image = busybox_image(store, "example.com/tampered:latest")
    layer = store.blob_path(image.layers[0]["digest"] if isinstance(image.layers[0], dict)
                            else image.layers[0].digest)
    original = layer.read_bytes()  # shared with the busybox image: builds are reproducible
    data = bytearray(original)
    data[len(data) // 2] ^= 0xFF
    mode = layer.stat().st_mode
    os.chmod(layer, 0o644)
    layer.write_bytes(bytes(data))
    before = set(gifee.dir.glob("pods/*/*"))
    marker = tmp_path / "ran"
    try:
        result = gifee.pod(f"--volume={tmp_path}:/out", "--", "/bin/sh", "-c", "touch /out/ran",
                           image="example.com/tampered:latest")
    finally:
        layer.write_bytes(original)
        os.chmod(layer, mode)
    assert result.returncode != 0
    assert "sha256" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()
    assert set(gifee.dir.glob("pods/*/*")) == before


def test_unsigned_image_is_refused_without_insecure_options(gifee: Gifee) -> None:
    result = gifee.run("run", "example.com/busybox:latest", "--", "/bin/true", check=False)
    assert result.returncode != 0
    assert "sign" in result.stderr.lower() or "trust" in result.stderr.lower()


def _last_pod(gifee: Gifee) -> str:
    import json

    pods = json.loads(gifee.run("list", "--format=json").stdout)
    return str(max(pods, key=lambda p: p["created"] or 0)["uuid"])


def test_no_process_of_a_stopped_pod_survives(gifee: Gifee) -> None:
    uuid = gifee.detach("--", "/bin/sh", "-c", "sleep 100 & sleep 100 & exec sleep 100")
    time.sleep(0.3)
    pids = PodCgroup(uuid).pids()
    assert len(pids) == 3
    gifee.run("stop", "--force", uuid)
    gifee.status(uuid, wait=True)
    deadline = time.monotonic() + 5
    while any(os.path.exists(f"/proc/{p}") for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = [p for p in pids if os.path.exists(f"/proc/{p}")
             and subprocess.run(["grep", "-q", "^State:.*Z", f"/proc/{p}/status"]).returncode != 0]
    assert not alive


def test_signed_image_runs_only_for_a_trusted_prefix(gifee: Gifee, tmp_path: Path) -> None:
    gifee.run("image", "keygen", "--out", str(tmp_path / "k"))
    gifee.run("image", "sign", "example.com/busybox:latest", "--key", str(tmp_path / "k.key"))
    refused = gifee.run("run", "example.com/busybox:latest", "--", "/bin/true", check=False)
    assert refused.returncode != 0  # signed, but by a key nobody trusts yet
    gifee.run("trust", "--prefix", "example.com/other", str(tmp_path / "k.pub"))
    assert gifee.run("run", "example.com/busybox:latest", "--", "/bin/true", check=False).returncode != 0
    gifee.run("trust", "--prefix", "example.com/busybox", str(tmp_path / "k.pub"))
    ok = gifee.run("run", "example.com/busybox:latest", "--", "/bin/sh", "-c", "echo verified", check=False)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "verified\n"


def test_hostile_image_paths_stay_inside_the_pod(gifee: Gifee, tmp_path: Path) -> None:
    """/etc and a volume target that are symlinks pointing out of the root, as seen from the
    host, are resolved inside the pod's root: nothing is written to the host's paths."""
    from gifee.image.build import build_from_rootfs
    from gifee.image.store import ImageStore
    from tests.image.images import busybox_rootfs

    outside = tmp_path / "outside"
    outside.mkdir()
    root = busybox_rootfs(tmp_path / "rootfs")
    import shutil

    shutil.rmtree(root / "etc")
    os.symlink(f"../../../../../../../../..{outside}", root / "etc")
    os.symlink(str(outside), root / "data")
    build_from_rootfs(ImageStore(gifee.dir / "images"), root, "example.com/hostile:latest",
                      cmd=["/bin/sh"], env=["PATH=/bin"])
    volume = tmp_path / "vol"
    volume.mkdir()
    result = gifee.pod(f"--volume={volume}:/data/mounted", "--", "/bin/sh", "-c",
                       "cat /etc/hostname; echo in-volume > /data/mounted/file",
                       image="example.com/hostile:latest")
    assert result.returncode == 0, result.stderr
    assert list(outside.iterdir()) == []
    assert (volume / "file").read_text() == "in-volume\n"


def test_private_users_maps_pod_root_to_an_unprivileged_host_uid(gifee: Gifee) -> None:
    volume = gifee.dir.parent / "shared"  # reachable by the pod's host uid, unlike pytest's tmp_path
    volume.mkdir()
    os.chmod(volume, 0o777)
    uuid = gifee.detach("--private-users", f"--volume={volume}:/shared", "--", "/bin/sh", "-c",
                        "id -u > /shared/id; cat /proc/self/uid_map > /shared/map; touch /etc/writable-root; "
                        "echo made > /shared/file; exec sleep 60")
    try:
        deadline = time.monotonic() + 10
        while not (volume / "file").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (volume / "id").read_text().strip() == "0"  # root inside ...
        inside, host_base, count = (volume / "map").read_text().split()
        assert inside == "0" and int(host_base) >= 1 << 20 and count == "65536"
        assert (volume / "file").stat().st_uid == int(host_base)  # ... an unprivileged uid outside
        info = gifee.status(uuid)
        with open(f"/proc/{info['pid']}/status") as f:
            uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
        assert set(uids) == {host_base}
        entered = gifee.run("enter", uuid, "--", "/bin/sh", "-c", "id -u; ls /shared")
        assert entered.stdout.split()[0] == "0" and "file" in entered.stdout
    finally:
        gifee.run("stop", "--force", uuid)
    assert gifee.status(uuid, wait=True)["signal"] == 9
    gifee.run("rm", uuid)
    assert not list((gifee.dir / "userns").iterdir())  # the uid range is free again


def test_a_pod_joins_another_pods_network(gifee: Gifee) -> None:
    sandbox = gifee.detach("--hostname", "sandbox", "--", "/bin/sleep", "60")
    server = gifee.detach(f"--net=pod:{sandbox}", "--", "/bin/sh", "-c",
                          "mkdir -p /www && echo from-sibling > /www/index.html && exec httpd -f -p 8080 -h /www")
    try:
        ip = gifee.status(sandbox)["networks"]["default"]["ip"]
        assert gifee.status(server)["networks"]["default"]["ip"] == ip
        body = ""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and body != "from-sibling\n":
            body = gifee.pod(f"--net=pod:{sandbox}", "--", "/bin/sh", "-c",
                             "hostname; wget -q -O - http://127.0.0.1:8080/").stdout
            body = body.split("\n", 1)[1] if body.startswith("sandbox\n") else body
            time.sleep(0.1)
        assert body == "from-sibling\n"  # over the shared loopback, with the sandbox's host name
        # the sibling's files are its own: sharing the network shares no file system
        assert "No such file" in gifee.pod(f"--net=pod:{sandbox}", "--", "/bin/sh", "-c",
                                           "cat /www/index.html 2>&1").stdout
    finally:
        gifee.run("stop", "--force", server, sandbox)
    refused = gifee.pod("--net=pod:00000000", "--", "/bin/true")
    assert refused.returncode != 0 and "no pod matches" in refused.stderr


def test_dns_hosts_entries_and_cpu_request(gifee: Gifee) -> None:
    result = gifee.pod("--dns=10.96.0.10", "--dns-search=default.svc.cluster.local", "--dns-search=cluster.local",
                       "--dns-opt=ndots:5", "--hosts-entry=10.1.2.3=db,db.local", "--cpu-request=250m",
                       "--", "/bin/sh", "-c", "cat /etc/resolv.conf; grep db /etc/hosts; "
                       "cat /sys/fs/cgroup/cpu/cpu.shares 2>/dev/null || true")
    assert result.returncode == 0, result.stderr
    assert "nameserver 10.96.0.10\nsearch default.svc.cluster.local cluster.local\noptions ndots:5\n" in result.stdout
    assert "10.1.2.3\tdb db.local" in result.stdout
    uuid = _last_pod(gifee)
    cgroup = PodCgroup(uuid)
    if cgroup.version == 1 and (cgroup.dirs["cpu"] / "cpu.shares").exists():
        assert (cgroup.dirs["cpu"] / "cpu.shares").read_text().strip() == "256"


def test_concurrent_launches_from_threads(gifee: Gifee) -> None:
    """Launches from several threads of one process (as an agent does) do not hold each
    other's pipes: every one starts and reports back promptly."""
    import concurrent.futures

    from gifee.image.store import ImageStore
    from gifee.runtime.launch import Launcher
    from gifee.runtime.spec import make_spec

    store = ImageStore(gifee.dir / "images")
    image = store.resolve("example.com/busybox:latest")
    layers = store.layer_dirs(image)
    launcher = Launcher(gifee.dir)

    def launch(i: int) -> str:
        spec = make_spec(image_name=image.name, image_digest=image.manifest_digest, image_config=image.config,
                         hostname=f"t{i}", args=["/bin/sleep", "30"], net="none")
        pod, _ = launcher.launch(spec, layers, detach=True)
        return pod.uuid

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        uuids = list(pool.map(launch, range(8)))
    assert time.monotonic() - started < 20
    try:
        assert all(gifee.status(u)["state"] == "running" for u in uuids)
    finally:
        gifee.run("stop", "--force", *uuids)


def test_a_launch_closes_each_descriptor_once(gifee: Gifee, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a process with other threads a second close of a number may close another thread's
    new descriptor (an agent's node process once died of EBADF so): the launcher closes each
    of its descriptors once, so none of its closes finds the number already closed."""
    import errno

    from gifee.image.store import ImageStore
    from gifee.runtime.launch import Launcher
    from gifee.runtime.spec import make_spec

    store = ImageStore(gifee.dir / "images")
    image = store.resolve("example.com/busybox:latest")
    launcher = Launcher(gifee.dir)
    parent = os.getpid()
    real_close = os.close
    already_closed: list[int] = []

    def close(fd: int) -> None:
        try:
            real_close(fd)
        except OSError as e:
            if e.errno == errno.EBADF and os.getpid() == parent:
                already_closed.append(fd)
            raise

    monkeypatch.setattr(os, "close", close)
    spec = make_spec(image_name=image.name, image_digest=image.manifest_digest, image_config=image.config,
                     hostname="once", args=["/bin/sleep", "30"], net="none")
    pod, _ = launcher.launch(spec, store.layer_dirs(image), detach=True)
    monkeypatch.undo()
    try:
        assert already_closed == []
    finally:
        gifee.run("stop", "--force", pod.uuid)
