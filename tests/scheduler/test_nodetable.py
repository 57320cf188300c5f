"""The scheduler's NodeTable: the columns kept current by attached NodeInfos equal a table built
afresh, its hashes equal zlib's, and decisions made over it while pods are placed one by one (as
the shell does) equal the plain rules'."""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gifee.scheduler import core
from gifee.scheduler.nodetable import NodeTable
from tests.scheduler.test_core_equivalence import TAINTS, make_node, make_pod, node_st, pod_st, reference


@settings(max_examples=300, deadline=None)
@given(names=st.lists(st.binary(max_size=40), min_size=1, max_size=30), prefix=st.binary(max_size=60))
def test_hashes_equal_zlibs(names: list[bytes], prefix: bytes) -> None:
    infos = [core.NodeInfo({"metadata": {"name": "x"}}) for _ in names]
    for info, name in zip(infos, names, strict=True):
        info.name_bytes = name
    table = NodeTable(infos)
    salt = zlib.crc32(prefix)
    rows = list(range(len(names)))[::-1]
    got = table.hashes(np.array(rows, np.intp), salt).tolist()
    assert got == [zlib.crc32(names[r], salt) for r in rows]


def columns(table: NodeTable) -> tuple[Any, ...]:
    return (table.open.tolist(), table.plain.tolist(), table.soft.tolist(), table.big.tolist(),
            table.cpu.tolist(), table.mem.tolist(), table.alloc_cpu.tolist(), table.alloc_mem.tolist(),
            table.crc.tolist(), table.name_len.tolist(), table.groups, table.nonplain, table.inexact)


op_st = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 9), st.integers(0, 5), pod_st),
    st.tuples(st.just("remove"), st.integers(0, 9)),
    st.tuples(st.just("node"), st.integers(0, 5), node_st))


@settings(max_examples=200, deadline=None)
@given(nodes=st.lists(node_st, min_size=1, max_size=6), ops=st.lists(op_st, max_size=40))
def test_an_attached_table_stays_current(nodes: list[dict[str, Any]], ops: list[tuple[Any, ...]]) -> None:
    infos = [core.NodeInfo(make_node(i, d)) for i, d in enumerate(nodes)]
    table = NodeTable(infos, attach=True)
    where: dict[str, int] = {}
    for op in ops:
        if op[0] == "add":
            _, k, n, d = op
            key, n = f"p{k}", n % len(infos)
            if key in where and where[key] != n:
                infos[where.pop(key)].remove(key)
            infos[n].add(key, core.pod_facts(make_pod(key, d, f"n{n}")))
            where[key] = n
        elif op[0] == "remove":
            key = f"p{op[1]}"
            if key in where:
                infos[where.pop(key)].remove(key)
        else:
            _, n, d = op
            n %= len(infos)
            infos[n].set_node(make_node(n, d))
        assert columns(table) == columns(NodeTable(infos))
    table.detach()
    assert all(i.table is None for i in infos)


big_node_st = st.fixed_dictionaries({
    "cpu": st.sampled_from(["500m", "4", "4503599627370497"]),
    "mem": st.sampled_from(["8Gi", "20Ti", "9007199254740993", "12345678901234567891"]),
    "pods": st.sampled_from(["3", "110"]), "taints": st.lists(st.sampled_from(TAINTS), max_size=1),
    "unschedulable": st.just(False), "zone": st.sampled_from(["a", "b"])})


@settings(max_examples=150, deadline=None)
@given(nodes=st.lists(st.one_of(node_st, big_node_st), min_size=1, max_size=12),
       pending=st.lists(pod_st, min_size=1, max_size=25), percentage=st.sampled_from([0, 50, 100]),
       with_service=st.booleans())
def test_decisions_over_the_shells_table_equal_the_plain_rules(
        nodes: list[dict[str, Any]], pending: list[dict[str, Any]], percentage: int, with_service: bool) -> None:
    """Pods placed one by one, each counted on its node before the next decision (the shell's
    assumption), with one attached table throughout; every node as large as float64 cannot hold
    exactly (the Python fallback) or not."""
    infos = [core.NodeInfo(make_node(i, d)) for i, d in enumerate(nodes)]
    table = NodeTable(infos, attach=True)
    services = [{"metadata": {"name": "s", "namespace": "default"}, "spec": {"selector": {"app": "web"}}}] \
        if with_service else []
    start = 0
    for k, d in enumerate(pending):
        pod = make_pod(f"new{k}", d)
        want = reference(pod, infos, services, start=start, percentage=percentage)
        got = core.schedule_on(pod, table, services, start=start, percentage=percentage)
        assert (got.node, got.scores, got.reasons, got.message, got.checked) == \
            (want.node, want.scores, want.reasons, want.message, want.checked)
        fast = core.schedule_on(pod, table, services, start=start, percentage=percentage, with_scores=False)
        assert (fast.node, fast.checked) == (want.node, want.checked)
        start += got.checked
        if got.node is not None:
            infos[int(got.node[1:])].add(f"default/new{k}", core.pod_facts(make_pod(f"new{k}", d, got.node)))


def test_numbers_float64_cannot_hold_are_scored_in_python_ints() -> None:
    """Nodes' memory and a request past 2**53 thousandths: float64 would round them before the
    division, and this pair's scores would come out one step off the plain rules'."""
    d = {"cpu": "4", "mem": "52289959266986209", "pods": "110", "taints": [], "unschedulable": False,
         "zone": "a"}
    infos = [core.NodeInfo(make_node(i, d)) for i in range(20)]  # (more rows than are computed one by one)
    table = NodeTable(infos, attach=True)
    pod = make_pod("big", {"cpu": "", "mem": "39226988588996575", "group": -1, "port": 0, "node": 0,
                           "tolerations": [], "selector": False, "preferred": False, "app": "web"})
    want = reference(pod, infos, [], start=0, percentage=100)
    assert core.schedule_on(pod, table).scores == want.scores
    assert core.schedule_on(pod, infos).scores == want.scores
