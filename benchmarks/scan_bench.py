"""Time `gifee scan` on a debootstrapped Debian root built into an image.

Builds (untimed) an image from the cached debootstrap root (tests/image/test_debootstrap.py's
`debian_root()`, zstd like that test) and a second image = that base + one small layer, loads
the shared vulnerability data, then times index + match:
- cold: the first image with an empty layer cache (its one big layer is read from its tar stream);
- warm: the second image (base layer from the cache, only the small layer read);
- root: the root directory read in place (no cache).
Figures are the median of --rounds runs; cold runs start from an empty cache each time.

    python benchmarks/scan_bench.py [--from /work/shared/vulndata] [--rounds 5] [--compression zstd]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gifee.image.build import build_from_file, build_from_rootfs
from gifee.image.store import ImageStore
from gifee.scan.scanner import Timing, scan_image, scan_root
from gifee.scan.targets import image_from_manifest
from gifee.scan.vulndb import VulnDB, database_path
from gifee.scan.vulndb.update import update

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, for tests.image
from tests.image.test_debootstrap import debian_root  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="source", default="/work/shared/vulndata")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--compression", choices=("gzip", "zstd", "none"), default="zstd")
    args = ap.parse_args()

    root = debian_root()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        update(args.source, database_path(d))
        store = ImageStore(d / "images")
        base = build_from_rootfs(store, root, "bench/debian:base", compression=args.compression)
        (d / "extra").mkdir()
        (d / "extra" / "hello.txt").write_text("hello\n")
        (d / "b.toml").write_text(f'name = "bench/debian:extra"\nfrom = "bench/debian:base"\n'
                                  f'[[add]]\nsrc = "{d / "extra"}"\ndest = "/opt/extra"\n')
        second = build_from_file(store, d / "b.toml", compression=args.compression)
        layer_size = store.blob_path(base.layers[0]["digest"]).stat().st_size
        targets = [image_from_manifest(i.name, i.manifest_digest, i.manifest, store.blob_path) for i in (base, second)]
        cache = d / "scan" / "layers"
        cold, warm, direct = [], [], []
        with VulnDB(database_path(d)) as db:
            for _ in range(args.rounds):
                shutil.rmtree(cache, ignore_errors=True)
                t1, t2 = Timing(), Timing()
                started = time.perf_counter()
                report = scan_image(targets[0], db, cache, t1)
                cold.append(time.perf_counter() - started)
                started = time.perf_counter()
                report2 = scan_image(targets[1], db, cache, t2)
                warm.append(time.perf_counter() - started)
                assert (t1.indexed, t2.indexed, t2.cached) == (1, 1, 1), (t1, t2)
                started = time.perf_counter()
                scan_root(root, db)
                direct.append(time.perf_counter() - started)
        print(f"image: {report.packages} packages ({report.namespace}), base layer {layer_size / 1e6:.1f} MB "
              f"{args.compression}; {len(report.findings)} findings, {len(report.warnings)} warnings")
        print(f"cold (index + match, empty cache): median {statistics.median(cold):.3f}s (min {min(cold):.3f}s)")
        print(f"warm (second image, base cached):  median {statistics.median(warm):.3f}s (min {min(warm):.3f}s), "
              f"{report2.packages} packages")
        print(f"root directory in place:           median {statistics.median(direct):.3f}s (min {min(direct):.3f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
