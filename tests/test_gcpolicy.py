"""gifee.gcpolicy: no automatic full collections, a periodic one instead (in a child process: the
policy is process-wide)."""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import gc, threading, time
from gifee import gcpolicy
t0, t1, _ = gc.get_threshold()
gcpolicy.install(full_every=0.05)
gcpolicy.install(full_every=0.05)  # idempotent: one collector thread
assert gc.get_threshold() == (max(t0, gcpolicy.YOUNG_THRESHOLD), t1, gcpolicy._NEVER), gc.get_threshold()
assert sum(t.name == "gifee-gc" for t in threading.enumerate()) == 1
before = gc.get_stats()[2]["collections"]
deadline = time.monotonic() + 5
while gc.get_stats()[2]["collections"] < before + 2 and time.monotonic() < deadline:
    time.sleep(0.01)
assert gc.get_stats()[2]["collections"] >= before + 2, "no periodic full collection"
print("ok")
"""


def test_install_turns_automatic_full_collections_into_periodic_ones() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
