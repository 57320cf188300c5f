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

log = logging.getLogger("gifee.proxy")

IPS_SEEN_REPLY = 1 << 1
PROTOCOL_NUMBERS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP, "sctp": socket.IPPROTO_SCTP}


def forget_flows(backends: Iterable[tuple[str, str, int]]) -> int:
    """Delete the stale translated entries of these (protocol, ip, port) backends in this network
    namespace; returns how many were deleted. Blocking (netlink): run it in a thread."""
    from pyroute2 import Conntrack
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

    deleted = 0
    wanted = sorted(backends)
    if not wanted:
        return 0
    ct = Conntrack()
    try:
        for protocol, ip, port in wanted:
            number = PROTOCOL_NUMBERS[protocol]
            reply = NFCTAttrTuple(saddr=ip, proto=number, sport=port)
            for entry in list(ct.dump_entries(tuple_reply=reply)):
                if entry.tuple_orig.daddr == ip:
                    continue  # to the pod directly: nothing was translated
                if number != socket.IPPROTO_UDP and (entry.status or 0) & IPS_SEEN_REPLY:
                    continue
                try:
                    ct.delete(entry)
                    deleted += 1
                except Exception as e:  # it may have ended meanwhile (ENOENT)
                    log.debug("conntrack delete %s: %s", entry, e)
    finally:
        ct.close()
    return deleted
