"""RFC 822-style paragraphs as dpkg writes them (pure): `Field: value` lines, continuation
lines starting with a space or tab, paragraphs separated by blank lines.

Theory of operation: one pass over the lines; a line that is neither a field nor a
continuation is reported by number and skipped, so a damaged paragraph loses only that line.
"""

from __future__ import annotations

from collections.abc import Iterator


def paragraphs(text: str, where: str, warnings: list[str], max_warnings: int = 20) -> Iterator[dict[str, str]]:
    fields: dict[str, str] = {}
    last = ""
    bad = 0
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            if fields:
                yield fields
            fields, last = {}, ""
            continue
        if line[0] in " \t":
            if last:
                fields[last] += "\n" + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or " " in name:
            bad += 1
            if bad <= max_warnings:
                warnings.append(f"{where}: line {number}: not a 'Field: value' line; skipped")
            continue
        last = name.strip().lower()
        fields[last] = value.strip()
    if fields:
        yield fields
    if bad > max_warnings:
        warnings.append(f"{where}: {bad - max_warnings} more malformed lines")
