"""Cluster DNS: `gifee dns` answers <service>.<namespace>.svc.<domain> from the API's
services and endpoints; `resolvconf` renders a pod's /etc/resolv.conf."""

from __future__ import annotations


def resolvconf(namespace: str, nameserver_ip: str, domain: str = "cluster.local") -> str:
    """A pod's /etc/resolv.conf: the cluster nameserver, search `<ns>.svc.<domain> svc.<domain> <domain>`,
    options ndots:5 (the Kubernetes DNS specification's ClusterFirst policy)."""
    return (f"search {namespace}.svc.{domain} svc.{domain} {domain}\n"
            f"nameserver {nameserver_ip}\n"
            "options ndots:5\n")
