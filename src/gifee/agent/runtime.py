"""The agent's thin shell over gifee's runtime and image store (blocking calls; the
agent runs them in executor threads, launches one at a time on one thread).

Launches happen in-process through the runtime's Launcher (it forks; no Python
start per container). Launches are serialized: two concurrent launches would each
leak the other's setup pipes into their forked children until exec, and could wait
on each other forever.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gifee.agent.core import Observed, PodRecord
from gifee.agent.specs import ContainerOptions, DnsSettings, VolumeSetup
from gifee.image.store import Image, ImageStore
from gifee.runtime.launch import Launcher, describe
from gifee.runtime.lifecycle import remove_pod, stop_pod
from gifee.runtime.pods import Pod, PodError, write_atomic
from gifee.runtime.spec import PodSpec, make_spec

PAUSE_IMAGE = "gifee.local/pause:1"
BUSYBOX = Path("/bin/busybox")


class LaunchQueue:
    """A few threads that run launches, containers of pods whose sandbox runs before new
    sandboxes (priority 0 before 1, then first come first served): in a burst, each pod
    gets to Running without waiting for every other pod's sandbox. A launch mostly waits
    (CNI plugin processes, fsyncs, the pod's first process), so a burst on a small machine
    still gains from a few at once: three by default (a burst of 10 pods reached Running with
    p99 0.95-1.19 s, against 1.2-1.7 s one at a time)."""

    def __init__(self, workers: int = 3) -> None:
        import itertools
        import queue
        import threading

        self._queue: queue.PriorityQueue[tuple[int, int, Any]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._workers = max(1, workers)
        self._threads = [threading.Thread(target=self._work, name=f"launch-{i}", daemon=True)
                         for i in range(self._workers)]
        for t in self._threads:
            t.start()

    def submit(self, priority: int, fn: Any, *args: Any) -> Any:
        """A concurrent.futures.Future of fn(*args)."""
        from concurrent.futures import Future

        future: Future[Any] = Future()
        self._queue.put((priority, next(self._order), (future, fn, args)))
        return future

    def _work(self) -> None:
        while True:
            _, _, item = self._queue.get()
            if item is None:
                return
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as e:
                future.set_exception(e)

    def shutdown(self) -> None:
        for _ in range(self._workers):
            self._queue.put((2, next(self._order), None))


class ImageError(Exception):
    """ErrImagePull / ErrImageNeverPull, with the reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Runtime:
    def __init__(self, data_dir: Path, *, insecure_image: bool = False, insecure_registry: bool = False) -> None:
        self.data_dir = data_dir
        self.launcher = Launcher(data_dir)
        self.store = ImageStore(data_dir / "images")
        self.insecure_image = insecure_image
        self.insecure_registry = insecure_registry
        self._verified: set[str] = set()
        self.tags = data_dir / "agent" / "launched"

    # -- images

    def ensure_pause_image(self) -> None:
        """The sandbox image: busybox-static running `sleep` (built once into the store)."""
        with contextlib.suppress(Exception):
            self.store.resolve(PAUSE_IMAGE)
            return
        from gifee.image.build import build_from_rootfs

        with tempfile.TemporaryDirectory(prefix="gifee-pause-") as tmp:
            root = Path(tmp) / "rootfs"
            (root / "bin").mkdir(parents=True)
            shutil.copy2(BUSYBOX, root / "bin" / "busybox")
            os.chmod(root / "bin" / "busybox", 0o755)
            for d in ("etc", "tmp", "proc", "sys", "dev"):
                (root / d).mkdir()
            build_from_rootfs(self.store, root, PAUSE_IMAGE, epoch=0,
                              cmd=["/bin/busybox", "sleep", "2147483647"], env=[], workdir="/")

    def image(self, ref: str, policy: str) -> Image:
        """The image for a container by its imagePullPolicy, pulled if needed and checked
        as `gifee run` checks it (a trusted signature unless --insecure-options=image,
        every blob re-hashed once per agent process)."""
        from gifee.image.store import ImageNotFound

        image: Image | None = None
        if policy != "Always":
            try:
                image = self.store.resolve(ref)
            except ImageNotFound:
                if policy == "Never":
                    raise ImageError("ErrImageNeverPull",
                                     f'Container image "{ref}" is not present with pull policy of Never') from None
            except Exception as e:
                raise ImageError("InvalidImageName", str(e)) from None
        if image is None:
            image = self._pull(ref)
        if not self.insecure_image and image.name != PAUSE_IMAGE:
            from gifee.image.trust import TrustStore

            try:
                TrustStore(self.data_dir / "trust").check(self.store, image)
            except Exception as e:
                raise ImageError("ErrImagePull", f"{ref}: {e}") from None
        if image.manifest_digest not in self._verified:
            self.store.verify(image)
            self._verified.add(image.manifest_digest)
        return image

    def _pull(self, ref: str) -> Image:
        from gifee.image.imagecopy import Transport, pull_scope
        from gifee.image.progress import Progress
        from gifee.image.pull import pull
        from gifee.image.remoteref import parse_remote

        try:
            remote = parse_remote(ref)
            transport = Transport(insecure=self.insecure_registry, data_dir=self.data_dir)
            trust_root = None if self.insecure_image else self.data_dir / "trust"
            with open(os.devnull, "w") as null:
                return pull(transport.client(remote, pull_scope(remote)), remote, self.store,
                            Progress(out=null, quiet=True), None, trust_root)
        except Exception as e:
            raise ImageError("ErrImagePull", f"pulling {ref}: {e}") from None

    # -- pods

    # A launched runtime pod is tagged (DIR/agent/launched/<uuid>.json, written as soon as it
    # runs) until the agent's state file names it: an agent killed in between finds the
    # tag on restart and removes the orphan instead of running a duplicate beside it.

    def _tagger(self, tag: dict[str, str]) -> Any:
        def on_started(pod: Pod) -> None:
            self.tags.mkdir(parents=True, exist_ok=True)
            write_atomic(self.tags / f"{pod.uuid}.json", json.dumps(tag).encode())
        return on_started

    def untag(self, uuid: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.tags / f"{uuid}.json").unlink()

    def orphans(self, known: set[str]) -> list[str]:
        """Tagged runtime pods no record names."""
        if not self.tags.is_dir():
            return []
        return [p.stem for p in self.tags.glob("*.json") if p.stem not in known]

    def remove_abandoned(self) -> None:
        """Runtime pods whose launcher died half-way (an agent killed mid-launch)."""
        from gifee.runtime.launch import cleanup_pod

        for pod in list(self.launcher.pods.all()):
            if pod.state == "abandoned":
                with contextlib.suppress(PodError, OSError):
                    cleanup_pod(self.launcher, self.launcher.pods.move(pod, "garbage"))

    def launch_sandbox(self, hostname: str, tag: dict[str, str], host_network: bool = False) -> tuple[str, str | None]:
        image = self.image(PAUSE_IMAGE, "Never")
        spec = make_spec(image_name=image.name, image_digest=image.manifest_digest, image_config=image.config,
                         hostname=hostname, net="host" if host_network else "default", pids=None)
        pod, _ = self.launcher.launch(spec, self.store.layer_dirs(image), detach=True, on_started=self._tagger(tag))
        net = pod.read_json("net.json") or {}
        return pod.uuid, net.get("ip")

    def container_spec(self, sandbox: str, hostname: str, opts: ContainerOptions,
                       dns: DnsSettings | None = None) -> tuple[PodSpec, Image]:
        image = self.image(opts.image, opts.pull_policy)
        config = dict(image.config)
        config["config"] = {**(image.config.get("config") or {}), **(opts.image_config.get("config") or {})}
        spec = make_spec(image_name=image.name, image_digest=image.manifest_digest, image_config=config,
                         hostname=hostname, env=opts.env, cpu=opts.cpu, memory=opts.memory, net=f"pod:{sandbox}",
                         volumes=opts.volumes,
                         dns=dns.nameservers if dns else (), dns_search=dns.searches if dns else (),
                         dns_opt=dns.options if dns else ())
        if opts.capabilities is not None:
            spec = spec.replace(capabilities=opts.capabilities)
        return spec, image

    def launch(self, spec: PodSpec, image: Image, tag: dict[str, str]) -> str:
        pod, _ = self.launcher.launch(spec, self.store.layer_dirs(image), detach=True, on_started=self._tagger(tag))
        return pod.uuid

    def observe(self) -> dict[str, Observed]:
        out: dict[str, Observed] = {}
        for pod in self.launcher.pods.all():
            try:
                info = describe(pod)
            except (OSError, PodError):
                continue
            net = (info.get("networks") or {}).get("default") or {}
            out[pod.uuid] = Observed(
                uuid=pod.uuid, running=info["state"] in ("running", "preparing"),
                exit_code=info.get("exit_code"), signal=info.get("signal"), oom=bool(info.get("oom_killed")),
                started=info.get("started"), finished=info.get("finished"), ip=net.get("ip"))
        return out

    def find(self, uuid: str) -> Pod | None:
        for directory in ("run", "prepare", "exited-garbage", "garbage"):
            path = self.launcher.pods.root / directory / uuid
            if path.is_dir():
                return Pod(uuid, path, directory)
        return None

    def stop(self, uuid: str, grace: float, *, force: bool = False) -> None:
        pod = self.find(uuid)
        if pod is not None:
            stop_pod(pod, force=force or grace <= 0, grace=grace)

    def remove(self, uuid: str) -> None:
        pod = self.find(uuid)
        if pod is None:
            return
        if pod.state in ("running", "preparing"):
            stop_pod(pod, force=True, grace=0)
            pod = self.find(uuid)
            if pod is None:
                return
        with contextlib.suppress(PodError, OSError):
            remove_pod(self.launcher, pod)

    def spec_of(self, uuid: str) -> tuple[PodSpec, int] | None:
        pod = self.find(uuid)
        if pod is None or pod.pid is None or pod.state != "running":
            return None
        record = pod.read_json("pod.json") or {}
        return PodSpec.from_json(record["spec"]), pod.pid

    def log_path(self, uuid: str) -> Path | None:
        pod = self.find(uuid)
        return None if pod is None else pod.path / "log"

    def is_running(self, uuid: str) -> bool:
        pod = self.find(uuid)
        return pod is not None and pod.state == "running"


def prepare_volumes(volumes: Sequence[VolumeSetup]) -> None:
    for v in volumes:
        if v.kind == "hostPath":
            if v.host_type in ("DirectoryOrCreate",):
                os.makedirs(v.path, exist_ok=True)
            elif v.host_type == "FileOrCreate" and not os.path.exists(v.path):
                Path(v.path).parent.mkdir(parents=True, exist_ok=True)
                Path(v.path).touch()
            elif v.host_type and not os.path.exists(v.path):
                raise FileNotFoundError(f"hostPath {v.path} (type {v.host_type}) does not exist")
            continue
        base = Path(v.path)
        base.mkdir(parents=True, exist_ok=True)
        if v.memory and not os.path.ismount(base):
            from gifee.runtime import linux
            from gifee.runtime.spec import parse_memory

            size = f",size={parse_memory(v.size_limit)}" if v.size_limit else ""
            linux.mount("tmpfs", str(base), "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, f"mode=0777{size}")
        if v.kind in ("configMap", "secret"):
            os.chmod(base, 0o755)
            wanted = set()
            for rel, data, mode in v.files:
                target = base / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(target, data)
                os.chmod(target, mode)
                wanted.add(rel)
            for child in base.rglob("*"):
                if child.is_file() and str(child.relative_to(base)) not in wanted:
                    child.unlink()


def remove_pod_dir(path: Path) -> None:
    """A pod's volume directory, with the tmpfs mounts of its memory emptyDirs."""
    from gifee.runtime import linux

    volumes = path / "volumes"
    if volumes.is_dir():
        for child in volumes.iterdir():
            if os.path.ismount(child):
                with contextlib.suppress(OSError):
                    linux.umount(str(child), linux.MNT_DETACH)
    shutil.rmtree(path, ignore_errors=True)


class StateFile:
    """DIR/agent/state.json: pod uid -> PodRecord, written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, PodRecord]:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return {uid: PodRecord.from_json(r) for uid, r in (data.get("pods") or {}).items()}

    def save(self, records: dict[str, PodRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body: dict[str, Any] = {"pods": {uid: r.to_json() for uid, r in records.items()}}
        write_atomic(self.path, json.dumps(body, indent=1, sort_keys=True).encode())
