"""tests/procgroup.py: a server's whole group goes, and a reaped leader's number is never signalled."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.procgroup import stop_group


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_the_leader_and_what_it_forked_are_stopped() -> None:
    proc = subprocess.Popen(["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stdout is not None
    worker = int(proc.stdout.readline())
    stop_group(proc, grace=5)
    assert proc.returncode is not None
    deadline = time.monotonic() + 5
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(worker)


def test_a_reaped_leader_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    proc = subprocess.Popen(["true"], start_new_session=True)
    proc.wait()
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "killpg", lambda pgid, sig: sent.append((pgid, sig)))
    stop_group(proc)
    assert sent == []
