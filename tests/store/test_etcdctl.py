"""Differential tests through Debian's etcdctl 3.4 (ETCDCTL_API=3): same commands, same output.

Each script runs against the reference etcd and the candidate; transcripts (exit code,
normalized stdout, etcdctl's own stderr lines) must be equal. Note: etcdctl 3.4 has no
`get --count-only` (added in 3.5); counts are compared through `-w json` instead.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.store.reference import Ctl, ServerPair, ctl_differential

pytestmark = [pytest.mark.reference, pytest.mark.timeout(120)]


def entry(ctl: Ctl, label: str) -> Any:
    """The reference's recorded result for `label` (sanity checks that the test tests something)."""
    for lab, value in ctl.transcript:
        if lab == label:
            return value
    raise AssertionError(f"{label!r} not in the transcript: {[lab for lab, _ in ctl.transcript]}")


def test_put_get_del(pair: ServerPair) -> None:
    def script(c: Ctl) -> None:
        c.run("put", "a", "1")
        c.run("put", "a", "2", "--prev-kv")
        for k, v in (("b", "30"), ("c/1", "x"), ("c/2", "y"), ("c/3", "z"), ("d", "10"), ("b", "31")):
            c.run("put", k, v)
        c.run("put", "e", "--", "-dash-value")
        c.run("get", "a")
        c.run("get", "a", "-w", "json")
        c.run("get", "missing")
        c.run("get", "a", "c")
        c.run("get", "c/", "--prefix")
        c.run("get", "c/", "--prefix", "-w", "json")
        c.run("get", "b", "--from-key")
        c.run("get", "", "--from-key", "--keys-only")
        c.run("get", "", "--prefix", "--print-value-only")
        c.run("get", "c/", "--prefix", "--rev", "4")
        c.run("get", "b", "--rev", "3", "-w", "json")
        c.run("get", "", "--from-key", "--limit", "2")
        c.run("get", "", "--from-key", "--limit", "1", "-w", "json")  # count and more
        for target in ("KEY", "CREATE", "MODIFY", "VALUE", "VERSION"):
            for order in ("ASCEND", "DESCEND"):
                c.run("get", "", "--from-key", "--sort-by", target, "--order", order, "--keys-only")
        c.run("get", "", "--from-key", "--sort-by", "VALUE", "--order", "DESCEND", "--limit", "3")
        c.run("get", "a", "--rev", "100")  # future revision: error text
        c.run("get", "a", "-w", "fields")
        c.run("put", "a", "--ignore-value")
        c.run("put", "nothing-here", "--ignore-value")
        c.run("del", "a", "--prev-kv")
        c.run("del", "a")
        c.run("del", "c/", "--prefix", "--prev-kv")
        c.run("del", "d", "--from-key")
        c.run("del", "b", "-w", "json")
        c.run("get", "", "--from-key")
        c.run("put", "", "x")  # empty key
        c.run("put", "a", "z" * 10)
        c.run("get", "a", "--hex")

    ref, _ = ctl_differential(pair, script)
    assert entry(ref, "etcdctl get a")["stdout"] == ["a", "2", ""]


def test_txn_interactive(pair: ServerPair) -> None:
    def script(c: Ctl) -> None:
        c.run("put", "k", "v1")
        c.run("put", "n", "5")
        c.run("txn", "-i", input='value("k") = "v1"\nmod("k") > "0"\n\nput k v2\nget k\n\nput k failed\n\n')
        c.run("txn", input='value("k") = "v1"\n\nput k v3\n\nget k\ndel n\n\n')
        c.run("txn", "-w", "json", input='version("k") = "2"\ncreate("k") = "2"\n\nput k v4\nget n\n\n\n')
        c.run("txn", input='version("missing") = "0"\n\nput missing here\n\n\n')
        c.run("txn", input='val("k") != "v4"\n\nget k\n\nput k v5\n\n')
        c.run("txn", input='value("k") < "w"\n\ndel k --prev-kv\n\n\n')
        c.run("txn", input="bad compare\n")
        c.run("txn", input="\nput x 1\nput x 2\n\n\n")  # duplicate key
        c.run("get", "", "--from-key")

    ref, _ = ctl_differential(pair, script)
    assert entry(ref, "etcdctl txn -i")["stdout"][3] == "SUCCESS"


