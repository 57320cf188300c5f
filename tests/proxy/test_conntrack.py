"""The pure side of forgetting finished flows: conntrack(8)'s listing parsed, and which flows are picked."""

from __future__ import annotations

from gifee.proxy.conntrack import finished_flows_of, parse_listing


def test_conntrack_listing_parses_into_flows_and_only_finished_translated_ones_are_picked() -> None:
    listing = (
        "tcp      6 20 LAST_ACK src=10.32.0.20 dst=10.106.183.121 sport=60056 dport=80 src=10.244.1.3 "
        "dst=10.32.0.11 sport=8080 dport=65474 [ASSURED] mark=0 use=1\n"
        "tcp      6 8 CLOSE src=10.32.0.20 dst=10.106.183.121 sport=60058 dport=80 src=10.244.1.4 "
        "dst=10.32.0.11 sport=8080 dport=60058 mark=0 use=1\n"
        "tcp      6 25 LAST_ACK src=10.32.0.11 dst=10.244.1.3 sport=5000 dport=8080 src=10.244.1.3 "
        "dst=10.32.0.11 sport=8080 dport=5000 [ASSURED] mark=0 use=1\n"
        "tcp      6 100 TIME_WAIT src=10.32.0.20 dst=10.106.183.121 sport=60060 dport=80 src=10.244.1.3 "
        "dst=10.32.0.11 sport=8080 dport=60060 [ASSURED] mark=0 use=1\n"
        "udp      17 20 src=10.0.0.1 dst=10.0.0.2 sport=53 dport=53 src=10.0.0.2 dst=10.0.0.1 sport=53 dport=53\n"
        "conntrack v1.4.7 (conntrack-tools): 4 flow entries have been shown.\n")
    flows = parse_listing(listing)
    assert [(f.state, f.sport, f.reply_src, f.reply_sport) for f in flows] == [
        ("LAST_ACK", 60056, "10.244.1.3", 8080), ("CLOSE", 60058, "10.244.1.4", 8080),
        ("LAST_ACK", 5000, "10.244.1.3", 8080), ("TIME_WAIT", 60060, "10.244.1.3", 8080)]
    picked = finished_flows_of(flows, {("tcp", "10.244.1.3", 8080), ("tcp", "10.244.1.4", 8080),
                                       ("udp", "10.0.0.2", 53)})
    # not TIME_WAIT, not the direct connection to the pod, not UDP
    assert [f.sport for f in picked] == [60056, 60058]
    assert finished_flows_of(flows, {("tcp", "10.244.1.3", 9090)}) == []
