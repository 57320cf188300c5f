"""gifee clusters of real processes on loopback, driven with Debian's etcdctl 3.4.

Every test starts its own members (`tests/store/cluster.py`, one process each: --grpc-workers 0)
on free 127.0.0.1 ports in a temp dir, and kills all of them at the end, whatever happened.
"""

from __future__ import annotations

import base64
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from gifee.store.proto import rpc_pb2, rpc_pb2_grpc
from tests.store.cluster import Cluster, Member, etcdctl, etcdctl_json, make_clusters, wait_for
from tests.store.reference import BackgroundCtl

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

MakeCluster = Callable[..., Cluster]


@pytest.fixture
def clusters(tmp_path: Path) -> Iterator[MakeCluster]:
    with make_clusters(tmp_path) as make:
        yield make


def started(make: MakeCluster, size: int = 3, **kwargs: Any) -> Cluster:
    cluster = make(size, **kwargs)
    cluster.start()
    wait_published(cluster)
    return cluster


def wait_published(cluster: Cluster, members: list[Member] | None = None) -> None:
    """Until every member lists every (given) member with its name and client URLs (etcd's publish)."""
    group = members or cluster.serving

    def published() -> bool:
        for m in group:
            listed = {int(x.ID): x for x in cluster.member_list(m)}
            for other in group:
                info = listed.get(other.member_id)
                if info is None or info.name != other.name or list(info.clientURLs) != [other.client_url]:
                    return False
        return True

    wait_for("every member to be published", published, 30)


def hexid(member: Member) -> str:
    return f"{member.member_id:x}"


def ctl_get(member: Member, key: str, *args: str) -> list[tuple[str, str]]:
    """etcdctl get on one member: [(key, value)]."""
    out = etcdctl_json(member.endpoint, "get", key, *args)
    return [
        (base64.b64decode(kv["key"]).decode(), base64.b64decode(kv.get("value", "")).decode())
        for kv in out.get("kvs", [])
    ]


def status_cluster(via: Member) -> list[dict[str, Any]]:
    out = etcdctl_json(via.endpoint, "endpoint", "status", "--cluster")
    assert isinstance(out, list)
    return out


def hashkv_cluster(via: Member, revision: int) -> dict[str, tuple[int, int]]:
    """endpoint hashkv --cluster at revision: {endpoint URL: (hash, header revision)}."""
    out = etcdctl_json(via.endpoint, "endpoint", "hashkv", "--cluster", "--rev", str(revision))
    return {e["Endpoint"]: (int(e["HashKV"]["hash"]), int(e["HashKV"]["header"]["revision"])) for e in out}


def assert_hashkv_equal(cluster: Cluster, members: list[Member] | None = None) -> int:
    """All (given, default serving) members converged, and etcdctl's hashkv --cluster agrees on every one."""
    group = members or cluster.serving
    revision = cluster.wait_converged(group)
    hashes = hashkv_cluster(group[0], revision)
    assert set(hashes) == {m.client_url for m in group}, hashes
    assert len({h for h, _ in hashes.values()}) == 1, f"hashkv differs at revision {revision}: {hashes}"
    return revision


def one_leader(via: Member) -> int:
    """endpoint status --cluster: every member names the same leader, and exactly one is it. Its ID."""
    entries = status_cluster(via)
    leaders = {int(e["Status"]["leader"]) for e in entries}
    assert len(leaders) == 1 and 0 not in leaders, entries
    leader = leaders.pop()
    is_leader = [e for e in entries if int(e["Status"]["header"]["member_id"]) == leader]
    assert len(is_leader) == 1, entries
    return leader


# --------------------------------------------------------------------------- bootstrap and replication


