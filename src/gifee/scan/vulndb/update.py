"""`gifee vulndb update --from DIR`: find the advisory files under DIR, parse each with the
loader its content calls for, and replace the database with the result in one rename.

Which loader: a file named `list` under a `DSA`/`DLA`/`DTSA` folder is a Debian advisory
list; a `.json` file is OSV (one record or a list) or the Debian tracker export; a `.yaml`/
`.yml` file is Alpine secdb or OSV. Anything else (READMEs, licences) is passed over. A file
that is unreadable, not UTF-8, too large, or not what it claims gives a warning and is
skipped; every other file still loads. The scanner never fetches data itself: DIR is the
only input.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gifee.scan.vulndb import alpine, debian, osv
from gifee.scan.vulndb.model import Advisory, ParseResult
from gifee.scan.vulndb.store import write_database
from gifee.scan.vulndb.yamltext import YAMLError, YAMLUnavailable, load_yaml

MAX_FILE_BYTES = 512 * 1024 * 1024
DEBIAN_LIST_FOLDERS = {"DSA": "debian-dsa", "DLA": "debian-dla", "DTSA": "debian-dtsa"}


@dataclass
class SourceCount:
    files: int = 0
    records: int = 0
    warnings: int = 0


@dataclass
class UpdateReport:
    sources: dict[str, SourceCount] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    rows: int = 0
    skipped_files: int = 0


def _files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def _read_text(path: Path, warnings: list[str]) -> str | None:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            warnings.append(f"{path}: {size} bytes is more than the {MAX_FILE_BYTES} byte limit; skipped")
            return None
        data = path.read_bytes()
    except OSError as e:
        warnings.append(f"{path}: cannot read: {e.strerror or e}")
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        warnings.append(f"{path}: not UTF-8 ({e.reason} at byte {e.start}); undecodable bytes replaced")
        return data.decode("utf-8", errors="replace")


def parse_file(path: Path) -> tuple[str | None, ParseResult]:
    """(source name, records and warnings) for one file; source None means not advisory data."""
    result = ParseResult()
    suffix = path.suffix.lower()
    folder = path.parent.name
    if path.name == "list" and folder in DEBIAN_LIST_FOLDERS:
        source = DEBIAN_LIST_FOLDERS[folder]
        text = _read_text(path, result.warnings)
        if text is not None:
            result.extend(debian.parse_advisory_list(text, str(path), source))
        return source, result
    if suffix not in (".json", ".yaml", ".yml"):
        return None, result
    text = _read_text(path, result.warnings)
    if text is None:
        return "unreadable", result
    try:
        doc = json.loads(text) if suffix == ".json" else load_yaml(text)
    except (json.JSONDecodeError, YAMLError) as e:
        result.warnings.append(f"{path}: not valid {suffix[1:].upper()}: {e}")
        return "corrupt", result
    if alpine.is_secdb(doc):
        result.extend(alpine.parse_secdb_document(doc, str(path)))
        return alpine.SOURCE, result
    if osv.is_osv(doc) or (isinstance(doc, list) and doc and all(osv.is_osv(d) for d in doc)):
        for record in doc if isinstance(doc, list) else [doc]:
            result.extend(osv.parse_osv_record(record, str(path)))
        return osv.SOURCE, result
    if suffix == ".json" and isinstance(doc, dict) and doc and all(isinstance(v, dict) for v in doc.values()):
        result.extend(debian.parse_tracker_json(text, str(path)))
        return "debian-json", result
    result.warnings.append(f"{path}: not a known advisory format; skipped")
    return "unknown", result


def load_directory(root: str | os.PathLike[str]) -> tuple[list[Advisory], UpdateReport]:
    base = Path(root)
    report = UpdateReport()
    if not base.is_dir():
        raise FileNotFoundError(f"{base} is not a directory")
    advisories: list[Advisory] = []
    for path in _files(base):
        try:
            source, result = parse_file(path)
        except YAMLUnavailable as e:
            report.warnings.append(f"{path}: {e}; skipped")
            continue
        except RecursionError:
            report.warnings.append(f"{path}: nested too deeply to parse; skipped")
            continue
        if source is None or source in ("unknown", "corrupt", "unreadable"):
            report.skipped_files += 1
            report.warnings.extend(result.warnings)
            continue
        count = report.sources.setdefault(source, SourceCount())
        count.files += 1
        count.records += len(result.advisories)
        count.warnings += len(result.warnings)
        advisories.extend(result.advisories)
        report.warnings.extend(result.warnings)
    return advisories, report


def update(root: str | os.PathLike[str], database: str | os.PathLike[str]) -> UpdateReport:
    """Load everything under `root` and atomically replace the database at `database`."""
    advisories, report = load_directory(root)
    sources = {name: vars(count) for name, count in report.sources.items()}
    report.rows = write_database(database, advisories, sources, {"from": str(Path(root).resolve())})
    return report