def test_watch(pair: ServerPair) -> None:
    def script(c: Ctl) -> None:
        c.run("put", "w/a", "0")  # revision 2
        w_prefix = c.background("watch", "w/", "--prefix", "--rev", "2")
        w_prev = c.background("watch", "w/a", "--prev-kv", "--rev", "2")
        w_json = c.background("watch", "w/", "--prefix", "-w", "json", "--rev", "2")
        w_range = c.background("watch", "w/a", "w/c", "--rev", "2")
        for bg in (w_prefix, w_prev, w_json, w_range):  # all synced: each saw revision 2
            bg.wait_lines(1)
        c.run("put", "w/a", "1")
        c.run("put", "w/b", "2")
        c.run("put", "w/z", "3")
        c.run("put", "x", "not watched")
        c.run("del", "w/a")
        c.run("txn", input="\nput w/a again\nput w/b again\n\n\n")
        w_prefix.wait_lines(6 * 3 + 2)  # PUT key value / DELETE key
        w_prev.wait_lines(3 + 5 + 4 + 3)  # with previous key and value
        w_json.wait_for('"revision":8')  # one JSON line per response; the txn is revision 8
        w_range.wait_lines(5 * 3 + 2)
        time.sleep(0.2)
        for label, bg in (
            ("watch --prefix", w_prefix),
            ("watch --prev-kv", w_prev),
            ("watch -w json", w_json),
            ("watch range", w_range),
        ):
            rc, lines, err = bg.stop()
            if label == "watch -w json":  # events one by one: batching into responses may differ
                out = [
                    c.json(ev)
                    for ln in lines
                    if ln.startswith("{")
                    for ev in json.loads(ln).get("Events") or []
                ]
                out += [c.text(ln) for ln in lines if not ln.startswith("{")]
            else:
                out = [c.text(ln) for ln in lines]
            c.record(label, {"stdout": out, "stderr": c.stderr(err)})
        c.run("compaction", "3")
        c.run("watch", "w/", "--prefix", "--rev", "2")  # compacted: exits with an error

    ref, _ = ctl_differential(pair, script)
    assert "again" in entry(ref, "watch --prefix")["stdout"]


def test_lease(pair: ServerPair) -> None:
    def script(c: Ctl) -> None:
        l1 = c.grant(60)
        l2 = c.grant(30)
        c.run("lease", "grant", "1")  # raised to the minimum TTL
        c.run("lease", "grant", "9000000001")
        c.run("lease", "grant", "20", "-w", "json")
        c.run("put", "lk/1", "v", "--lease", l1)
        c.run("put", "lk/2", "v", "--lease", l1)
        c.run("put", "lk/3", "v", "--lease", l2)
        c.run("put", "lk/x", "v", "--lease", "123abc")
        c.run("put", "lk/3", "v2", "--ignore-lease")
        c.run("lease", "list", sort_lines=True)
        c.run("lease", "list", "-w", "json")
        c.run("lease", "timetolive", l1)
        c.run("lease", "timetolive", l1, "--keys")
        c.run("lease", "timetolive", l1, "--keys", "-w", "json")
        c.run("lease", "timetolive", "123abc")
        c.run("lease", "keep-alive", "--once", l1)
        c.run("lease", "keep-alive", "--once", l2, "-w", "json")
        c.run("lease", "keep-alive", "--once", "123abc")
        c.run("lease", "revoke", l1)
        c.run("lease", "revoke", l1)
        c.run("lease", "revoke", "123abc")
        c.run("get", "lk/", "--prefix")
        c.run("lease", "timetolive", l1)
        c.run("lease", "list", sort_lines=True)
        c.run("get", "lk/3", "-w", "json")

    ref, _ = ctl_differential(pair, script)
    assert entry(ref, "etcdctl lease grant 1")["stdout"][0].endswith("granted with TTL(2s)")


def test_compaction(pair: ServerPair) -> None:
    def script(c: Ctl) -> None:
        for i in range(6):
            c.run("put", "k", str(i))  # revisions 2..7
        c.run("compaction", "100")
        c.run("compaction", "4")
        c.run("compaction", "4")
        c.run("compaction", "3")
        c.run("get", "k", "--rev", "3")
        c.run("get", "k", "--rev", "4")
        c.run("get", "k")
        c.run("compaction", "--physical", "6")
        c.run("get", "k", "--rev", "5")
        c.run("get", "k", "--rev", "6", "-w", "json")

    ref, _ = ctl_differential(pair, script)
    assert entry(ref, "etcdctl compaction 4")["stdout"][0] == "compacted revision 4"


def _status_row(c: Ctl, line: str) -> str:
    # endpoint, ID, version, db size, is leader, is learner, raft term, raft index, applied index, errors
    cols = line.split(", ")
    if len(cols) < 10:
        return c.text(line)
    keep = {0: c.text(cols[0]), 1: "<id>" if cols[1] else "", 4: cols[4], 5: cols[5], 9: cols[9]}
    return ", ".join(keep.get(i, "<varies>") for i in range(len(cols)))


def _member_row(c: Ctl, line: str) -> str:
    cols = line.split(", ")
    if len(cols) < 6:
        return c.text(line)
    return ", ".join(["<id>"] + [c.text(x) for x in cols[1:]])


