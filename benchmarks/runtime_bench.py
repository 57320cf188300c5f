"""gifee run against runc run and crun run, on the same busybox root file system.

    sudo python3 benchmarks/runtime_bench.py [--rounds 20] [--pods 100]   (--pods 0: part 1 only)

gifee is started as an installed user starts it: the `gifee` console script beside the
interpreter (sys.executable; a pyenv shim's python3 runs the real one), with gifee's
bytecode compiled first as pip compiles it on install. If the interpreter cannot import
gifee by itself, the checkout's src/ goes on PYTHONPATH (what an editable install's
.pth adds).

Part 1, start-to-exit wall time of a pod that runs `true`, alternating the runtimes in
each round so that the machine's noise hits all of them alike:
  - gifee run (signature verified, every blob re-hashed), --net=none: the same
    isolation as runc's default bundle (own network namespace with only lo);
  - gifee run with the default network (bridge, address, CNI plugins);
  - runc run and crun run of an OCI bundle whose rootfs is the image's root;
  - the interpreter alone (`python3 -c pass`, and with -I -S), the floor under any
    Python command on this machine.
Reported: median per runtime and the median of per-round ratios to runc's time.

Part 2, 100 detached `sleep` pods: time to start them one after another, to list
them, to stop and remove them; the memory they add beyond their own processes (the
shims' resident sizes), and the pods' own memory as their cgroups count it.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

IMAGE = "example.com/busybox:bench"


def gifee_command() -> list[str]:
    """How a user runs gifee: its console script, else `python -m gifee`."""
    script = Path(sys.executable).with_name("gifee")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gifee"]


def prepare_interpreter() -> None:
    """gifee importable by the interpreter alone, and its bytecode compiled (as pip does
    on install; PYTHONDONTWRITEBYTECODE would otherwise make every run compile)."""
    check = subprocess.run([sys.executable, "-c", "import gifee.cli"], capture_output=True, cwd="/")
    if check.returncode != 0:
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))
    sys.path.insert(0, str(REPO / "src"))
    compileall.compile_dir(str(REPO / "src" / "gifee"), quiet=1)


def gifee(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*gifee_command(), "--dir", str(data_dir), *args],
                          capture_output=True, text=True, check=True)


def timed(cmd: list[str], cwd: Path | None = None) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, capture_output=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{cmd[:6]} failed: {result.stderr.decode()[-500:]}")
    return elapsed


def setup(work: Path) -> tuple[Path, Path]:
    from gifee.image.store import ImageStore
    from tests.image.images import busybox_image

    data_dir = work / "gifee"
    (data_dir / "net.d").mkdir(parents=True)
    # Not the agent tests' 10.25.0.0/24: run beside them, an overlapping subnet is refused.
    (data_dir / "net.d" / "default.conf").write_text(json.dumps({"bridge": "gifeebench0", "subnet": "10.26.0.0/24"}))
    store = ImageStore(data_dir / "images")
    image = busybox_image(store, IMAGE)
    gifee(data_dir, "image", "keygen", "--out", str(work / "key"))
    gifee(data_dir, "image", "sign", IMAGE, "--key", str(work / "key.key"))
    gifee(data_dir, "trust", "--prefix", "example.com/busybox", str(work / "key.pub"))
    bundle = work / "bundle"
    bundle.mkdir()
    store.flatten(image, bundle / "rootfs")
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["args"] = ["/bin/true"]
    config["process"]["terminal"] = False
    (bundle / "config.json").write_text(json.dumps(config))
    # The first pod builds the shim and unpacks the layer: not part of what is measured.
    gifee(data_dir, "run", IMAGE, "--net=none", "--", "/bin/true")
    return data_dir, bundle


def start_times(data_dir: Path, bundle: Path, rounds: int) -> None:
    py = [*gifee_command(), "--dir", str(data_dir), "run", IMAGE]
    runners = {
        "gifee --net=none": py + ["--net=none", "--", "/bin/true"],
        "gifee (bridge)": py + ["--", "/bin/true"],
        "runc run": ["runc", "run", "bench-runc"],
        "crun run": crun_command("bench-crun"),
        "python3 -c pass": [sys.executable, "-c", "pass"],
        "python3 -I -S": [sys.executable, "-I", "-S", "-c", "pass"],
    }
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, cmd in runners.items():
            times[name].append(timed(cmd, cwd=bundle))
        gifee(data_dir, "gc", "--grace-period=0s")
    for name, values in times.items():
        print(f"  {name:18} median {statistics.median(values) * 1000:7.1f} ms   "
              f"min {min(values) * 1000:7.1f} ms")
    for name in ("gifee --net=none", "gifee (bridge)", "crun run", "python3 -c pass", "python3 -I -S"):
        ratios = [a / b for a, b in zip(times[name], times["runc run"], strict=True)]
        print(f"  {name} / runc run: median ratio {statistics.median(ratios):.2f}")


def crun_command(name: str) -> list[str]:
    """crun refuses hybrid cgroup machines (v1 controllers with an empty v2 mount, as
    here): hide the v2 mount in a private mount namespace (costs unshare + sh, ~2 ms)."""
    if Path("/sys/fs/cgroup/unified").is_mount():
        return ["unshare", "-m", "sh", "-c", f"umount /sys/fs/cgroup/unified && exec crun run {name}"]
    return ["crun", "run", name]


def many_pods(data_dir: Path, count: int) -> None:
    from gifee.runtime.cgroups import PodCgroup

    start = time.perf_counter()
    uuids = []
    for _ in range(count):
        out = gifee(data_dir, "run", IMAGE, "--net=none", "--detach", "--", "/bin/sleep", "3600").stdout
        uuids.append(out.split()[-1])
    started = time.perf_counter() - start
    start = time.perf_counter()
    listed = gifee(data_dir, "list", "--format=json").stdout
    list_time = time.perf_counter() - start
    running = [p for p in json.loads(listed) if p["state"] == "running"]
    shim_rss = pod_rss = cgroup_mem = 0
    for pod in running:
        pid = pod["pid"]
        with open(f"/proc/{pid}/stat") as f:
            shim = int(f.read().rsplit(")", 1)[1].split()[1])
        shim_rss += rss_kb(shim)
        pod_rss += rss_kb(pid)
        cgroup_mem += PodCgroup(pod["uuid"]).memory_usage()
    start = time.perf_counter()
    gifee(data_dir, "stop", "--force", *uuids)
    gifee(data_dir, "gc", "--grace-period=0s")
    removed = time.perf_counter() - start
    print(f"  {count} detached pods: started in {started:.1f} s ({started / count * 1000:.0f} ms each), "
          f"{len(running)} running, listed in {list_time * 1000:.0f} ms, stopped and removed in {removed:.1f} s")
    print(f"  memory beside the pods (shims' RSS): {shim_rss / 1024:.1f} MiB in all, "
          f"{shim_rss / max(1, len(running)):.0f} kB per pod")
    print(f"  the pods' own processes: RSS {pod_rss / 1024:.1f} MiB; cgroups count {cgroup_mem / 2**20:.1f} MiB")


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--pods", type=int, default=100)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 1
    for tool in ("runc", "crun"):
        if shutil.which(tool) is None:
            print(f"needs {tool} (apt-get install {tool})", file=sys.stderr)
            return 1
    prepare_interpreter()
    with tempfile.TemporaryDirectory(prefix="gifee-runtime-bench-") as tmp:
        data_dir, bundle = setup(Path(tmp))
        try:
            print(f"gifee started as: {' '.join(gifee_command())}; load average {os.getloadavg()[0]:.2f}")
            print(f"start to exit of `true`, {args.rounds} rounds, alternating:")
            start_times(data_dir, bundle, args.rounds)
            print(f"load average {os.getloadavg()[0]:.2f} (1 min), {os.getloadavg()[1]:.2f} (5 min)")
            if args.pods:
                many_pods(data_dir, args.pods)
        finally:
            subprocess.run([*gifee_command(), "--dir", str(data_dir), "gc", "--grace-period=0s"],
                           capture_output=True)
            from gifee.runtime.network import PodNetwork

            PodNetwork(state_dir=data_dir / "net", bridge="gifeebench0", subnet="10.26.0.0/24").remove_bridge()
    return 0


if __name__ == "__main__":
    sys.exit(main())
