"""From a Kubernetes container to the runtime's pod options, without I/O.

Rules:
- `command` replaces the image's Entrypoint and `args` its Cmd (a `command`
  without `args` drops Cmd), as the kubelet does; workingDir and
  securityContext.runAsUser/runAsGroup override the image's.
- Environment: envFrom (configMapRef/secretRef, with prefix) first, then env
  (value, valueFrom configMapKeyRef/secretKeyRef/fieldRef), later names winning;
  $(VAR) references to names defined before are expanded. fieldRef serves
  metadata.name, metadata.namespace, metadata.uid, spec.nodeName,
  spec.serviceAccountName, status.podIP and status.hostIP. A missing, non-optional
  config map, secret or key is a CreateContainerConfigError.
- Resources: limits.cpu and limits.memory become the runtime's cgroup limits
  (--cpu, --memory). Requests alone set no cgroup value: the runtime has no CPU
  weight or memory reservation to give them to (they still count for scheduling).
- securityContext: runAsUser/runAsGroup, capabilities add/drop, privileged (every
  capability; /sys stays read-only and /dev minimal: the runtime has no more).
  hostNetwork: the sandbox runs in the host's network (the pod IP is the node's).
- Volumes live under <pod dir>/volumes/<name> (emptyDir, configMap, secret) or are
  the host path itself (hostPath); each volumeMount is a bind mount of that path
  (or its subPath), read-only when asked (configMap and secret always).
- DNS (`dns_settings`, the kubelet's rules): dnsPolicy ClusterFirst (the default)
  gives the cluster nameservers (--cluster-dns), search `<ns>.svc.<domain>
  svc.<domain> <domain>` and `ndots:5`; without cluster nameservers, or for a
  hostNetwork pod under ClusterFirst, the host's resolv.conf (Default);
  ClusterFirstWithHostNet is ClusterFirst for every pod; None takes only
  spec.dnsConfig. spec.dnsConfig nameservers and searches are appended (duplicates
  dropped), its options replace same-named ones (under Default, a dnsConfig is all
  the pod gets: the host's file is not merged).
Theory: the shell fetches the config maps and secrets a pod names (`references`),
calls `volume_plan` and writes its files, then `container_options` per container.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

Obj = dict[str, Any]


CAPABILITIES = {name: i for i, name in enumerate((
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE"))}


class ConfigError(ValueError):
    """The container cannot be configured (kubelet's CreateContainerConfigError)."""


@dataclasses.dataclass(frozen=True)
class ContainerOptions:
    image: str
    pull_policy: str
    image_config: Obj          # the image's config with command/args/workingDir/user applied
    env: tuple[str, ...]
    cpu: str | None
    memory: str | None
    volumes: tuple[str, ...]   # HOST:POD[:ro]
    capabilities: frozenset[int] | None = None   # None: the runtime's default set


@dataclasses.dataclass(frozen=True)
class VolumeSetup:
    name: str
    kind: str                  # emptyDir | hostPath | configMap | secret
    path: str                  # the host directory mounts come from
    files: tuple[tuple[str, bytes, int], ...] = ()   # (relative path, content, mode) to write
    host_type: str = ""
    read_only: bool = False
    memory: bool = False       # emptyDir medium Memory: a tmpfs
    size_limit: str = ""


@dataclasses.dataclass(frozen=True)
class DnsSettings:
    nameservers: tuple[str, ...]
    searches: tuple[str, ...]
    options: tuple[str, ...]


def dns_settings(pod: Obj, cluster_dns: tuple[str, ...], domain: str = "cluster.local") -> DnsSettings | None:
    """The pod's resolv.conf contents, or None for the host's (see the module's rules)."""
    spec = pod.get("spec") or {}
    policy = str(spec.get("dnsPolicy") or "ClusterFirst")
    namespace = str((pod.get("metadata") or {}).get("namespace") or "default")
    raw = spec.get("dnsConfig")
    config: Obj = raw if isinstance(raw, dict) else {}
    servers: list[str] = []
    searches: list[str] = []
    options: dict[str, str] = {}
    cluster_first = policy == "ClusterFirstWithHostNet" or (policy == "ClusterFirst" and not host_network(pod))
    if cluster_first and cluster_dns:
        servers = list(cluster_dns)
        searches = [f"{namespace}.svc.{domain}", f"svc.{domain}", domain]
        options = {"ndots": "ndots:5"}
    elif policy != "None" and not config:
        return None  # Default: the host's resolv.conf
    for s in config.get("nameservers") or []:
        if str(s) not in servers:
            servers.append(str(s))
    for s in config.get("searches") or []:
        if str(s) not in searches:
            searches.append(str(s))
    for o in config.get("options") or []:
        if isinstance(o, dict) and o.get("name"):
            name = str(o["name"])
            options[name] = f"{name}:{o['value']}" if o.get("value") not in (None, "") else name
    return DnsSettings(tuple(servers), tuple(searches), tuple(options.values()))


def host_network(pod: Obj) -> bool:
    return bool((pod.get("spec") or {}).get("hostNetwork"))


def capabilities(container: Obj, default: frozenset[int]) -> frozenset[int] | None:
    """securityContext.privileged (every capability) or capabilities.add/drop ("ALL" or
    names with or without CAP_) over the runtime's default set; None when unchanged."""
    sc = container.get("securityContext") or {}
    if sc.get("privileged"):
        return frozenset(CAPABILITIES.values())
    caps = sc.get("capabilities") or {}
    if not caps.get("add") and not caps.get("drop"):
        return None

    def numbers(names: list[str]) -> set[int]:
        out = set()
        for n in names:
            key = str(n).upper().removeprefix("CAP_")
            if key == "ALL":
                out |= set(CAPABILITIES.values())
            elif key in CAPABILITIES:
                out.add(CAPABILITIES[key])
            else:
                raise ConfigError(f"unknown capability {n}")
        return out

    return frozenset((set(default) - numbers(caps.get("drop") or [])) | numbers(caps.get("add") or []))


def pull_policy(container: Obj) -> str:
    policy = container.get("imagePullPolicy")
    if policy:
        return str(policy)
    image = str(container.get("image", ""))
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    tag = last.partition(":")[2]
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def references(pod: Obj) -> tuple[set[str], set[str]]:
    """The config maps and secrets a pod's volumes and environment name."""
    cms: set[str] = set()
    secrets: set[str] = set()
    spec = pod.get("spec") or {}
    for v in spec.get("volumes") or []:
        if "configMap" in v:
            cms.add(v["configMap"].get("name", ""))
        if "secret" in v:
            secrets.add(v["secret"].get("secretName", ""))
    for c in spec.get("containers") or []:
        for src in c.get("envFrom") or []:
            if "configMapRef" in src:
                cms.add(src["configMapRef"].get("name", ""))
            if "secretRef" in src:
                secrets.add(src["secretRef"].get("name", ""))
        for e in c.get("env") or []:
            vf = e.get("valueFrom") or {}
            if "configMapKeyRef" in vf:
                cms.add(vf["configMapKeyRef"].get("name", ""))
            if "secretKeyRef" in vf:
                secrets.add(vf["secretKeyRef"].get("name", ""))
    return cms - {""}, secrets - {""}


def _data_of(obj: Obj | None, secret: bool) -> dict[str, bytes]:
    if obj is None:
        return {}
    out: dict[str, bytes] = {}
    if secret:
        for k, v in (obj.get("data") or {}).items():
            out[k] = base64.b64decode(v)
        for k, v in (obj.get("stringData") or {}).items():
            out[k] = str(v).encode()
    else:
        for k, v in (obj.get("binaryData") or {}).items():
            out[k] = base64.b64decode(v)
        for k, v in (obj.get("data") or {}).items():
            out[k] = str(v).encode()
    return out


def _safe_relative(path: str) -> bool:
    parts = path.split("/")
    return bool(path) and not path.startswith("/") and ".." not in parts


def volume_plan(pod: Obj, pod_dir: Path, configmaps: Mapping[str, Obj], secrets: Mapping[str, Obj]) -> list[VolumeSetup]:
    out = []
    for v in (pod.get("spec") or {}).get("volumes") or []:
        name = str(v.get("name", ""))
        path = str(pod_dir / "volumes" / name)
        if "emptyDir" in v:
            ed = v["emptyDir"] or {}
            out.append(VolumeSetup(name, "emptyDir", path, memory=ed.get("medium") == "Memory",
                                   size_limit=str(ed.get("sizeLimit") or "")))
        elif "hostPath" in v:
            hp = v["hostPath"]
            out.append(VolumeSetup(name, "hostPath", str(hp.get("path", "")), host_type=str(hp.get("type") or "")))
        elif "configMap" in v or "secret" in v:
            secret = "secret" in v
            src = v["secret"] if secret else v["configMap"]
            ref = str(src.get("secretName" if secret else "name", ""))
            obj = (secrets if secret else configmaps).get(ref)
            if obj is None and not src.get("optional"):
                raise ConfigError(f'{"secret" if secret else "configmap"} "{ref}" not found')
            data = _data_of(obj, secret)
            mode = int(src.get("defaultMode", 0o644))
            items = src.get("items")
            files = []
            if items:
                for item in items:
                    key, rel = str(item.get("key", "")), str(item.get("path", ""))
                    if key not in data:
                        if src.get("optional"):
                            continue
                        raise ConfigError(f"key {key} not found in {ref}")
                    if not _safe_relative(rel):
                        raise ConfigError(f"volume {name}: bad item path {rel!r}")
                    files.append((rel, data[key], int(item.get("mode", mode))))
            else:
                files = [(k, data[k], mode) for k in sorted(data) if _safe_relative(k)]
            out.append(VolumeSetup(name, "secret" if secret else "configMap", path, tuple(files), read_only=True))
        else:
            raise ConfigError(f"volume {name}: only emptyDir, hostPath, configMap and secret volumes are supported")
    return out


_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def _expand(value: str, env: Mapping[str, str]) -> str:
    return _REF.sub(lambda m: env.get(m.group(1), m.group(0)), value.replace("$$", "\0")).replace("\0", "$")


def field_value(pod: Obj, path: str, pod_ip: str, host_ip: str) -> str:
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    values = {"metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", ""),
              "metadata.uid": meta.get("uid", ""), "spec.nodeName": spec.get("nodeName", ""),
              "spec.serviceAccountName": spec.get("serviceAccountName", ""), "status.podIP": pod_ip,
              "status.hostIP": host_ip}
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']*)'\]", path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    if path not in values:
        raise ConfigError(f"fieldRef {path}: not supported")
    return str(values[path])


