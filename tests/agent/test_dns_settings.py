"""specs.dns_settings: a pod's resolv.conf by dnsPolicy (the kubelet's rules)."""

from __future__ import annotations

from typing import Any

from gifee.agent.specs import DnsSettings, dns_settings

SEARCH = ("shop.svc.cluster.local", "svc.cluster.local", "cluster.local")


def pod(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "shop"}, "spec": {"containers": [], **spec}}


def test_cluster_first_is_the_default() -> None:
    assert dns_settings(pod(), ("10.96.0.10",)) == DnsSettings(("10.96.0.10",), SEARCH, ("ndots:5",))
    assert dns_settings(pod(dnsPolicy="ClusterFirst"), ("10.96.0.10",), "k.test").searches == (
        "shop.svc.k.test", "svc.k.test", "k.test")


def test_host_file_without_cluster_dns_default_or_host_network() -> None:
    assert dns_settings(pod(), ()) is None
    assert dns_settings(pod(dnsPolicy="Default"), ("10.96.0.10",)) is None
    assert dns_settings(pod(hostNetwork=True), ("10.96.0.10",)) is None
    with_host_net = dns_settings(pod(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet"), ("10.96.0.10",))
    assert with_host_net is not None and with_host_net.nameservers == ("10.96.0.10",)


def test_dns_config_merges_and_none_takes_only_it() -> None:
    config = {"nameservers": ["1.2.3.4", "10.96.0.10"], "searches": ["corp.example"],
              "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}
    merged = dns_settings(pod(dnsConfig=config), ("10.96.0.10",))
    assert merged == DnsSettings(("10.96.0.10", "1.2.3.4"), (*SEARCH, "corp.example"), ("ndots:2", "edns0"))
    only = dns_settings(pod(dnsPolicy="None", dnsConfig=config), ("10.96.0.10",))
    assert only == DnsSettings(("1.2.3.4", "10.96.0.10"), ("corp.example",), ("ndots:2", "edns0"))
    assert dns_settings(pod(dnsPolicy="None"), ("10.96.0.10",)) == DnsSettings((), (), ())