def test_three_members_bootstrap_agree_and_replicate(clusters: MakeCluster) -> None:
    c = started(clusters)
    g1, g2, g3 = c.members

    # member list: the same three members, named, with their URLs, from every member.
    lists = []
    for m in c.members:
        out = etcdctl_json(m.endpoint, "member", "list")
        lists.append(
            sorted(
                (
                    int(x["ID"]),
                    x["name"],
                    tuple(x["peerURLs"]),
                    tuple(x["clientURLs"]),
                    bool(x.get("isLearner")),
                )
                for x in out["members"]
            )
        )
    assert lists[0] == lists[1] == lists[2]
    assert lists[0] == sorted((m.member_id, m.name, (m.peer_url,), (m.client_url,), False) for m in c.members)

    # endpoint status --cluster: one leader, the one every member names.
    leader_id = one_leader(g2)
    assert c.leader().member_id == leader_id
    entries = status_cluster(g3)
    assert sorted(e["Endpoint"] for e in entries) == sorted(m.client_url for m in c.members)

    # A write on each member is read on every other, linearizably at once...
    for i, m in enumerate(c.members):
        etcdctl(m.endpoint, "put", f"k{i}", f"from-{m.name}", check=True)
        for other in c.members:
            assert ctl_get(other, f"k{i}") == [(f"k{i}", f"from-{m.name}")], other
    # ...and serializably once the member caught up.
    revision = assert_hashkv_equal(c)
    for m in c.members:
        got = ctl_get(m, "k", "--prefix", "--consistency=s")
        assert got == [(f"k{i}", f"from-{x.name}") for i, x in enumerate(c.members)], m
        assert int(etcdctl_json(m.endpoint, "get", "k0", "--consistency=s")["header"]["revision"]) == revision

    # A txn and a delete through a follower are seen everywhere too.
    follower = c.followers()[0]
    proc = etcdctl(
        follower.endpoint, "txn", input='value("k0") = "from-g1"\n\nput k0 swapped\n\nput k0 not\n\n'
    )
    assert proc.returncode == 0 and proc.stdout.startswith("SUCCESS"), proc
    etcdctl(follower.endpoint, "del", "k1", check=True)
    assert_hashkv_equal(c)
    for m in c.members:
        assert ctl_get(m, "k", "--prefix", "--consistency=s") == [("k0", "swapped"), ("k2", "from-g3")]


def test_move_leader(clusters: MakeCluster) -> None:
    c = started(clusters, grpc_workers=1)  # this once, gRPC in a worker process per member
    leader = c.leader()
    target = c.followers(leader)[0]
    out = etcdctl(c.endpoints(), "move-leader", hexid(target), check=True)
    assert f"Leadership transferred from {hexid(leader)} to {hexid(target)}" in out.stdout, out
    assert c.leader() is target
    assert one_leader(leader) == target.member_id
    # A non-voter is refused, and writes go on under the new leader.
    bad = etcdctl(c.endpoints(), "move-leader", "1234")
    assert bad.returncode != 0
    etcdctl(leader.endpoint, "put", "after", "move", check=True)
    assert ctl_get(target, "after") == [("after", "move")]
    assert_hashkv_equal(c)


def test_sigkill_leader_new_leader_and_catch_up(clusters: MakeCluster) -> None:
    c = started(clusters)
    for i in range(20):
        c.put(b"before/%02d" % i, b"v%d" % i)
    old = c.leader()
    old.crash()
    survivors = [m for m in c.members if m is not old]
    new = c.leader(survivors)
    assert new is not old
    for i in range(30):
        etcdctl(survivors[i % 2].endpoint, "put", f"after/{i:02d}", f"w{i}", check=True)
    assert len(ctl_get(new, "after/", "--prefix")) == 30
    old.restart()
    revision = assert_hashkv_equal(c, c.members)
    got = ctl_get(old, "", "--from-key", "--consistency=s")
    assert len(got) == 50
    assert ("after/29", "w29") in got
    assert int(etcdctl_json(old.endpoint, "get", "x", "--consistency=s")["header"]["revision"]) == revision
    one_leader(old)


