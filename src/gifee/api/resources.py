"""The resource registry: every resource the API server serves, as one table of data.

Rules: a row names a resource's group, version, kind, plural and singular names,
short names, scope, verbs, subresources and categories, plus the few storage facts
the generic handlers need (whether `metadata.generation` tracks the spec, whether
status is written only through the status subresource). Discovery, routing,
storage keys and the tables all read this table; nothing here does I/O.

Theory of operation: handlers never special-case a resource by name where a
column of this table can say it. Kind-specific behaviour (defaulting,
validation, printing) lives in its own core module, keyed by kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class Subresource:
    name: str
    kind: str
    verbs: tuple[str, ...]
    group: str = ""  # set when the subresource's kind lives in another group (Scale, Eviction)
    version: str = ""


STATUS_VERBS = ("get", "patch", "update")


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[Subresource, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    has_generation: bool = False  # metadata.generation counts spec changes
    clears_status_on_create: bool = False
    fields: tuple[str, ...] = field(default=())  # extra field-selector keys beyond metadata.name/namespace

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def api_version(self) -> str:
        return self.group_version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def group_resource(self) -> str:
        """`pods`, `deployments.apps`: how Status messages name the resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def storage_prefix(self) -> str:
        """Keys are <prefix><namespace>/<name> (namespaced) or <prefix><name>."""
        return f"/registry/{self.plural}/"

    def subresource(self, name: str) -> Subresource | None:
        for sub in self.subresources:
            if sub.name == name:
                return sub
        return None

    def key(self, namespace: str, name: str) -> bytes:
        if self.namespaced:
            return f"{self.storage_prefix}{namespace}/{name}".encode()
        return f"{self.storage_prefix}{name}".encode()

    def collection_prefix(self, namespace: str) -> bytes:
        if self.namespaced and namespace:
            return f"{self.storage_prefix}{namespace}/".encode()
        return self.storage_prefix.encode()


def _status(kind: str) -> Subresource:
    return Subresource("status", kind, STATUS_VERBS)


def _scale() -> Subresource:
    return Subresource("scale", "Scale", STATUS_VERBS, group="autoscaling", version="v1")


RESOURCES: tuple[Resource, ...] = (
    Resource("", "v1", "Namespace", "namespaces", "namespace", False, ("ns",),
             subresources=(_status("Namespace"), Subresource("finalize", "Namespace", ("update",))),
             fields=("status.phase",)),
    Resource("", "v1", "Pod", "pods", "pod", True, ("po",), ("all",),
             subresources=(
                 _status("Pod"),
                 Subresource("log", "Pod", ("get",)),
                 Subresource("exec", "PodExecOptions", ("create", "get")),
                 Subresource("binding", "Binding", ("create",)),
                 Subresource("eviction", "Eviction", ("create",), group="policy", version="v1"),
             ),
             clears_status_on_create=True,
             fields=("spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
                     "status.phase", "status.podIP", "status.nominatedNodeName")),
    Resource("", "v1", "Node", "nodes", "node", False, ("no",), subresources=(_status("Node"),),
             fields=("spec.unschedulable",)),
    Resource("", "v1", "Service", "services", "service", True, ("svc",), ("all",),
             subresources=(_status("Service"),), verbs=tuple(v for v in ALL_VERBS),
             fields=("spec.clusterIP", "spec.type")),
    Resource("", "v1", "Endpoints", "endpoints", "endpoints", True, ("ep",)),
    Resource("", "v1", "ReplicationController", "replicationcontrollers", "replicationcontroller", True,
             ("rc",), ("all",), subresources=(_scale(), _status("ReplicationController")),
             has_generation=True, clears_status_on_create=True, fields=("status.replicas",)),
    Resource("", "v1", "ConfigMap", "configmaps", "configmap", True, ("cm",)),
    Resource("", "v1", "Secret", "secrets", "secret", True, fields=("type",)),
    Resource("", "v1", "Event", "events", "event", True, ("ev",),
             fields=("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                     "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
                     "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type")),
    Resource("apps", "v1", "Deployment", "deployments", "deployment", True, ("deploy",), ("all",),
             subresources=(_scale(), _status("Deployment")), has_generation=True, clears_status_on_create=True),
    Resource("apps", "v1", "ReplicaSet", "replicasets", "replicaset", True, ("rs",), ("all",),
             subresources=(_scale(), _status("ReplicaSet")), has_generation=True, clears_status_on_create=True,
             fields=("status.replicas",)),
    Resource("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", "poddisruptionbudget", True,
             ("pdb",), subresources=(_status("PodDisruptionBudget"),), has_generation=True,
             clears_status_on_create=True),
    Resource("coordination.k8s.io", "v1", "Lease", "leases", "lease", True),
)

# Preferred versions of the groups, in the order /apis lists them.
GROUP_ORDER: tuple[str, ...] = ("", "apps", "policy", "coordination.k8s.io")

_BY_PATH: dict[tuple[str, str, str], Resource] = {(r.group, r.version, r.plural): r for r in RESOURCES}
_BY_KIND: dict[tuple[str, str], Resource] = {(r.group, r.kind): r for r in RESOURCES}


def lookup(group: str, version: str, plural: str) -> Resource | None:
    return _BY_PATH.get((group, version, plural))


def by_kind(group: str, kind: str) -> Resource | None:
    return _BY_KIND.get((group, kind))


def by_api_version_kind(api_version: str, kind: str) -> Resource | None:
    group = api_version.rpartition("/")[0] if "/" in api_version else ""
    return by_kind(group, kind)


def by_plural(plural: str) -> Resource | None:
    for r in RESOURCES:
        if r.plural == plural or r.group_resource == plural:
            return r
    return None


def group_versions() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in RESOURCES:
        versions = out.setdefault(r.group, [])
        if r.version not in versions:
            versions.append(r.version)
    return out


def resources_of(group: str, version: str) -> list[Resource]:
    return [r for r in RESOURCES if r.group == group and r.version == version]
