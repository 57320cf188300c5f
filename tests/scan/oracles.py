"""The reference implementations the comparators are tested against, each called in batches
(one process for many comparisons, since a process per comparison is what makes these slow)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

NODE_SEMVER_DIR = Path(os.environ.get("GIFEE_TEST_NODE_SEMVER", "/opt/gifee/node-semver"))  # scripts/install puts it there

_DPKG_SCRIPT = r"""
while IFS=$'\t' read -r a b; do
  if dpkg --compare-versions "$a" lt "$b" 2>/dev/null; then echo -1
  elif dpkg --compare-versions "$a" eq "$b" 2>/dev/null; then echo 0
  else echo 1; fi
done
"""


def have_dpkg() -> bool:
    return shutil.which("dpkg") is not None


def have_rpm() -> bool:
    return shutil.which("rpm") is not None


def dpkg_compare_many(pairs: Sequence[tuple[str, str]]) -> list[int]:
    """`dpkg --compare-versions` on each pair, through one shell."""
    text = "".join(f"{a}\t{b}\n" for a, b in pairs)
    out = subprocess.run(["bash", "-c", _DPKG_SCRIPT], input=text, capture_output=True, text=True, check=True)
    results = [int(line) for line in out.stdout.split()]
    assert len(results) == len(pairs), out.stderr
    return results


def _lua_string(s: str) -> str:
    assert "]==]" not in s and "%" not in s
    return f"[==[{s}]==]"


def rpm_compare_many(pairs: Sequence[tuple[str, str]]) -> list[int]:
    """rpm's own `rpm.vercmp` (rpmverCmp on parsed EVRs) on each pair, in one `rpm --eval`."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        for a, b in pairs:
            f.write(f"io.write(rpm.vercmp({_lua_string(a)}, {_lua_string(b)}), \"\\n\")\n")
        path = f.name
    try:
        out = subprocess.run(
            ["rpm", "--eval", f"%{{lua: dofile('{path}')}}"], capture_output=True, text=True, check=True
        )
    finally:
        os.unlink(path)
    results = [int(line) for line in out.stdout.split()]
    assert len(results) == len(pairs), out.stderr
    return results


def have_node_semver() -> bool:
    return shutil.which("node") is not None and (NODE_SEMVER_DIR / "node_modules" / "semver").is_dir()


def node_semver_compare_many(pairs: Sequence[tuple[str, str]]) -> list[int]:
    """node-semver's `compare` (strict mode) on each pair, in one node process."""
    import json

    script = (
        f"const semver = require({json.dumps(str(NODE_SEMVER_DIR / 'node_modules' / 'semver'))});"
        "const pairs = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "console.log(JSON.stringify(pairs.map(([a, b]) => semver.compare(a, b))));"
    )
    out = subprocess.run(["node", "-e", script], input=json.dumps(pairs), capture_output=True, text=True, check=True)
    results: list[int] = json.loads(out.stdout)
    return results
