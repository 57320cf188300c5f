"""Scheduler scenarios as data: observed pod, nodes and placed pods in; the choice (or message) out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gifee.scheduler import core

SCENARIOS = sorted((Path(__file__).parent / "scenarios").glob("*.json"))


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario(path: Path) -> None:
    s = json.loads(path.read_text())
    r = core.schedule(s["pod"], s["nodes"], s["pods"])
    assert r.node == s["expect"]["node"]
    if "message" in s["expect"]:
        assert r.message == s["expect"]["message"]
    for node, reasons in s["expect"].get("reasons", {}).items():
        assert r.reasons[node] == reasons
