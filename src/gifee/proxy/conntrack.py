"""Forgetting the kernel's translated flows to backends that are gone (the shell side of
`rules.removed_backends`).

Why: the service rules choose a backend only for a flow's first packet; conntrack
remembers the choice. A TCP SYN to a dead pod leaves an entry in SYN_SENT for two
minutes, and a client that reuses the same source port meanwhile (a busy client cycles
through its ports in that time) has its new SYN taken for a retransmission and sent to
the dead pod again. kube-proxy clears UDP entries for the same reason.

What is deleted, per removed backend: entries whose reply comes from that backend and
whose original destination was another address (translated by the service rules, not
direct traffic to the pod); all of them for UDP, only the never-answered ones for TCP
and SCTP, so an established connection to a pod that leaves gracefully keeps going.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("gifee.proxy")

IPS_SEEN_REPLY = 1 << 1
PROTOCOL_NUMBERS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP, "sctp": socket.IPPROTO_SCTP}


def forget_flows(backends: Iterable[tuple[str, str, int]]) -> int:
    """Delete the stale translated entries of these (protocol, ip, port) backends in this network
    namespace; returns how many were deleted. Blocking (netlink): run it in a thread.

    The kernel filters the dumps (pyroute2 parses an entry in about a millisecond, and a busy
    service's backend has thousands of answered entries): one dump of the never-answered
    entries of every protocol, and one per UDP backend of the entries it answered."""
    from pyroute2 import Conntrack
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

    gone = {(PROTOCOL_NUMBERS[protocol], ip, port) for protocol, ip, port in backends}
    if not gone:
        return 0
    deleted = 0
    ct = Conntrack()
    try:
        stale: list[Any] = []
        for msg in ct.dump(status=0, status_mask=IPS_SEEN_REPLY):
            orig, reply = msg.get_attr("CTA_TUPLE_ORIG"), msg.get_attr("CTA_TUPLE_REPLY")
            if reply is None or orig is None or (msg.get_attr("CTA_STATUS") or 0) & IPS_SEEN_REPLY:
                continue  # answered: kernels before 5.15 ignore the status filter and send every entry
            entry = NFCTAttrTuple.from_netlink(msg["nfgen_family"], reply)
            if (entry.proto, entry.saddr, entry.sport) in gone:
                stale.append(NFCTAttrTuple.from_netlink(msg["nfgen_family"], orig))
        for number, ip, port in sorted(gone):
            if number == socket.IPPROTO_UDP:
                stale += [e.tuple_orig for e in ct.dump_entries(
                    tuple_reply=NFCTAttrTuple(saddr=ip, proto=number, sport=port))]
        for orig_tuple in stale:
            if any(orig_tuple.daddr == ip for _, ip, _ in gone):
                continue  # to the pod directly: nothing was translated
            try:
                ct.entry("del", tuple_orig=orig_tuple)
                deleted += 1
            except Exception as e:  # it may have ended meanwhile (ENOENT)
                log.debug("conntrack delete %s: %s", orig_tuple, e)
    finally:
        ct.close()
    return deleted
