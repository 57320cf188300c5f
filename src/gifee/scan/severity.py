"""Severity levels, one scale for every data source (pure).

Rules: the scale is unknown < negligible < low < medium < high < critical. Words map as the
sources use them: Debian urgencies (unimportant -> negligible, low, medium, high; trailing
`*`/`**` marks dropped), GitHub/OSV `database_specific.severity` (LOW, MODERATE -> medium,
HIGH, CRITICAL), Red Hat's important -> high. A CVSS v3.x vector (OSV `severity[].score`)
is scored with the CVSS v3.1 base-score equations and rated by the specification's bands
(0.1-3.9 low, 4.0-6.9 medium, 7.0-8.9 high, 9.0-10 critical); a bare number is rated the
same way. Anything else (CVSS v2/v4 vectors, empty text) is unknown.
"""

from __future__ import annotations

import math

LEVELS = ("unknown", "negligible", "low", "medium", "high", "critical")
RANK = {level: i for i, level in enumerate(LEVELS)}
_WORDS = {
    "unimportant": "negligible", "negligible": "negligible", "none": "negligible",
    "low": "low", "moderate": "medium", "medium": "medium", "high": "high", "important": "high",
    "critical": "critical",
}
_AV = {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2}
_AC = {"L": 0.77, "H": 0.44}
_UI = {"N": 0.85, "R": 0.62}
_CIA = {"H": 0.56, "L": 0.22, "N": 0.0}


def _roundup(value: float) -> float:
    """CVSS v3.1 Roundup: the smallest one-decimal number >= value, without float surprises."""
    scaled = round(value * 100000)
    if scaled % 10000 == 0:
        return scaled / 100000.0
    return (math.floor(scaled / 10000) + 1) / 10.0


def cvss3_base_score(vector: str) -> float | None:
    """The base score of a CVSS:3.0/3.1 vector; None if it is not one."""
    parts = vector.strip().split("/")
    if not parts or parts[0] not in ("CVSS:3.0", "CVSS:3.1"):
        return None
    metrics = dict(p.split(":", 1) for p in parts[1:] if ":" in p)
    try:
        changed = {"U": False, "C": True}[metrics["S"]]
        pr = {"N": 0.85, "L": 0.68 if changed else 0.62, "H": 0.5 if changed else 0.27}[metrics["PR"]]
        av, ac, ui = _AV[metrics["AV"]], _AC[metrics["AC"]], _UI[metrics["UI"]]
        c, i, a = _CIA[metrics["C"]], _CIA[metrics["I"]], _CIA[metrics["A"]]
    except KeyError:
        return None
    iss = 1 - (1 - c) * (1 - i) * (1 - a)
    impact = 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02) ** 15 if changed else 6.42 * iss
    if impact <= 0:
        return 0.0
    exploitability = 8.22 * av * ac * pr * ui
    total = 1.08 * (impact + exploitability) if changed else impact + exploitability
    return _roundup(min(total, 10.0))


def rating(score: float) -> str:
    if score <= 0:
        return "negligible"
    if score < 4.0:
        return "low"
    if score < 7.0:
        return "medium"
    if score < 9.0:
        return "high"
    return "critical"


def normalize(text: str) -> str:
    """One of LEVELS for whatever a data source wrote."""
    t = text.strip().rstrip("*").strip().lower()
    if t in _WORDS:
        return _WORDS[t]
    if t.startswith("cvss:3"):
        score = cvss3_base_score(text)
        return rating(score) if score is not None else "unknown"
    try:
        return rating(float(t))
    except ValueError:
        return "unknown"


def parse_level(text: str) -> str:
    """A level given on the command line; ValueError names the choices."""
    t = text.strip().lower()
    t = {"moderate": "medium", "important": "high", "any": "unknown"}.get(t, t)
    if t not in RANK:
        raise ValueError(f"unknown severity {text!r} (choose from {', '.join(LEVELS)})")
    return t


def at_least(level: str, threshold: str) -> bool:
    return RANK[level] >= RANK[threshold]