def test_put_at_a_follower_whose_leader_died_waits_for_the_next_leader(clusters: MakeCluster) -> None:
    # Forwarded to the dead leader, the put would be lost and the call would end at the
    # store's request timeout (7 s here) with "request timed out". A follower that has missed
    # heartbeats holds it instead and hands it to the next leader: the same call succeeds.
    c = started(clusters)
    c.put(b"k", b"before")
    old = c.leader()
    follower = c.followers(old)[0]
    old.crash()
    time.sleep(0.5)  # well past three missed heartbeats (100 ms), before any election (1 s timeout)
    began = time.monotonic()
    with grpc.insecure_channel(follower.endpoint) as ch:
        resp = rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"k", value=b"after"), timeout=15)
    took = time.monotonic() - began
    assert took < 5, f"the put took {took:.2f} s"
    assert resp.header.revision > 0
    new = c.leader([m for m in c.members if m is not old])
    assert ctl_get(new, "k") == [("k", "after")]


# --------------------------------------------------------------------------- membership


def test_learner_added_started_existing_and_promoted(clusters: MakeCluster) -> None:
    c = started(clusters)
    for i in range(10):
        c.put(b"pre/%d" % i, b"x")
    new = c.new_member(state="existing")
    added = etcdctl_json(c.endpoints(), "member", "add", new.name, "--peer-urls", new.peer_url, "--learner")
    new.member_id = int(added["member"]["ID"])
    assert added["member"].get("isLearner") is True
    new.start()
    wait_published(c, c.serving)
    st = c.status(new)
    assert st.isLearner
    # The learner holds the data but is not a voter: endpoint status shows it as a learner.
    assert_hashkv_equal(c)
    entries = {e["Endpoint"]: e for e in status_cluster(c.members[0])}
    assert entries[new.client_url]["Status"].get("isLearner") is True

    def promote() -> bool:
        return etcdctl(c.endpoints(), "member", "promote", hexid(new)).returncode == 0

    wait_for("the learner's promotion", promote, 30, interval=0.5)
    listed = {int(x["ID"]): x for x in etcdctl_json(new.endpoint, "member", "list")["members"]}
    assert len(listed) == 4
    assert not any(x.get("isLearner") for x in listed.values()), listed
    assert not c.status(new).isLearner
    etcdctl(new.endpoint, "put", "post", "promotion", check=True)
    one_leader(new)
    assert_hashkv_equal(c)
    # Now a voter among four: with one of the others down, three are a majority and writes go on.
    # (Retried: a write forwarded to a leader that just died is lost and times out, as in etcd.)
    c.members[0].crash()
    c.put(b"one", b"down", member=new, timeout=30)


def test_member_remove_exits_and_a_new_member_takes_its_peer_url(clusters: MakeCluster) -> None:
    c = started(clusters)
    c.put(b"a", b"1")
    victim = c.followers()[0]
    out = etcdctl(c.endpoints([m for m in c.members if m is not victim]), "member", "remove", hexid(victim))
    assert out.returncode == 0 and re.search(rf"Member +{hexid(victim)} removed", out.stdout), out  # %16x
    victim.removed = True
    code = victim.wait_exit(20)
    assert code != 0 or "removed" in victim.log_text()
    assert "permanently removed" in victim.log_text()
    rest = [m for m in c.members if m is not victim]
    assert sorted(
        int(x["ID"]) for x in etcdctl_json(rest[0].endpoint, "member", "list")["members"]
    ) == sorted(m.member_id for m in rest)
    etcdctl(rest[0].endpoint, "put", "b", "2", check=True)

    # Its data dir now refuses to start a member again.
    victim.launch()
    victim.wait_exit(20)
    assert "removed" in victim.log_text().split("=== start #2")[-1]

    # A new member (fresh data dir) on the removed member's peer URL.
    new = c.new_member(host=victim.host, client_port=victim.client_port, peer_port=victim.peer_port)
    assert new.peer_url == victim.peer_url and new.data_dir != victim.data_dir
    added = etcdctl_json(c.endpoints(rest), "member", "add", new.name, "--peer-urls", new.peer_url)
    new.member_id = int(added["member"]["ID"])
    assert new.member_id != victim.member_id
    new.start()
    wait_published(c)
    assert_hashkv_equal(c)
    assert ctl_get(new, "", "--from-key", "--consistency=s") == [("a", "1"), ("b", "2")]
    one_leader(new)


