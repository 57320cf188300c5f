"""The local vulnerability database: advisory files in, one SQLite file out, queried per
(namespace, package) by the scanner.

- `model`: the normalised record (`Advisory`) every loader produces.
- `debian`, `alpine`, `osv`: pure parsers, text in, records and warnings out.
- `update`: finds the files under a directory, runs the parsers, writes the database.
- `store`: the SQLite writer (atomic replace) and the reader `VulnDB`.
- `matcher`: does an advisory affect an installed version, and what version fixes it.
"""

from gifee.scan.vulndb.matcher import Finding, affected, fixed_version, match_package
from gifee.scan.vulndb.model import Advisory, Event, ParseResult, Range
from gifee.scan.vulndb.store import VulnDB, VulnDBError, database_path

__all__ = [
    "Advisory",
    "Event",
    "Finding",
    "ParseResult",
    "Range",
    "VulnDB",
    "VulnDBError",
    "affected",
    "database_path",
    "fixed_version",
    "match_package",
]
