"""gifee's registry against Debian's docker-registry (Distribution 2.8), same client.

    python3 benchmarks/registry_bench.py [--rounds 3] [--size-mb 200] [--layers 4] [--pulls 20]

An image of several layers of random bytes (200 MB in all by default, new bytes
for every push) as an OCI layout; skopeo, a client neither registry's authors wrote, pushes it and pulls it
back. Each round, for each registry in alternating order: a push to a fresh
repository (so every blob is uploaded again), a pull into a fresh directory, and
`--pulls` concurrent pulls. Reported: the median time of each, and the median of
the per-round ratios gifee / reference. Target (the registry issue): at most 1.2.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
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

from tests.registry.harness import RegistryProcess  # noqa: E402


def write_blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def make_layout(layout: Path, size_mb: int, layers: int) -> None:
    """An OCI layout whose layers are random bytes (registries never look inside)."""
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    per_layer = size_mb * 2**20 // layers
    layer_descs = []
    for _ in range(layers):
        desc = write_blob(layout, os.urandom(per_layer))
        layer_descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", **desc})
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in layer_descs]}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      **write_blob(layout, config)},
                           "layers": layer_descs}).encode()
    mdesc = write_blob(layout, manifest)
    (layout / "index.json").write_text(json.dumps({
        "schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", **mdesc,
                                           "annotations": {"org.opencontainers.image.ref.name": "bench"}}]}))


def skopeo(*args: str) -> None:
    # A fresh HOME each time: skopeo remembers which repositories hold a blob and would
    # mount it instead of uploading it again, which measures nothing.
    with tempfile.TemporaryDirectory(prefix="skopeo-home-") as home:
        subprocess.run(["skopeo", "--insecure-policy", *args], check=True, capture_output=True,
                       env={**os.environ, "HOME": home, "XDG_CACHE_HOME": home, "XDG_DATA_HOME": home})


def timed(fn: object, *args: object) -> float:
    start = time.perf_counter()
    fn(*args)  # type: ignore[operator]
    return time.perf_counter() - start


def push(registry: RegistryProcess, layout: Path, repo: str) -> None:
    skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:bench", f"docker://{registry.address}/{repo}:1")


def pull(registry: RegistryProcess, repo: str, dest: Path) -> None:
    skopeo("copy", "--src-tls-verify=false", f"docker://{registry.address}/{repo}:1", f"oci:{dest}:bench")
    shutil.rmtree(dest, ignore_errors=True)


def concurrent_pulls(registry: RegistryProcess, repo: str, work: Path, count: int) -> None:
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        for future in [pool.submit(pull, registry, repo, work / f"p{i}") for i in range(count)]:
            future.result()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--pulls", type=int, default=20)
    args = parser.parse_args()
    for tool in ("skopeo", "docker-registry"):
        if shutil.which(tool) is None and not Path(f"/usr/bin/{tool}").exists():
            print(f"needs {tool}", file=sys.stderr)
            return 1
    with tempfile.TemporaryDirectory(prefix="gifee-registry-bench-") as tmp:
        work = Path(tmp)
        registries = {"gifee": RegistryProcess("gifee", workdir=work / "gifee"),
                      "reference": RegistryProcess("distribution", workdir=work / "reference")}
        for r in registries.values():
            r.start()
        times: dict[str, dict[str, list[float]]] = {k: {"push": [], "pull": [], "pulls": []} for k in registries}
        try:
            for round_no in range(args.rounds):
                order = list(registries.items())
                if round_no % 2:
                    order.reverse()
                for name, registry in order:
                    # New random layers for every push: a blob either registry already holds
                    # (in any repository) is not uploaded again, which would measure nothing.
                    layout = work / f"layout-{name}-{round_no}"
                    make_layout(layout, args.size_mb, args.layers)
                    repo = f"bench/r{round_no}"
                    times[name]["push"].append(timed(push, registry, layout, repo))
                    shutil.rmtree(layout)
                    times[name]["pull"].append(timed(pull, registry, repo, work / "pull"))
                    times[name]["pulls"].append(timed(concurrent_pulls, registry, repo, work, args.pulls))
        finally:
            for r in registries.values():
                r.stop()
    print(f"{args.size_mb} MB in {args.layers} layers, {args.rounds} rounds, skopeo as the client:")
    for what in ("push", "pull", "pulls"):
        label = {"pulls": f"{args.pulls} concurrent pulls"}.get(what, what)
        g, ref = times["gifee"][what], times["reference"][what]
        ratios = [a / b for a, b in zip(g, ref, strict=True)]
        print(f"  {label:22} gifee {statistics.median(g):6.2f} s   docker-registry {statistics.median(ref):6.2f} s"
              f"   ratio {statistics.median(ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