def environment(pod: Obj, container: Obj, configmaps: Mapping[str, Obj], secrets: Mapping[str, Obj],
                pod_ip: str, host_ip: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for src in container.get("envFrom") or []:
        secret = "secretRef" in src
        ref = src.get("secretRef" if secret else "configMapRef") or {}
        obj = (secrets if secret else configmaps).get(str(ref.get("name", "")))
        if obj is None:
            if ref.get("optional"):
                continue
            raise ConfigError(f'{"secret" if secret else "configmap"} "{ref.get("name")}" not found')
        for k, v in _data_of(obj, secret).items():
            env[str(src.get("prefix", "")) + k] = v.decode(errors="replace")
    for e in container.get("env") or []:
        name = str(e.get("name", ""))
        if "value" in e or "valueFrom" not in e:
            env[name] = _expand(str(e.get("value", "")), env)
            continue
        vf = e["valueFrom"] or {}
        if "fieldRef" in vf:
            env[name] = field_value(pod, str(vf["fieldRef"].get("fieldPath", "")), pod_ip, host_ip)
        elif "configMapKeyRef" in vf or "secretKeyRef" in vf:
            secret = "secretKeyRef" in vf
            ref = vf["secretKeyRef" if secret else "configMapKeyRef"]
            obj = (secrets if secret else configmaps).get(str(ref.get("name", "")))
            data = _data_of(obj, secret)
            key = str(ref.get("key", ""))
            if key not in data:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'couldn\'t find key {key} in {"Secret" if secret else "ConfigMap"} '
                                  f'{(pod.get("metadata") or {}).get("namespace")}/{ref.get("name")}')
            env[name] = data[key].decode(errors="replace")
        elif "resourceFieldRef" in vf:
            res = str(vf["resourceFieldRef"].get("resource", ""))
            kind, _, what = res.partition(".")
            env[name] = str(((container.get("resources") or {}).get(kind) or {}).get(what, "0"))
        else:
            raise ConfigError(f"env {name}: unsupported valueFrom")
    return env


