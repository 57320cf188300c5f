"""`gifee vulndb ...`: load advisory files into the local vulnerability database and look at it.

Imports here stay cheap (argparse only); the work is imported when a command runs.
"""

from __future__ import annotations

import argparse


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
