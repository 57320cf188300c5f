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

Finished TCP flows too (`forget_finished_flows`, swept for a while after the backend
goes): a new SYN on the ports of an entry in LAST_ACK (both sides sent FIN, the last ACK
never came: the pod went first) or CLOSE (reset by the pod) is not taken as a new
connection, as one on a TIME_WAIT entry is; conntrack "ignores" it, so the SYN passes
untracked and untranslated, to the cluster IP itself, which nothing answers ("No route
to host" after the ARP timeout, or a timeout). A client whose close was never
acknowledged keeps retransmitting its FIN for a minute, the entry lives 30 s after that,
and a busy client reuses its ports every few seconds (the e2e load test's, about every
10 s). Nothing is cut by forgetting these: both directions have finished. The kernel cannot filter dumps by TCP state and pyroute2
needs over a millisecond per entry, so the listing is conntrack(8)'s (about 50 ms for
thousands of entries, as kube-proxy uses it); deletion is pyroute2's, by exact tuple.
"""

from __future__ import annotations

import logging
import socket
import subprocess
from collections.abc import Iterable
from typing import Any, NamedTuple

log = logging.getLogger("gifee.proxy")

IPS_SEEN_REPLY = 1 << 1
PROTOCOL_NUMBERS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP, "sctp": socket.IPPROTO_SCTP}
FINISHED_TCP_STATES = ("LAST_ACK", "CLOSE")
CONNTRACK_TIMEOUT = 10.0


class TcpFlow(NamedTuple):
    """One conntrack entry as conntrack(8) lists it: the original tuple and where replies come from."""

    state: str
    src: str
    dst: str
    sport: int
    dport: int
    reply_src: str
    reply_sport: int


def parse_listing(text: str) -> list[TcpFlow]:
    """conntrack(8)'s `-L -p tcp` lines ("tcp 6 20 LAST_ACK src=.. dst=.. sport=.. dport=.. src=..
    dst=.. sport=.. dport=.. [ASSURED] mark=0 use=1"): the first src/dst/sport/dport are the
    original direction, the second the reply. Lines of any other shape are skipped."""
    flows = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[0] != "tcp":
            continue
        orig: dict[str, str] = {}
        reply: dict[str, str] = {}
        for f in fields[4:]:
            key, eq, value = f.partition("=")
            if eq and key in ("src", "dst", "sport", "dport"):
                (reply if key in orig else orig)[key] = value
        try:
            flows.append(TcpFlow(fields[3], orig["src"], orig["dst"], int(orig["sport"]), int(orig["dport"]),
                                 reply["src"], int(reply["sport"])))
        except (KeyError, ValueError):
            continue
    return flows


def finished_flows_of(flows: Iterable[TcpFlow], backends: Iterable[tuple[str, str, int]]) -> list[TcpFlow]:
    """The finished flows translated to one of these (protocol, ip, port) backends."""
    gone = {(ip, port) for protocol, ip, port in backends if protocol == "tcp"}
    return [f for f in flows if f.state in FINISHED_TCP_STATES and (f.reply_src, f.reply_sport) in gone
            and f.dst != f.reply_src]


def forget_finished_flows(backends: Iterable[tuple[str, str, int]]) -> int:
    """Delete the finished (LAST_ACK, CLOSE) translated TCP entries of these backends in this network
    namespace; returns how many were deleted. Raises FileNotFoundError without conntrack(8).
    Blocking (a subprocess and netlink): run it in a thread."""
    from pyroute2 import Conntrack
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

    backends = list(backends)
    stale: list[TcpFlow] = []
    for state in FINISHED_TCP_STATES:
        listing = subprocess.run(["conntrack", "-L", "-p", "tcp", "--state", state], capture_output=True,
                                 text=True, timeout=CONNTRACK_TIMEOUT)
        stale += finished_flows_of(parse_listing(listing.stdout), backends)
    if not stale:
        return 0
    deleted = 0
    with Conntrack() as ct:
        for f in stale:
            try:
                ct.entry("del", tuple_orig=NFCTAttrTuple(saddr=f.src, daddr=f.dst, sport=f.sport, dport=f.dport,
                                                         proto=socket.IPPROTO_TCP))
                deleted += 1
            except Exception as e:  # it may have ended meanwhile (ENOENT)
                log.debug("conntrack delete %s: %s", f, e)
    return deleted


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