def container_options(pod: Obj, container: Obj, image_config: Obj, volumes: list[VolumeSetup],
                      configmaps: Mapping[str, Obj], secrets: Mapping[str, Obj], pod_ip: str,
                      host_ip: str) -> ContainerOptions:
    config = dict(image_config)
    inner = dict(config.get("config") or {})
    if container.get("command"):
        inner["Entrypoint"] = list(container["command"])
        inner["Cmd"] = list(container.get("args") or [])
    elif container.get("args"):
        inner["Cmd"] = list(container["args"])
    if container.get("workingDir"):
        inner["WorkingDir"] = container["workingDir"]
    sc = container.get("securityContext") or {}
    psc = (pod.get("spec") or {}).get("securityContext") or {}
    uid = sc.get("runAsUser", psc.get("runAsUser"))
    gid = sc.get("runAsGroup", psc.get("runAsGroup"))
    if uid is not None:
        inner["User"] = f"{uid}:{gid if gid is not None else uid}"
    config["config"] = inner
    env = environment(pod, container, configmaps, secrets, pod_ip, host_ip)
    limits = (container.get("resources") or {}).get("limits") or {}
    by_name = {v.name: v for v in volumes}
    mounts = []
    for m in container.get("volumeMounts") or []:
        vol = by_name.get(str(m.get("name", "")))
        if vol is None:
            raise ConfigError(f"volumeMount {m.get('name')}: no such volume")
        host = vol.path
        sub = str(m.get("subPath") or "")
        if sub:
            if not _safe_relative(sub):
                raise ConfigError(f"volumeMount {m.get('name')}: bad subPath {sub!r}")
            host = f"{host}/{sub}"
        ro = bool(m.get("readOnly")) or vol.read_only
        mounts.append(f"{host}:{m.get('mountPath', '')}{':ro' if ro else ''}")
    from gifee.runtime.spec import DEFAULT_CAPABILITIES

    return ContainerOptions(
        image=str(container.get("image", "")), pull_policy=pull_policy(container), image_config=config,
        env=tuple(f"{k}={v}" for k, v in env.items()),
        cpu=str(limits["cpu"]) if limits.get("cpu") else None,
        memory=str(limits["memory"]) if limits.get("memory") else None, volumes=tuple(mounts),
        capabilities=capabilities(container, DEFAULT_CAPABILITIES))
