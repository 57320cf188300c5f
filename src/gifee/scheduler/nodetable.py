"""The live nodes as columns: what a scheduling decision reads of every node, as numpy arrays, so
the filter and score passes over hundreds of nodes run in numpy instead of a Python loop per node.

Rules:
- Row r is the r-th NodeInfo given. Columns: `open` (a plain node with room for one more pod),
  `plain`, `soft` (has PreferNoSchedule taints), `cpu` and `mem` (the non-zero requests placed on
  it), `alloc_cpu` and `alloc_mem` (0: none), `crc` (CRC-32 of the node's name) and `name_len`;
  and per controller group, how many of its pods each row holds (sparse: group -> row -> count).
  `base` holds each row's node-only score terms for the pod requests and weights in `base_key`
  (core._base_array), `stale` the rows whose node or pods changed since. A NodeInfo's name never
  changes (the shell keys them by name), so `crc` and `name_len` are written once.
- Numbers are float64, exact for integers below 2**52 (so a pod's request plus a node's sum stays
  exact and divides as Python's int / int does); `inexact` counts the rows holding a larger number,
  where the caller computes in Python ints instead.
- Attached (the scheduler shell's table), every NodeInfo points at its row and tells the table of
  each change (NodeInfo.add, remove and set_node); a snapshot (attach=False) is read as built.
  The set of rows is fixed: a node that comes or goes needs a new table.
- `hashes(rows, salt)` is zlib.crc32(name, salt) of each row's name, from the stored crc32(name):
  CRC-32 is affine in (data, initial value) jointly, so for data of one length n,
  crc32(d, s) = crc32(d, 0) ^ crc32(zeros(n), s) ^ crc32(zeros(n), 0).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from gifee.scheduler.core import NodeInfo

EXACT = 2 ** 52  # below it, float64 holds an integer, and the sum of two, exactly

Rows = npt.NDArray[np.intp]
Floats = npt.NDArray[np.float64]


def _exact(*values: int) -> bool:
    return all(-EXACT < v < EXACT for v in values)


class NodeTable:
    def __init__(self, infos: Sequence[NodeInfo], *, attach: bool = False) -> None:
        self.infos = list(infos)
        n = len(self.infos)
        self.open = np.zeros(n, np.bool_)
        self.plain = np.ones(n, np.bool_)  # (ones, nonplain 0: the writes below count what differs)
        self.soft = np.zeros(n, np.bool_)
        self.big = np.zeros(n, np.bool_)
        self.cpu = np.zeros(n, np.float64)
        self.mem = np.zeros(n, np.float64)
        self.alloc_cpu = np.zeros(n, np.float64)
        self.alloc_mem = np.zeros(n, np.float64)
        self.crc = np.array([zlib.crc32(i.name_bytes) for i in self.infos], np.int64)
        self.name_len = np.array([len(i.name_bytes) for i in self.infos], np.intp)
        lengths = sorted(set(self.name_len.tolist()))
        # the hashes' per-length terms through a lookup table, when the names have few lengths
        self._zero_crcs = [(n, bytes(n), zlib.crc32(bytes(n))) for n in lengths] if len(lengths) <= 8 else None
        self._by_len = np.zeros(lengths[-1] + 1 if lengths else 1, np.int64)
        # the score terms of the node alone (core._base_array), for the pod requests and weights in base_key
        self.base = np.zeros(n, np.float64)
        self.stale = np.ones(n, np.bool_)  # base not yet computed for base_key
        self.base_key: tuple[int, int, int, int] | None = None
        self.nonplain = 0  # rows whose plain is False
        self.inexact = 0  # rows whose big is True
        self.groups: dict[str, dict[int, int]] = {}
        self.attached = attach
        for row, info in enumerate(self.infos):
            if attach:
                info.table, info.row = self, row
            self.write_node(row, info)
            for group, n_pods in info.groups.items():
                if n_pods > 0:
                    self.groups.setdefault(group, {})[row] = n_pods

    def detach(self) -> None:
        """Stop being told of the NodeInfos' changes (a new table replaces this one)."""
        if self.attached:
            for info in self.infos:
                if info.table is self:
                    info.table = None
            self.attached = False

    # -- kept current by the NodeInfos

    def write_node(self, row: int, info: NodeInfo) -> None:
        """The row's node changed (set_node): every column but the groups."""
        plain = info.plain
        if plain != bool(self.plain[row]):
            self.nonplain += -1 if plain else 1
            self.plain[row] = plain
        self.soft[row] = bool(info.soft_taints)
        self.alloc_cpu[row] = info.alloc_cpu
        self.alloc_mem[row] = info.alloc_mem
        self.write_load(row, info)

    def write_load(self, row: int, info: NodeInfo) -> None:
        """The row's pods changed (add, remove): the columns the node's sums decide."""
        self.open[row] = info.open
        self.stale[row] = True
        self.cpu[row] = info.cpu
        self.mem[row] = info.mem
        big = not _exact(info.cpu, info.mem, info.alloc_cpu, info.alloc_mem)
        if big != bool(self.big[row]):
            self.inexact += 1 if big else -1
            self.big[row] = big

    def count_group(self, row: int, group: str, delta: int) -> None:
        counts = self.groups.get(group)
        if counts is None:
            counts = self.groups[group] = {}
        n_pods = counts.get(row, 0) + delta
        if n_pods > 0:
            counts[row] = n_pods
        else:
            counts.pop(row, None)
            if not counts:
                del self.groups[group]

    # -- read by a decision

    def open_rows(self, start: int, enough: int) -> Rows:
        """The first `enough` open rows from `start` on, wrapping (in that order)."""
        rows = np.flatnonzero(self.open)
        k = int(np.searchsorted(rows, start))
        if len(rows) - k >= enough:
            return rows[k:k + enough]
        return np.concatenate((rows[k:], rows[:min(k, enough - (len(rows) - k))]))

    def group_counts(self, group: str, rows: Rows) -> Floats | None:
        """How many pods of `group` each of `rows` holds (None: none anywhere)."""
        counts = self.groups.get(group)
        if not counts:
            return None
        full = np.zeros(len(self.infos), np.float64)
        full[np.fromiter(counts.keys(), np.intp, len(counts))] = np.fromiter(counts.values(), np.float64,
                                                                              len(counts))
        return full[rows]

    def hashes(self, rows: Rows, salt: int) -> npt.NDArray[np.int64]:
        """zlib.crc32(name, salt) of each row's name (the module docstring says why this holds)."""
        out = self.crc[rows]
        lens = self.name_len[rows]
        if self._zero_crcs is not None:
            by_len = self._by_len
            for n, zeros, zero_crc in self._zero_crcs:
                by_len[n] = zlib.crc32(zeros, salt) ^ zero_crc
            return out ^ by_len[lens]
        for n in np.unique(lens).tolist():
            zeros = bytes(n)
            out[lens == n] ^= zlib.crc32(zeros, salt) ^ zlib.crc32(zeros)
        return out
