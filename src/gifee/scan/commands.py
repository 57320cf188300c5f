"""`gifee vulndb ...`: load advisory files into the local vulnerability database and look at it;
`gifee scan TARGET`: list what an image or root directory has installed and what is vulnerable.

Imports here stay cheap (argparse only); the work is imported when a command runs.
"""

from __future__ import annotations

import argparse

SEVERITIES = "unknown, negligible, low, medium, high, critical"
EXIT_FINDINGS, EXIT_ERROR = 1, 2


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    add_scan_parser(sub)
    p = sub.add_parser("vulndb", help="the local vulnerability database the scanner matches against")
    vsub = p.add_subparsers(dest="vulndb_command", metavar="COMMAND", required=True)

    u = vsub.add_parser(
        "update",
        help="replace the database with the advisory files under a directory",
        description="Loads Debian DSA/DLA lists and tracker JSON, Alpine secdb and OSV records found "
        "under DIR into <dir>/vulndb.sqlite, replacing it atomically. Never uses the network.",
    )
    u.add_argument("--from", dest="source_dir", required=True, metavar="DIR", help="directory of advisory files")
    u.add_argument("--max-warnings", type=int, default=40, help="warnings to print (all are counted)")
    u.set_defaults(run=run_update)

    s = vsub.add_parser("show", help="the records for a vulnerability id or alias (DSA-..., CVE-..., PYSEC-...)")
    s.add_argument("id")
    s.set_defaults(run=run_show)

    st = vsub.add_parser("stats", help="what the database holds, per source and namespace")
    st.set_defaults(run=run_stats)

    c = vsub.add_parser("check", help="is PACKAGE at VERSION in NAMESPACE (e.g. debian:7) affected?")
    c.add_argument("namespace")
    c.add_argument("package")
    c.add_argument("version")
    c.set_defaults(run=run_check)


def _db_path(args: argparse.Namespace) -> str:
    from gifee.scan.vulndb.store import database_path

    return str(database_path(args.dir))


def run_update(args: argparse.Namespace) -> int:
    import sys
    import time

    from gifee.scan.vulndb.update import update

    started = time.monotonic()
    try:
        report = update(args.source_dir, _db_path(args))
    except OSError as e:
        print(f"gifee vulndb update: {e}", file=sys.stderr)
        return 1
    for name, count in sorted(report.sources.items()):
        print(f"{name:14} {count.files:6} files {count.records:8} records {count.warnings:5} warnings")
    print(f"{report.rows} records written to {_db_path(args)} in {time.monotonic() - started:.1f}s"
          f" ({report.skipped_files} files skipped, {len(report.warnings)} warnings)")
    for warning in report.warnings[: max(args.max_warnings, 0)]:
        print(f"warning: {warning}", file=sys.stderr)
    if len(report.warnings) > args.max_warnings:
        print(f"warning: ... and {len(report.warnings) - args.max_warnings} more", file=sys.stderr)
    return 0


