"""Writing a kubeconfig that points kubectl (or any client) at a gifee API server."""

from __future__ import annotations

from typing import Any

import yaml


def kubeconfig(server: str, *, namespace: str = "default", insecure: bool = False, ca_file: str = "",
               name: str = "gifee") -> dict[str, Any]:
    cluster: dict[str, Any] = {"server": server}
    if ca_file:
        cluster["certificate-authority"] = ca_file
    elif insecure:
        cluster["insecure-skip-tls-verify"] = True
    return {
        "apiVersion": "v1", "kind": "Config", "preferences": {}, "current-context": name,
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": {}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}],
    }


def kubeconfig_yaml(server: str, **kw: Any) -> str:
    return str(yaml.safe_dump(kubeconfig(server, **kw), sort_keys=False))


def write_kubeconfig(path: str, server: str, **kw: Any) -> None:
    with open(path, "w") as f:
        f.write(kubeconfig_yaml(server, **kw))
