"""Time `gifee vulndb update` on the shared vulnerability data, then matching this machine's
Debian packages (source name and version, as the security tracker names them) against it.

The snapshot has no bookworm entries (it predates the release), so the packages are matched
both as Debian 12 (what the machine is: lookups only) and as Debian 11 (bullseye, which the
data covers: lookups plus real hits). Figures are the median of --rounds runs.

    python benchmarks/vulndb_bench.py [--from /work/shared/vulndata] [--rounds 3] [--packages 500]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time

from gifee.scan.vulndb import VulnDB, database_path, match_package
from gifee.scan.vulndb.update import update


def installed_packages(limit: int) -> list[tuple[str, str]]:
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${source:Package}\t${source:Version}\n"],
        capture_output=True, text=True, check=True,
    ).stdout
    pairs = sorted({tuple(line.split("\t", 1)) for line in out.splitlines() if "\t" in line})
    return [(p, v) for p, v in pairs][:limit]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="source", default="/work/shared/vulndata")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--packages", type=int, default=500)
    args = ap.parse_args()

    packages = installed_packages(args.packages)
    with tempfile.TemporaryDirectory() as tmp:
        path = database_path(tmp)
        update_times = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            report = update(args.source, path)
            update_times.append(time.perf_counter() - started)
        print(f"update: {report.rows} records from {sum(c.files for c in report.sources.values())} files, "
              f"{len(report.warnings)} warnings: median {statistics.median(update_times):.2f}s "
              f"(min {min(update_times):.2f}s)")
        for namespace in ("debian:12", "debian:11"):
            times, hits, warnings = [], 0, 0
            for _ in range(args.rounds):
                started = time.perf_counter()
                with VulnDB(path) as db:
                    hits = warnings = 0
                    for name, version in packages:
                        findings, problems = match_package(db, namespace, name, version)
                        hits += len(findings)
                        warnings += len(problems)
                times.append(time.perf_counter() - started)
            with VulnDB(path) as db:
                examined = sum(len(db.advisories(namespace, name)) for name, _ in packages)
            print(f"match {len(packages)} packages as {namespace}: {examined} records examined, "
                  f"{hits} findings, {warnings} warnings: "
                  f"median {statistics.median(times) * 1000:.0f} ms (min {min(times) * 1000:.0f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
