"""Snapshot files: the whole state machine at one applied index.

A snapshot lets the write-ahead log forget what it covers (log compaction)
and makes defragmentation real: after one, the data directory holds the live
records and nothing else. Format: a magic line, a pickled tuple of plain
values (no classes of ours, so old files load after refactors), and a SHA-256
of everything before it (the body zero-padded to a 512-byte multiple) — the
same integrity trailer etcd appends to its snapshot stream. A file that fails the check is never loaded: the server stops
with an error naming it rather than start from damaged state.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gifee.store.membership import Membership
from gifee.store.mvcc import MVCC, Record
from gifee.store.statemachine import Lease, StateMachine

MAGIC = b"GIFEE-SNAP-1\n"
FORMAT = 2


class SnapshotCorruptError(Exception):
    pass


@dataclass(frozen=True)
class RaftPosition:
    """Where in the Raft log a snapshot stands: the term of its last entry and the configuration then."""

    term: int = 0
    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()


def encode(sm: StateMachine, position: RaftPosition | None = None) -> bytes:
    m = sm.mvcc
    records = [(r.key, r.value, r.create, r.mod, r.sub, r.version, r.lease) for r in m.stored_records()]
    leases = [(lease.id, lease.ttl, sorted(lease.keys)) for lease in sm.leases.values()]
    state: tuple[Any, ...] = (
        FORMAT,
        sm.applied_index,
        m.revision,
        m.compact_revision,
        records,
        leases,
        sorted(sm.alarms),
        sm.membership.to_plain(),
        _plain(position or RaftPosition()),
    )
    body = MAGIC + pickle.dumps(state, protocol=5)
    # Zero padding to a 512-byte multiple, like a bbolt file: etcdctl's "snapshot save"
    # finds the SHA-256 trailer by that rule. Unpickling ignores the padding.
    body += bytes(-len(body) % 512)
    return body + hashlib.sha256(body).digest()


def decode(data: bytes, sm: StateMachine, name: str = "snapshot") -> RaftPosition:
    """Load the state in data into sm (which keeps its identity fields); return its Raft position."""
    if len(data) < len(MAGIC) + 32 or not data.startswith(MAGIC):
        raise SnapshotCorruptError(f"{name}: not a gifee snapshot")
    body, digest = data[:-32], data[-32:]
    if hashlib.sha256(body).digest() != digest:
        raise SnapshotCorruptError(f"{name}: checksum mismatch, the snapshot is damaged")
    state = pickle.loads(body[len(MAGIC) :])
    if state[0] != FORMAT:
        raise SnapshotCorruptError(f"{name}: unknown snapshot format {state[0]}")
    fmt, applied, revision, compact, records, leases, alarms, members, position = state
    sm.applied_index = applied
    sm.mvcc = MVCC.restore(revision, compact, [Record(*r) for r in records])
    sm.leases = {lid: Lease(lid, ttl, set(keys)) for lid, ttl, keys in leases}
    sm.alarms = {(int(m), int(a)) for m, a in alarms}
    sm.membership = Membership.from_plain(members)
    term, voters, learners = position
    return RaftPosition(int(term), tuple(voters), tuple(learners))


def _plain(p: RaftPosition) -> tuple[int, list[int], list[int]]:
    return (p.term, sorted(p.voters), sorted(p.learners))


def save(path: Path, data: bytes) -> None:
    """Write data to path atomically and durably (temp file, fsync, rename, fsync dir)."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load(path: Path, sm: StateMachine) -> tuple[RaftPosition, bytes] | None:
    """Load path into sm if it exists; return its Raft position and the file's bytes."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return decode(data, sm, str(path)), data