def run_show(args: argparse.Namespace) -> int:
    import sys

    from gifee.scan.vulndb.store import VulnDB, VulnDBError

    try:
        with VulnDB(_db_path(args)) as db:
            records = db.lookup(args.id)
    except VulnDBError as e:
        print(f"gifee vulndb show: {e}", file=sys.stderr)
        return 1
    if not records:
        print(f"gifee vulndb show: {args.id} is not in the database", file=sys.stderr)
        return 1
    for a in records:
        what = f"fixed in {a.fixed}" if a.fixed else a.status
        if a.ranges:
            what = "; ".join(" ".join(f"{e.kind} {e.version}" for e in r.events) for r in a.ranges)
        print(f"{a.id}  {a.namespace}  {a.package}  {what}")
        if a.aliases:
            print(f"    aliases: {' '.join(a.aliases)}")
        details = "  ".join(x for x in (a.severity, a.published, a.summary) if x)
        if details:
            print(f"    {details}")
        print(f"    {a.link}")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    import sys

    from gifee.scan.vulndb.store import VulnDB, VulnDBError

    try:
        with VulnDB(_db_path(args)) as db:
            stats = db.stats()
    except VulnDBError as e:
        print(f"gifee vulndb stats: {e}", file=sys.stderr)
        return 1
    print(f"{stats['advisories']} records, updated {stats['meta'].get('updated', '?')} from {stats['meta'].get('from', '?')}")
    for name, c in stats["sources"].items():
        print(f"  source {name:14} {c['files']:6} files {c['records']:8} records {c['warnings']:5} warnings")
    for namespace, n in stats["namespaces"].items():
        print(f"  {namespace:20} {n:8}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    import sys

    from gifee.scan.vulndb.matcher import match_package
    from gifee.scan.vulndb.store import VulnDB, VulnDBError

    try:
        with VulnDB(_db_path(args)) as db:
            findings, warnings = match_package(db, args.namespace, args.package, args.version)
    except VulnDBError as e:
        print(f"gifee vulndb check: {e}", file=sys.stderr)
        return 1
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    for f in findings:
        ids = " ".join(f.advisory.ids)
        print(f"{args.package} {args.version}: {ids}" + (f" (fixed in {f.fixed})" if f.fixed else " (no fix)"))
    if not findings:
        print(f"{args.package} {args.version}: no known vulnerabilities")
    return 0


def add_scan_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "scan",
        help="list an image's packages and their known vulnerabilities",
        description="TARGET is an image in the local store (NAME[:TAG] or sha256:DIGEST), an OCI layout "
        "(oci:DIR[:REF]), a registry image (docker://HOST[:PORT]/REPO[:TAG|@DIGEST], pulled into a temporary "
        "store), or a root directory (/path, ./path or dir:PATH). Layer indexes are cached under <dir>/scan/; "
        "matching uses <dir>/vulndb.sqlite (gifee vulndb update). Exit status: 0, 1 when --fail-on is met, "
        "2 when the scan could not be done.",
    )
    p.add_argument("target", metavar="TARGET")
    p.add_argument("--format", choices=("table", "json", "sarif"), default="table")
    p.add_argument("--severity", metavar="LEVEL[,LEVEL...]",
                   help=f"show only these severities; one level means that level and above ({SEVERITIES})")
    p.add_argument("--fail-on", metavar="LEVEL", help="exit 1 if a finding at or above LEVEL remains after --severity")
    p.add_argument("--output", "-o", metavar="FILE", help="write the report here instead of standard output")
    p.add_argument("--no-cache", action="store_true", help="index every layer again (the cache is still written)")
    p.add_argument("--insecure", action="store_true", help="docker:// targets: plain HTTP or unverified TLS")
    p.add_argument("--creds", metavar="USER:PASSWORD", help="docker:// targets: registry credentials")
    p.set_defaults(run=run_scan)


def _severity_filter(text: str | None) -> set[str] | None:
    from gifee.scan.severity import LEVELS, RANK, parse_level

    if not text:
        return None
    levels = [parse_level(t) for t in text.split(",") if t.strip()]
    if len(levels) == 1:
        return {level for level in LEVELS if RANK[level] >= RANK[levels[0]]}
    return set(levels)


def run_scan(args: argparse.Namespace) -> int:
    import shutil
    import sys
    import tempfile
    from pathlib import Path

    from gifee.image.errors import ImageError
    from gifee.scan.formats import FORMATTERS
    from gifee.scan.layercache import cache_dir
    from gifee.scan.report import Report
    from gifee.scan.scanner import scan_image, scan_root
    from gifee.scan.severity import at_least, parse_level
    from gifee.scan.targets import TargetError, directory_of, is_directory_target, open_image, pull_into
    from gifee.scan.vulndb.store import VulnDB, VulnDBError

    def fail(message: str) -> int:
        print(f"gifee scan: {message}", file=sys.stderr)
        return EXIT_ERROR

    try:
        shown = _severity_filter(args.severity)
        fail_on = parse_level(args.fail_on) if args.fail_on else None
    except ValueError as e:
        return fail(str(e))
    data_dir = Path(args.dir)
    pulled: Path | None = None
    try:
        with VulnDB(_db_path(args)) as db:
            if is_directory_target(args.target):
                report: Report = scan_root(directory_of(args.target), db)
            else:
                target, store_dir = args.target, data_dir
                if target.startswith("docker://"):
                    pulled = Path(tempfile.mkdtemp(prefix="gifee-scan-pull-"))
                    target, store_dir = pull_into(pulled, target, args.insecure, args.creds, data_dir), pulled
                image = open_image(store_dir, target)
                if pulled is not None:
                    image = type(image)(args.target, image.manifest_digest, image.layers)
                report = scan_image(image, db, cache_dir(data_dir), use_cache=not args.no_cache)
    except (VulnDBError, TargetError, ImageError, OSError) as e:  # OSError, ImageError: the pull's
        return fail(str(e))
    finally:
        if pulled is not None:
            shutil.rmtree(pulled, ignore_errors=True)
    if shown is not None:
        report.findings = [f for f in report.findings if f.severity in shown]
    text = FORMATTERS[args.format](report)
    if args.output:
        try:
            Path(args.output).write_text(text)
        except OSError as e:
            return fail(f"{args.output}: {e.strerror}")
    else:
        sys.stdout.write(text)
    if fail_on is not None and any(at_least(f.severity, fail_on) for f in report.findings):
        print(f"gifee scan: findings at or above {fail_on}", file=sys.stderr)
        return EXIT_FINDINGS
    return 0