def test_member_joining_after_compaction_gets_a_snapshot(clusters: MakeCluster) -> None:
    c = started(clusters, snapshot_count=50)
    for i in range(130):
        c.put(b"snap/%03d" % i, b"v%d" % i, member=c.members[i % 3])
    new = c.new_member()
    c.add_member(new)
    new.start()
    wait_published(c)
    assert_hashkv_equal(c)
    assert "installed snapshot" in new.log_text(), new.log_tail()
    got = ctl_get(new, "snap/", "--prefix", "--consistency=s")
    assert got == [(f"snap/{i:03d}", f"v{i}") for i in range(130)]
    # The leader's log no longer holds the early entries: the new member cannot have replayed them.
    assert all("installed snapshot" not in m.log_text() for m in c.members[:3])


def test_member_with_another_cluster_token_is_refused(clusters: MakeCluster) -> None:
    c = started(clusters)
    c.put(b"mine", b"1")
    intruder = c.new_member(state="new", token="some-other-cluster")
    # It believes it bootstraps a cluster of the three running members and itself.
    intruder.start()
    time.sleep(6)  # several election timeouts
    st = c.status(intruder)
    assert st.leader == 0, "a member with another token found a leader"
    assert not c.get(b"mine", intruder, serializable=True)
    refusals = "".join(m.log_text() for m in c.members[:3])
    assert "refusing peer connection" in refusals, c.logs()
    # The cluster never saw it, and keeps working.
    members = etcdctl_json(c.members[0].endpoint, "member", "list")["members"]
    assert sorted(int(x["ID"]) for x in members) == sorted(m.member_id for m in c.members[:3])
    assert intruder.running
    for i in range(5):
        etcdctl(c.members[i % 3].endpoint, "put", f"still/{i}", "ok", check=True)
    assert_hashkv_equal(c, c.members[:3])
    leaders = {c.status(m).leader for m in c.members[:3]}
    assert len(leaders) == 1 and intruder.member_id not in leaders


def test_five_members_with_one_down_from_the_start(clusters: MakeCluster) -> None:
    c = clusters(5)
    late = c.members[4]
    c.start(c.members[:4])
    wait_published(c, c.members[:4])
    for i in range(10):
        etcdctl(c.members[i % 4].endpoint, "put", f"k{i}", str(i), check=True)
    listed = etcdctl_json(c.members[0].endpoint, "member", "list")["members"]
    assert len(listed) == 5
    # As in etcd, a bootstrap member that never started is listed with its name from
    # --initial-cluster, but without client URLs (it never published them).
    unpublished = [x for x in listed if not x.get("clientURLs")]
    assert [(x["name"], x["peerURLs"]) for x in unpublished] == [(late.name, [late.peer_url])]
    assert_hashkv_equal(c, c.members[:4])
    # One more down of the four still leaves a majority (3 of 5).
    c.members[0].crash()
    c.put(b"three", b"left", member=c.members[1], timeout=30)
    late.start()
    c.members[0].restart()
    wait_published(c)
    assert_hashkv_equal(c)
    assert len(ctl_get(late, "", "--from-key", "--consistency=s")) == 11
    one_leader(late)


# --------------------------------------------------------------------------- concurrency and leases


def test_lock_and_elect(clusters: MakeCluster) -> None:
    c = started(clusters)
    g1, g2, g3 = c.members
    procs: list[BackgroundCtl] = []

    def background(member: Member, *args: str) -> BackgroundCtl:
        proc = BackgroundCtl(member.endpoint, *args)
        procs.append(proc)
        return proc

    def stop(proc: BackgroundCtl) -> str:
        if proc.proc.poll() is None:
            proc.stop()
        return "\n".join(proc.lines)

    try:
        first = background(g1, "lock", "mylock")
        assert first.wait_lines(1, 20), stop(first)
        assert first.lines[0].startswith("mylock/")
        second = background(g2, "lock", "mylock")
        assert not second.wait_lines(1, 3), "a second holder got the lock"
        stop(first)  # SIGINT: unlock and close the session
        assert second.wait_lines(1, 20), stop(second)
        assert second.lines[0].startswith("mylock/") and second.lines[0] != first.lines[0]
        stop(second)
        # Run a command under the lock, on a third member.
        out = etcdctl(g3.endpoint, "lock", "mylock", "echo", "locked-run", check=True)
        assert "locked-run" in out.stdout

        cand1 = background(g1, "elect", "myelection", "p1")
        observer = background(g3, "elect", "-l", "myelection")
        assert cand1.wait_for("p1", 20), stop(cand1)
        assert observer.wait_for("p1", 20), stop(observer)
        cand2 = background(g2, "elect", "myelection", "p2")
        assert not cand2.wait_for("p2", 3), "two leaders at once"
        stop(cand1)  # resigns
        assert cand2.wait_for("p2", 20), stop(cand2)
        assert observer.wait_for("p2", 20), stop(observer)
    finally:
        for proc in procs:
            stop(proc)