def test_endpoint_member_alarm_defrag_snapshot(pair: ServerPair, tmp_path: Path) -> None:
    def script(c: Ctl) -> None:
        c.run("put", "s", "1")
        proc = c.run("endpoint", "status", record=False)  # version, sizes and raft indexes vary
        c.record(
            "etcdctl endpoint status",
            (proc.returncode, [_status_row(c, ln) for ln in proc.stdout.splitlines()]),
        )
        c.run("endpoint", "status", "-w", "json")
        c.run("endpoint", "health")
        c.run("endpoint", "health", "-w", "json")
        proc = c.run("member", "list", record=False)
        c.record(
            "etcdctl member list", (proc.returncode, [_member_row(c, ln) for ln in proc.stdout.splitlines()])
        )
        c.run("member", "list", "-w", "json")
        c.run("alarm", "list")
        c.run("defrag")
        c.run("endpoint", "status", "-w", "json")
        snap = tmp_path / f"{c.name}-{c.server.client_port}.db"
        proc = c.run("snapshot", "save", str(snap), label="etcdctl snapshot save <file>")
        label, result = c.transcript[-1]
        result["stdout"] = [ln.replace(str(snap), "<file>") for ln in result["stdout"]]
        c.record("snapshot file non-empty", snap.exists() and snap.stat().st_size > 0)
        c.run("get", "s")

    ref, _ = ctl_differential(pair, script)
    assert entry(ref, "snapshot file non-empty") is True
    assert entry(ref, "etcdctl snapshot save <file>")["rc"] == 0


def test_lock(pair: ServerPair, tmp_path: Path) -> None:
    def script(c: Ctl) -> None:
        c.owner_prefixes |= {"mylock/", "held/"}
        c.run("lock", "mylock", "--", "echo", "held")
        c.run("lock", "mylock", "--", "sh", "-c", 'echo "$ETCD_LOCK_KEY"')
        # Two concurrent lockers running a 1 s critical section: they must not overlap.
        log = tmp_path / f"lock-{c.server.client_port}.log"
        section = f'echo "start $0" >> {log}; sleep 1; echo "end $0" >> {log}'
        a = c.background("lock", "serial", "--", "sh", "-c", section, "A")
        b = c.background("lock", "serial", "--", "sh", "-c", section, "B")
        codes = [x.proc.wait(15) for x in (a, b)]
        for x in (a, b):
            x.stop()
        events = log.read_text().split("\n")[:-1] if log.exists() else []
        pairs = [(events[i].split()[-1], events[i + 1].split()[-1]) for i in range(0, len(events) - 1, 2)]
        serialized = (
            len(events) == 4
            and all(s.startswith("start") for s in events[::2])
            and all(p == q for p, q in pairs)
        )
        c.record("two lockers: exit codes, serialized", (codes, serialized, len(events)))
        # `lock NAME` without a command prints the key and holds the lock until interrupted.
        holder = c.background("lock", "held")
        holder.wait_lines(1)
        waiter = c.background("lock", "held", "--", "echo", "second")
        time.sleep(0.7)
        c.record("waiter blocked while held", waiter.proc.poll() is None and not waiter.lines)
        rc, lines, _ = holder.stop(signal.SIGINT)
        c.record("holder output", [c.text(ln) for ln in lines])
        waiter.wait_lines(1, timeout=10)
        rc2, lines2, _ = waiter.stop()
        c.record("waiter output after release", (rc2, lines2))
        c.run("get", "held", "--prefix", "--keys-only")

    ref, _ = ctl_differential(pair, script)
    assert entry(ref, "etcdctl lock mylock -- echo held")["stdout"] == ["held", ""]
    assert entry(ref, "two lockers: exit codes, serialized") == ([0, 0], True, 4)
    assert entry(ref, "waiter output after release") == (0, ["second"])


def test_elect(pair: ServerPair) -> None:
    def script(c: Ctl) -> None:
        c.owner_prefixes.add("myelection/")
        observer = c.background("elect", "-l", "myelection")
        time.sleep(0.3)
        c1 = c.background("elect", "myelection", "p1")
        c1.wait_lines(2)
        observer.wait_lines(2)
        c2 = c.background("elect", "myelection", "p2")
        time.sleep(0.7)
        c.record("second candidate waits", (c2.proc.poll() is None, list(c2.lines)))
        _, lines1, _ = c1.stop(signal.SIGINT)  # resigns
        c2.wait_lines(2)
        observer.wait_lines(4)
        _, lines2, _ = c2.stop(signal.SIGINT)
        time.sleep(0.3)
        _, obs, _ = observer.stop(signal.SIGINT)
        c.record("candidate 1 output", [c.text(ln) for ln in lines1])
        c.record("candidate 2 output", [c.text(ln) for ln in lines2])
        c.record("observer output", [c.text(ln) for ln in obs])
        c.run("get", "myelection/", "--prefix")

    ref, _ = ctl_differential(pair, script)
    assert [ln for ln in entry(ref, "observer output") if not ln.startswith("myelection/")] == ["p1", "p2"]


def test_client_side_errors(pair: ServerPair) -> None:
    """Usage errors and edge cases: both servers must make etcdctl act alike."""

    def script(c: Ctl) -> None:
        c.run("get")  # missing argument
        c.run("put", "onlykey")
        c.run("del", "")
        c.run("get", "k", "--sort-by", "BOGUS")
        c.run("get", "x", "--consistency", "s")

    ref, _ = ctl_differential(pair, script)
    assert entry(ref, "etcdctl del ")["stderr"] == ["Error: etcdserver: key is not provided"]