def grant(member: Member, ttl: int) -> str:
    out = etcdctl(member.endpoint, "lease", "grant", str(ttl), check=True).stdout
    return out.split()[1]  # "lease 694d77aa9e2a7d1a granted with TTL(5s)"


def key_gone(cluster: Cluster, member: Member, key: str) -> bool:
    return not ctl_get(member, key)


def test_lease_expires_after_leader_changes(clusters: MakeCluster) -> None:
    c = started(clusters)
    leader = c.leader()
    follower = c.followers(leader)[0]
    ttl = 6
    lease_a = grant(follower, ttl)
    etcdctl(follower.endpoint, "put", "leased/a", "x", "--lease", lease_a, check=True)
    granted_at = time.monotonic()
    # Leader change 1: move-leader (the old leader stays up).
    target = c.followers(leader)[1]
    etcdctl(c.endpoints(), "move-leader", hexid(target), check=True)
    assert c.leader() is target
    gone = wait_for("leased/a to expire", lambda: key_gone(c, leader, "leased/a"), 40)
    assert gone
    elapsed = time.monotonic() - granted_at
    assert elapsed >= ttl - 1, f"deleted after {elapsed:.1f}s, TTL {ttl}s"
    assert "already expired" in etcdctl(leader.endpoint, "lease", "timetolive", lease_a).stdout

    # Leader change 2: SIGKILL of the leader.
    lease_b = grant(leader, ttl)
    etcdctl(leader.endpoint, "put", "leased/b", "y", "--lease", lease_b, check=True)
    granted_at = time.monotonic()
    target.crash()
    survivors = [m for m in c.members if m is not target]
    new = c.leader(survivors)
    assert new is not target
    wait_for("leased/b to expire", lambda: key_gone(c, new, "leased/b"), 40)
    elapsed = time.monotonic() - granted_at
    assert elapsed >= ttl - 1, f"deleted after {elapsed:.1f}s, TTL {ttl}s"
    target.restart()
    assert_hashkv_equal(c, c.members)
    assert not ctl_get(target, "leased/", "--prefix", "--consistency=s")


def test_keepalive_sent_to_a_follower_keeps_a_lease_alive(clusters: MakeCluster) -> None:
    c = started(clusters)
    leader = c.leader()
    follower = c.followers(leader)[0]
    ttl = 3
    lease = grant(leader, ttl)
    etcdctl(leader.endpoint, "put", "kept", "alive", "--lease", lease, check=True)
    keeper = BackgroundCtl(follower.endpoint, "lease", "keep-alive", lease)
    try:
        assert keeper.wait_for("keepalived with TTL", 10), keeper.stop()
        deadline = time.monotonic() + 3 * ttl + 2
        while time.monotonic() < deadline:
            assert ctl_get(leader, "kept") == [("kept", "alive")], "expired despite keepalives to a follower"
            time.sleep(0.5)
        ttl_out = etcdctl(leader.endpoint, "lease", "timetolive", lease).stdout
        assert "remaining" in ttl_out and "remaining(-1s)" not in ttl_out, ttl_out
    finally:
        code, _, _ = keeper.stop(signal.SIGTERM)
    stopped_at = time.monotonic()
    wait_for("the lease to expire once keepalives stop", lambda: key_gone(c, follower, "kept"), 30)
    assert time.monotonic() - stopped_at >= 1.0
