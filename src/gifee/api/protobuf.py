"""Kubernetes' protobuf serialization (`application/vnd.kubernetes.protobuf`), table driven.

Rules:
  - Pure: bytes in, JSON-shaped dicts out (and back). No I/O, no server knowledge.
  - The schema is data: SCHEMA maps a message name to field number -> Field(json
    name, kind, message type, card). The field numbers are those of k8s.io/api's and
    apimachinery's generated.proto for the types kubectl's typed commands send;
    tests/api/test_protobuf.py checks every number against the descriptors kubectl
    1.32 carries in its binary.
  - Decoding yields the dict the JSON path would give: maps -> objects, repeated ->
    lists, Time -> RFC 3339 (seconds), MicroTime -> RFC 3339 with microseconds,
    Quantity -> its string, IntOrString -> int or str, bytes -> base64 strings.
    Unknown fields are skipped; malformed input raises ProtobufError. With
    strict=True (the server's choice) a field the table does not cover that
    carries a value (not an empty string, message or 0) raises UnsupportedField
    instead: better a 415 than an object silently missing, say, its affinity.
    IGNORED lists fields dropped even then (managedFields: no server-side apply).
  - Zero values: Go's generated marshallers always write non-pointer scalars and
    structs, so an empty string or a 0 on the wire usually means "unset" and is
    dropped, as `omitempty` drops it in JSON. Pointer fields (card OPT) and
    non-omitempty ones (card REQ) keep their zero values; non-pointer structs are
    kept ({}), as encoding/json keeps them; a zero Time (JSON null) is dropped.
  - Encoding writes the dict's keys the table knows (others are ignored) and
    skips the zero values decoding would drop, so decode(encode(d)) == d for any
    d within the schema.

Theory of operation: the wire format is a sequence of (tag = number << 3 | wire
type, payload) pairs: varint (0), fixed64 (1), length-delimited (2), fixed32 (5).
Messages, strings, bytes, packed numbers and map entries ({key 1, value 2}) are
length-delimited. A request body is the magic `k8s\\x00` followed by a
runtime.Unknown {typeMeta 1 {apiVersion 1, kind 2}, raw 2, contentEncoding 3,
contentType 4}; raw is the object's message, whose type KINDS finds from
(apiVersion, kind). The object message has no TypeMeta: apiVersion and kind come
from the envelope.
"""

from __future__ import annotations

import base64
import datetime as dt
import struct
from collections.abc import Iterator
from typing import Any, NamedTuple

MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"


class ProtobufError(ValueError):
    """Malformed wire data, or a value the schema cannot encode."""


class UnsupportedKind(ProtobufError):
    """A well-formed envelope naming a kind the table does not cover."""

    def __init__(self, api_version: str, kind: str) -> None:
        super().__init__(f"no protobuf schema for {api_version or '?'}/{kind or '?'}")
        self.api_version = api_version
        self.kind = kind


class UnsupportedField(ProtobufError):
    """strict decoding met a set field the table does not cover."""

    def __init__(self, path: str, number: int) -> None:
        super().__init__(f"{path}: field {number} is not supported in protobuf by this server")
        self.path = path
        self.number = number


# -- the schema table

# kinds: scalars as in .proto, plus the apimachinery types with their own JSON form
STRING, BYTES, BOOL, INT32, INT64, DOUBLE = "string", "bytes", "bool", "int32", "int64", "double"
MSG, TIME, MICROTIME, QUANTITY, INTORSTR = "message", "time", "microtime", "quantity", "intorstr"
# cards
ONE = ""            # singular, omitempty: zero values are dropped
OPT = "optional"    # a Go pointer: present means set, zero included
REQ = "required"    # singular without omitempty: zero values kept
REP = "repeated"
MAP = "map"         # map<string, kind>: entries {key 1, value 2}
INLINE = "inline"   # an embedded Go struct: its fields are the parent's in JSON


class Field(NamedTuple):
    json: str
    kind: str
    message: str = ""
    card: str = ONE


F = Field
META = "meta.v1.ObjectMeta"
SELECTOR = "meta.v1.LabelSelector"

SCHEMA: dict[str, dict[int, Field]] = {
    # apimachinery meta/v1
    "meta.v1.ObjectMeta": {
        1: F("name", STRING), 2: F("generateName", STRING), 3: F("namespace", STRING),
        4: F("selfLink", STRING), 5: F("uid", STRING), 6: F("resourceVersion", STRING),
        7: F("generation", INT64), 8: F("creationTimestamp", TIME), 9: F("deletionTimestamp", TIME, card=OPT),
        10: F("deletionGracePeriodSeconds", INT64, card=OPT), 11: F("labels", STRING, card=MAP),
        12: F("annotations", STRING, card=MAP), 13: F("ownerReferences", MSG, "meta.v1.OwnerReference", REP),
        14: F("finalizers", STRING, card=REP),
        # 17 managedFields: not kept (no server-side apply)
    },
    "meta.v1.OwnerReference": {
        5: F("apiVersion", STRING, card=REQ), 1: F("kind", STRING, card=REQ), 3: F("name", STRING, card=REQ),
        4: F("uid", STRING, card=REQ), 6: F("controller", BOOL, card=OPT), 7: F("blockOwnerDeletion", BOOL, card=OPT),
    },
    "meta.v1.LabelSelector": {
        1: F("matchLabels", STRING, card=MAP),
        2: F("matchExpressions", MSG, "meta.v1.LabelSelectorRequirement", REP),
    },
    "meta.v1.LabelSelectorRequirement": {
        1: F("key", STRING, card=REQ), 2: F("operator", STRING, card=REQ), 3: F("values", STRING, card=REP),
    },
    "meta.v1.DeleteOptions": {
        1: F("gracePeriodSeconds", INT64, card=OPT), 2: F("preconditions", MSG, "meta.v1.Preconditions", OPT),
        3: F("orphanDependents", BOOL, card=OPT), 4: F("propagationPolicy", STRING, card=OPT),
        5: F("dryRun", STRING, card=REP), 6: F("ignoreStoreReadErrorWithClusterBreakingPotential", BOOL, card=OPT),
    },
    "meta.v1.Preconditions": {1: F("uid", STRING, card=OPT), 2: F("resourceVersion", STRING, card=OPT)},
    "meta.v1.Condition": {
        1: F("type", STRING, card=REQ), 2: F("status", STRING, card=REQ), 3: F("observedGeneration", INT64),
        4: F("lastTransitionTime", TIME), 5: F("reason", STRING, card=REQ), 6: F("message", STRING, card=REQ),
    },
    # core/v1
    "core.v1.Namespace": {
        1: F("metadata", MSG, META), 2: F("spec", MSG, "core.v1.NamespaceSpec"),
        3: F("status", MSG, "core.v1.NamespaceStatus"),
    },
    "core.v1.NamespaceSpec": {1: F("finalizers", STRING, card=REP)},
    "core.v1.NamespaceStatus": {
        1: F("phase", STRING), 2: F("conditions", MSG, "core.v1.NamespaceCondition", REP),
    },
    "core.v1.NamespaceCondition": {
        1: F("type", STRING, card=REQ), 2: F("status", STRING, card=REQ), 4: F("lastTransitionTime", TIME),
        5: F("reason", STRING), 6: F("message", STRING),
    },
    "core.v1.ConfigMap": {
        1: F("metadata", MSG, META), 2: F("data", STRING, card=MAP), 3: F("binaryData", BYTES, card=MAP),
        4: F("immutable", BOOL, card=OPT),
    },
    "core.v1.Secret": {
        1: F("metadata", MSG, META), 2: F("data", BYTES, card=MAP), 3: F("type", STRING),
        4: F("stringData", STRING, card=MAP), 5: F("immutable", BOOL, card=OPT),
    },
    "core.v1.Pod": {
        1: F("metadata", MSG, META), 2: F("spec", MSG, "core.v1.PodSpec"), 3: F("status", MSG, "core.v1.PodStatus"),
    },
    "core.v1.PodTemplateSpec": {1: F("metadata", MSG, META), 2: F("spec", MSG, "core.v1.PodSpec")},
    "core.v1.PodSpec": {
        1: F("volumes", MSG, "core.v1.Volume", REP), 2: F("containers", MSG, "core.v1.Container", REP),
        3: F("restartPolicy", STRING), 4: F("terminationGracePeriodSeconds", INT64, card=OPT),
        5: F("activeDeadlineSeconds", INT64, card=OPT), 6: F("dnsPolicy", STRING),
        7: F("nodeSelector", STRING, card=MAP), 8: F("serviceAccountName", STRING), 9: F("serviceAccount", STRING),
        10: F("nodeName", STRING), 11: F("hostNetwork", BOOL), 12: F("hostPID", BOOL), 13: F("hostIPC", BOOL),
        14: F("securityContext", MSG, "core.v1.PodSecurityContext", OPT),
        15: F("imagePullSecrets", MSG, "core.v1.LocalObjectReference", REP),
        16: F("hostname", STRING), 17: F("subdomain", STRING), 19: F("schedulerName", STRING),
        20: F("initContainers", MSG, "core.v1.Container", REP), 21: F("automountServiceAccountToken", BOOL, card=OPT),
        22: F("tolerations", MSG, "core.v1.Toleration", REP), 24: F("priorityClassName", STRING),
        25: F("priority", INT32, card=OPT), 27: F("shareProcessNamespace", BOOL, card=OPT),
        29: F("runtimeClassName", STRING, card=OPT), 30: F("enableServiceLinks", BOOL, card=OPT),
        31: F("preemptionPolicy", STRING, card=OPT), 35: F("setHostnameAsFQDN", BOOL, card=OPT),
        37: F("hostUsers", BOOL, card=OPT),
        # not covered (skipped): 18 affinity, 23 hostAliases, 26 dnsConfig, 28 readinessGates, 32 overhead,
        # 33 topologySpreadConstraints, 34 ephemeralContainers, 36 os, 38 schedulingGates, 39 resourceClaims,
        # 40 resources
    },
    "core.v1.PodStatus": {
        1: F("phase", STRING), 2: F("conditions", MSG, "core.v1.PodCondition", REP), 3: F("message", STRING),
        4: F("reason", STRING), 5: F("hostIP", STRING), 6: F("podIP", STRING), 7: F("startTime", TIME, card=OPT),
        9: F("qosClass", STRING), 11: F("nominatedNodeName", STRING),
    },
    "core.v1.PodCondition": {
        1: F("type", STRING, card=REQ), 2: F("status", STRING, card=REQ), 3: F("lastProbeTime", TIME),
        4: F("lastTransitionTime", TIME), 5: F("reason", STRING), 6: F("message", STRING),
    },
    "core.v1.Container": {
        1: F("name", STRING, card=REQ), 2: F("image", STRING), 3: F("command", STRING, card=REP),
        4: F("args", STRING, card=REP), 5: F("workingDir", STRING), 6: F("ports", MSG, "core.v1.ContainerPort", REP),
        7: F("env", MSG, "core.v1.EnvVar", REP), 8: F("resources", MSG, "core.v1.ResourceRequirements"),
        9: F("volumeMounts", MSG, "core.v1.VolumeMount", REP), 10: F("livenessProbe", MSG, "core.v1.Probe", OPT),
        11: F("readinessProbe", MSG, "core.v1.Probe", OPT), 13: F("terminationMessagePath", STRING),
        14: F("imagePullPolicy", STRING), 15: F("securityContext", MSG, "core.v1.SecurityContext", OPT),
        16: F("stdin", BOOL), 17: F("stdinOnce", BOOL), 18: F("tty", BOOL),
        19: F("envFrom", MSG, "core.v1.EnvFromSource", REP), 20: F("terminationMessagePolicy", STRING),
        22: F("startupProbe", MSG, "core.v1.Probe", OPT), 24: F("restartPolicy", STRING, card=OPT),
        # not covered (skipped): 12 lifecycle, 21 volumeDevices, 23 resizePolicy
    },
    "core.v1.ContainerPort": {
        1: F("name", STRING), 2: F("hostPort", INT32), 3: F("containerPort", INT32, card=REQ),
        4: F("protocol", STRING), 5: F("hostIP", STRING),
    },
    "core.v1.EnvVar": {
        1: F("name", STRING, card=REQ), 2: F("value", STRING), 3: F("valueFrom", MSG, "core.v1.EnvVarSource", OPT),
    },
    "core.v1.EnvVarSource": {
        1: F("fieldRef", MSG, "core.v1.ObjectFieldSelector", OPT),
        2: F("resourceFieldRef", MSG, "core.v1.ResourceFieldSelector", OPT),
        3: F("configMapKeyRef", MSG, "core.v1.ConfigMapKeySelector", OPT),
        4: F("secretKeyRef", MSG, "core.v1.SecretKeySelector", OPT),
    },
    "core.v1.ObjectFieldSelector": {1: F("apiVersion", STRING), 2: F("fieldPath", STRING, card=REQ)},
    "core.v1.ResourceFieldSelector": {
        1: F("containerName", STRING), 2: F("resource", STRING, card=REQ), 3: F("divisor", QUANTITY),
    },
    "core.v1.ConfigMapKeySelector": {
        1: F("", MSG, "core.v1.LocalObjectReference", INLINE), 2: F("key", STRING, card=REQ),
        3: F("optional", BOOL, card=OPT),
    },
    "core.v1.SecretKeySelector": {
        1: F("", MSG, "core.v1.LocalObjectReference", INLINE), 2: F("key", STRING, card=REQ),
        3: F("optional", BOOL, card=OPT),
    },
    "core.v1.LocalObjectReference": {1: F("name", STRING)},
    "core.v1.EnvFromSource": {
        1: F("prefix", STRING), 2: F("configMapRef", MSG, "core.v1.ConfigMapEnvSource", OPT),
        3: F("secretRef", MSG, "core.v1.SecretEnvSource", OPT),
    },
    "core.v1.ConfigMapEnvSource": {
        1: F("", MSG, "core.v1.LocalObjectReference", INLINE), 2: F("optional", BOOL, card=OPT),
    },
    "core.v1.SecretEnvSource": {
        1: F("", MSG, "core.v1.LocalObjectReference", INLINE), 2: F("optional", BOOL, card=OPT),
    },
    "core.v1.ResourceRequirements": {
        1: F("limits", QUANTITY, card=MAP), 2: F("requests", QUANTITY, card=MAP),
        3: F("claims", MSG, "core.v1.ResourceClaim", REP),
    },
    "core.v1.ResourceClaim": {1: F("name", STRING, card=REQ), 2: F("request", STRING)},
    "core.v1.VolumeMount": {
        1: F("name", STRING, card=REQ), 2: F("readOnly", BOOL), 3: F("mountPath", STRING, card=REQ),
        4: F("subPath", STRING), 5: F("mountPropagation", STRING, card=OPT), 6: F("subPathExpr", STRING),
        7: F("recursiveReadOnly", STRING, card=OPT),
    },
    "core.v1.Volume": {1: F("name", STRING, card=REQ), 2: F("", MSG, "core.v1.VolumeSource", INLINE)},
    "core.v1.VolumeSource": {
        1: F("hostPath", MSG, "core.v1.HostPathVolumeSource", OPT),
        2: F("emptyDir", MSG, "core.v1.EmptyDirVolumeSource", OPT),
        6: F("secret", MSG, "core.v1.SecretVolumeSource", OPT),
        10: F("persistentVolumeClaim", MSG, "core.v1.PersistentVolumeClaimVolumeSource", OPT),
        19: F("configMap", MSG, "core.v1.ConfigMapVolumeSource", OPT),
        # other volume sources (3-5, 7-9, 11-18, 20-30) are not covered (skipped)
    },
    "core.v1.HostPathVolumeSource": {1: F("path", STRING, card=REQ), 2: F("type", STRING, card=OPT)},
    "core.v1.EmptyDirVolumeSource": {1: F("medium", STRING), 2: F("sizeLimit", QUANTITY, card=OPT)},
    "core.v1.SecretVolumeSource": {
        1: F("secretName", STRING), 2: F("items", MSG, "core.v1.KeyToPath", REP),
        3: F("defaultMode", INT32, card=OPT), 4: F("optional", BOOL, card=OPT),
    },
    "core.v1.ConfigMapVolumeSource": {
        1: F("", MSG, "core.v1.LocalObjectReference", INLINE), 2: F("items", MSG, "core.v1.KeyToPath", REP),
        3: F("defaultMode", INT32, card=OPT), 4: F("optional", BOOL, card=OPT),
    },
    "core.v1.KeyToPath": {1: F("key", STRING, card=REQ), 2: F("path", STRING, card=REQ), 3: F("mode", INT32, card=OPT)},
    "core.v1.PersistentVolumeClaimVolumeSource": {1: F("claimName", STRING, card=REQ), 2: F("readOnly", BOOL)},
    "core.v1.Probe": {
        1: F("", MSG, "core.v1.ProbeHandler", INLINE), 2: F("initialDelaySeconds", INT32),
        3: F("timeoutSeconds", INT32), 4: F("periodSeconds", INT32), 5: F("successThreshold", INT32),
        6: F("failureThreshold", INT32), 7: F("terminationGracePeriodSeconds", INT64, card=OPT),
    },
    "core.v1.ProbeHandler": {
        1: F("exec", MSG, "core.v1.ExecAction", OPT), 2: F("httpGet", MSG, "core.v1.HTTPGetAction", OPT),
        3: F("tcpSocket", MSG, "core.v1.TCPSocketAction", OPT), 4: F("grpc", MSG, "core.v1.GRPCAction", OPT),
    },
    "core.v1.ExecAction": {1: F("command", STRING, card=REP)},
    "core.v1.HTTPGetAction": {
        1: F("path", STRING), 2: F("port", INTORSTR, card=REQ), 3: F("host", STRING), 4: F("scheme", STRING),
        5: F("httpHeaders", MSG, "core.v1.HTTPHeader", REP),
    },
    "core.v1.HTTPHeader": {1: F("name", STRING, card=REQ), 2: F("value", STRING, card=REQ)},
    "core.v1.TCPSocketAction": {1: F("port", INTORSTR, card=REQ), 2: F("host", STRING)},
    "core.v1.GRPCAction": {1: F("port", INT32, card=REQ), 2: F("service", STRING, card=OPT)},
    "core.v1.PodSecurityContext": {
        2: F("runAsUser", INT64, card=OPT), 3: F("runAsNonRoot", BOOL, card=OPT),
        4: F("supplementalGroups", INT64, card=REP), 5: F("fsGroup", INT64, card=OPT),
        6: F("runAsGroup", INT64, card=OPT),
    },
    "core.v1.SecurityContext": {
        1: F("capabilities", MSG, "core.v1.Capabilities", OPT), 2: F("privileged", BOOL, card=OPT),
        4: F("runAsUser", INT64, card=OPT), 5: F("runAsNonRoot", BOOL, card=OPT),
        6: F("readOnlyRootFilesystem", BOOL, card=OPT), 7: F("allowPrivilegeEscalation", BOOL, card=OPT),
        8: F("runAsGroup", INT64, card=OPT),
    },
    "core.v1.Capabilities": {1: F("add", STRING, card=REP), 2: F("drop", STRING, card=REP)},
    "core.v1.Toleration": {
        1: F("key", STRING), 2: F("operator", STRING), 3: F("value", STRING), 4: F("effect", STRING),
        5: F("tolerationSeconds", INT64, card=OPT),
    },
    "core.v1.Service": {
        1: F("metadata", MSG, META), 2: F("spec", MSG, "core.v1.ServiceSpec"),
        3: F("status", MSG, "core.v1.ServiceStatus"),
    },
    "core.v1.ServiceSpec": {
        1: F("ports", MSG, "core.v1.ServicePort", REP), 2: F("selector", STRING, card=MAP),
        3: F("clusterIP", STRING), 4: F("type", STRING), 5: F("externalIPs", STRING, card=REP),
        7: F("sessionAffinity", STRING), 8: F("loadBalancerIP", STRING),
        9: F("loadBalancerSourceRanges", STRING, card=REP), 10: F("externalName", STRING),
        11: F("externalTrafficPolicy", STRING), 12: F("healthCheckNodePort", INT32),
        13: F("publishNotReadyAddresses", BOOL), 17: F("ipFamilyPolicy", STRING, card=OPT),
        18: F("clusterIPs", STRING, card=REP), 19: F("ipFamilies", STRING, card=REP),
        20: F("allocateLoadBalancerNodePorts", BOOL, card=OPT), 21: F("loadBalancerClass", STRING, card=OPT),
        22: F("internalTrafficPolicy", STRING, card=OPT), 23: F("trafficDistribution", STRING, card=OPT),
        # not covered (skipped): 14 sessionAffinityConfig
    },
    "core.v1.ServicePort": {
        1: F("name", STRING), 2: F("protocol", STRING), 3: F("port", INT32, card=REQ),
        4: F("targetPort", INTORSTR), 5: F("nodePort", INT32), 6: F("appProtocol", STRING, card=OPT),
    },
    "core.v1.ServiceStatus": {
        1: F("loadBalancer", MSG, "core.v1.LoadBalancerStatus"),
        2: F("conditions", MSG, "meta.v1.Condition", REP),
    },
    "core.v1.LoadBalancerStatus": {1: F("ingress", MSG, "core.v1.LoadBalancerIngress", REP)},
    "core.v1.LoadBalancerIngress": {1: F("ip", STRING), 2: F("hostname", STRING), 3: F("ipMode", STRING, card=OPT)},
    # apps/v1
    "apps.v1.Deployment": {
        1: F("metadata", MSG, META), 2: F("spec", MSG, "apps.v1.DeploymentSpec"),
        3: F("status", MSG, "apps.v1.DeploymentStatus"),
    },
    "apps.v1.DeploymentSpec": {
        1: F("replicas", INT32, card=OPT), 2: F("selector", MSG, SELECTOR, OPT),
        3: F("template", MSG, "core.v1.PodTemplateSpec"), 4: F("strategy", MSG, "apps.v1.DeploymentStrategy"),
        5: F("minReadySeconds", INT32), 6: F("revisionHistoryLimit", INT32, card=OPT), 7: F("paused", BOOL),
        9: F("progressDeadlineSeconds", INT32, card=OPT),
    },
    "apps.v1.DeploymentStrategy": {
        1: F("type", STRING), 2: F("rollingUpdate", MSG, "apps.v1.RollingUpdateDeployment", OPT),
    },
    "apps.v1.RollingUpdateDeployment": {
        1: F("maxUnavailable", INTORSTR, card=OPT), 2: F("maxSurge", INTORSTR, card=OPT),
    },
    "apps.v1.DeploymentStatus": {
        1: F("observedGeneration", INT64), 2: F("replicas", INT32), 3: F("updatedReplicas", INT32),
        4: F("availableReplicas", INT32), 5: F("unavailableReplicas", INT32),
        6: F("conditions", MSG, "apps.v1.DeploymentCondition", REP), 7: F("readyReplicas", INT32),
        8: F("collisionCount", INT32, card=OPT),
    },
    "apps.v1.DeploymentCondition": {
        1: F("type", STRING, card=REQ), 2: F("status", STRING, card=REQ), 4: F("reason", STRING),
        5: F("message", STRING), 6: F("lastUpdateTime", TIME), 7: F("lastTransitionTime", TIME),
    },
    # policy/v1
    "policy.v1.Eviction": {1: F("metadata", MSG, META), 2: F("deleteOptions", MSG, "meta.v1.DeleteOptions", OPT)},
    "policy.v1.PodDisruptionBudget": {
        1: F("metadata", MSG, META), 2: F("spec", MSG, "policy.v1.PodDisruptionBudgetSpec"),
        3: F("status", MSG, "policy.v1.PodDisruptionBudgetStatus"),
    },
    "policy.v1.PodDisruptionBudgetSpec": {
        1: F("minAvailable", INTORSTR, card=OPT), 2: F("selector", MSG, SELECTOR, OPT),
        3: F("maxUnavailable", INTORSTR, card=OPT), 4: F("unhealthyPodEvictionPolicy", STRING, card=OPT),
    },
    "policy.v1.PodDisruptionBudgetStatus": {
        1: F("observedGeneration", INT64), 2: F("disruptedPods", TIME, card=MAP),
        3: F("disruptionsAllowed", INT32, card=REQ), 4: F("currentHealthy", INT32, card=REQ),
        5: F("desiredHealthy", INT32, card=REQ), 6: F("expectedPods", INT32, card=REQ),
        7: F("conditions", MSG, "meta.v1.Condition", REP),
    },
    # autoscaling/v1
    "autoscaling.v1.Scale": {
        1: F("metadata", MSG, META), 2: F("spec", MSG, "autoscaling.v1.ScaleSpec"),
        3: F("status", MSG, "autoscaling.v1.ScaleStatus"),
    },
    "autoscaling.v1.ScaleSpec": {1: F("replicas", INT32)},
    "autoscaling.v1.ScaleStatus": {1: F("replicas", INT32, card=REQ), 2: F("selector", STRING)},
}

# fields dropped without complaint, even when strict
IGNORED: frozenset[tuple[str, int]] = frozenset({("meta.v1.ObjectMeta", 17)})

# (apiVersion, kind) of a top-level object -> its message
KINDS: dict[tuple[str, str], str] = {
    ("v1", "Namespace"): "core.v1.Namespace",
    ("v1", "ConfigMap"): "core.v1.ConfigMap",
    ("v1", "Secret"): "core.v1.Secret",
    ("v1", "Pod"): "core.v1.Pod",
    ("v1", "Service"): "core.v1.Service",
    ("apps/v1", "Deployment"): "apps.v1.Deployment",
    ("policy/v1", "Eviction"): "policy.v1.Eviction",
    ("policy/v1", "PodDisruptionBudget"): "policy.v1.PodDisruptionBudget",
    ("autoscaling/v1", "Scale"): "autoscaling.v1.Scale",
    # DeleteOptions travel under any group's version (client-go sends the request's)
    ("v1", "DeleteOptions"): "meta.v1.DeleteOptions",
    ("meta.k8s.io/v1", "DeleteOptions"): "meta.v1.DeleteOptions",
    ("apps/v1", "DeleteOptions"): "meta.v1.DeleteOptions",
    ("policy/v1", "DeleteOptions"): "meta.v1.DeleteOptions",
}


# -- the wire format

VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ProtobufError("varint too long")


def fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(number, wire type, value) for each field: ints for varint/fixed, bytes for length-delimited."""
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise ProtobufError("field number 0")
        value: int | bytes
        if wire == VARINT:
            value, pos = _varint(data, pos)
        elif wire == FIXED64:
            if pos + 8 > len(data):
                raise ProtobufError("truncated fixed64")
            value = int.from_bytes(data[pos:pos + 8], "little")
            pos += 8
        elif wire == FIXED32:
            if pos + 4 > len(data):
                raise ProtobufError("truncated fixed32")
            value = int.from_bytes(data[pos:pos + 4], "little")
            pos += 4
        elif wire == LEN:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise ProtobufError("truncated length-delimited field")
            value = data[pos:pos + size]
            pos += size
        else:
            raise ProtobufError(f"unsupported wire type {wire} (field {number})")
        yield number, wire, value


def encode_varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _tag(number: int, wire: int) -> bytes:
    return encode_varint(number << 3 | wire)


def _len_field(number: int, payload: bytes) -> bytes:
    return _tag(number, LEN) + encode_varint(len(payload)) + payload


def _signed(n: int, bits: int) -> int:
    n &= (1 << 64) - 1
    if n >= 1 << 63:
        n -= 1 << 64
    if bits == 32:  # int32: the low 32 bits, sign-extended
        n &= 0xFFFFFFFF
        if n >= 1 << 31:
            n -= 1 << 32
    return n


# -- apimachinery's special types

def _format_time(seconds: int, nanos: int, micro: bool) -> str:
    try:
        t = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=seconds)
    except OverflowError:
        raise ProtobufError(f"time out of range: {seconds}") from None
    base = t.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{nanos // 1000:06d}Z" if micro else base + "Z"


def _parse_time(text: Any) -> tuple[int, int]:
    if not isinstance(text, str):
        raise ProtobufError(f"time must be an RFC 3339 string, not {text!r}")
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ProtobufError(f"invalid RFC 3339 time {text!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    delta = t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return delta.days * 86400 + delta.seconds, delta.microseconds * 1000


def _decode_special(kind: str, data: bytes) -> Any:
    f = {n: v for n, _, v in fields(data)}
    if kind in (TIME, MICROTIME):
        return _format_time(_signed(_int(f.get(1, 0)), 64), _signed(_int(f.get(2, 0)), 32), kind == MICROTIME)
    if kind == QUANTITY:
        return _str(f.get(1, b""))
    # IntOrString: type 0 = int, 1 = string
    if _int(f.get(1, 0)) == 1:
        return _str(f.get(3, b""))
    return _signed(_int(f.get(2, 0)), 32)


def _encode_special(kind: str, value: Any) -> bytes:
    if kind in (TIME, MICROTIME):
        seconds, nanos = _parse_time(value)
        out = _tag(1, VARINT) + encode_varint(seconds)
        return out + (_tag(2, VARINT) + encode_varint(nanos) if nanos and kind == MICROTIME else b"")
    if kind == QUANTITY:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ProtobufError(f"quantity must be a string or a number, not {value!r}")
        return _len_field(1, str(value).encode())
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ProtobufError(f"int-or-string must be an int or a string, not {value!r}")
    if isinstance(value, int):
        return _tag(1, VARINT) + b"\x00" + _tag(2, VARINT) + encode_varint(value) + _len_field(3, b"")
    return _tag(1, VARINT) + b"\x01" + _tag(2, VARINT) + b"\x00" + _len_field(3, value.encode())


def _int(v: int | bytes) -> int:
    if isinstance(v, bytes):
        raise ProtobufError("expected a number, got a length-delimited field")
    return v


def _str(v: int | bytes) -> str:
    if not isinstance(v, bytes):
        raise ProtobufError("expected a length-delimited field")
    try:
        return v.decode()
    except UnicodeDecodeError:
        raise ProtobufError("invalid UTF-8 in a string field") from None


# -- decoding

def _zero(kind: str, value: Any) -> bool:
    return value in ("", 0, False) and not isinstance(value, dict)


def _scalar(kind: str, wire: int, v: int | bytes) -> list[Any]:
    """The values of one occurrence of a scalar field (several when packed)."""
    if kind == STRING:
        return [_str(v)]
    if kind == BYTES:
        if not isinstance(v, bytes):
            raise ProtobufError("expected bytes")
        return [base64.b64encode(v).decode()]
    if kind in (TIME, MICROTIME, QUANTITY, INTORSTR):
        if not isinstance(v, bytes):
            raise ProtobufError(f"expected a {kind} message")
        return [_decode_special(kind, v)]
    if kind == DOUBLE:
        if wire == FIXED64:
            return [struct.unpack("<d", _int(v).to_bytes(8, "little"))[0]]
        if isinstance(v, bytes) and len(v) % 8 == 0:
            return [struct.unpack("<d", v[i:i + 8])[0] for i in range(0, len(v), 8)]
        raise ProtobufError("expected a double")
    if isinstance(v, bytes):  # packed varints
        out, pos = [], 0
        while pos < len(v):
            n, pos = _varint(v, pos)
            out.append(n)
        raw = out
    else:
        raw = [v]
    if kind == BOOL:
        return [bool(n) for n in raw]
    if kind in (INT32, INT64):
        return [_signed(n, 32 if kind == INT32 else 64) for n in raw]
    raise ProtobufError(f"unknown kind {kind!r}")


def decode_message(name: str, data: bytes, strict: bool = False) -> dict[str, Any]:
    """One message of the table, as its JSON dict."""
    table = SCHEMA[name]
    out: dict[str, Any] = {}
    for number, wire, value in fields(data):
        f = table.get(number)
        if f is None:
            if strict and value not in (b"", 0) and (name, number) not in IGNORED:
                raise UnsupportedField(name, number)
            continue
        if f.kind == MSG:
            if not isinstance(value, bytes):
                raise ProtobufError(f"{name}.{f.json or number}: expected a message")
            sub = decode_message(f.message, value, strict)
            if f.card == REP:
                out.setdefault(f.json, []).append(sub)
            elif f.card == INLINE:
                out.update(sub)
            else:
                out[f.json] = sub
            continue
        if f.card == MAP:
            if not isinstance(value, bytes):
                raise ProtobufError(f"{name}.{f.json}: expected a map entry")
            key, val = "", None
            for n, w, v in fields(value):
                if n == 1:
                    key = _str(v)
                elif n == 2:
                    val = _scalar(f.kind, w, v)[0]
            out.setdefault(f.json, {})[key] = _empty(f.kind) if val is None else val
            continue
        vals = _scalar(f.kind, wire, value)
        if f.card == REP:
            out.setdefault(f.json, []).extend(vals)
            continue
        val = vals[-1]
        if f.card == ONE and (_zero(f.kind, val) or (f.kind == TIME and val == _EPOCH)):
            out.pop(f.json, None)
            continue
        out[f.json] = val
    return out


_EPOCH = "1970-01-01T00:00:00Z"


def _empty(kind: str) -> Any:
    return {STRING: "", BYTES: "", BOOL: False, INT32: 0, INT64: 0, DOUBLE: 0.0, QUANTITY: "0",
            INTORSTR: 0, TIME: None, MICROTIME: None}.get(kind)


# -- encoding

def _encode_scalar(number: int, kind: str, value: Any) -> bytes:
    if kind == STRING:
        if not isinstance(value, str):
            raise ProtobufError(f"field {number}: expected a string, not {value!r}")
        return _len_field(number, value.encode())
    if kind == BYTES:
        if not isinstance(value, str):
            raise ProtobufError(f"field {number}: expected a base64 string, not {value!r}")
        try:
            return _len_field(number, base64.b64decode(value, validate=True))
        except ValueError:
            raise ProtobufError(f"field {number}: invalid base64") from None
    if kind in (TIME, MICROTIME, QUANTITY, INTORSTR):
        return _len_field(number, _encode_special(kind, value))
    if kind == BOOL:
        if not isinstance(value, bool):
            raise ProtobufError(f"field {number}: expected a boolean, not {value!r}")
        return _tag(number, VARINT) + (b"\x01" if value else b"\x00")
    if kind in (INT32, INT64):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtobufError(f"field {number}: expected an integer, not {value!r}")
        limit = 1 << (31 if kind == INT32 else 63)
        if not -limit <= value < limit:
            raise ProtobufError(f"field {number}: {value} out of range for {kind}")
        return _tag(number, VARINT) + encode_varint(value)
    if kind == DOUBLE:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ProtobufError(f"field {number}: expected a number, not {value!r}")
        return _tag(number, FIXED64) + struct.pack("<d", float(value))
    raise ProtobufError(f"unknown kind {kind!r}")


def encode_message(name: str, obj: dict[str, Any]) -> bytes:
    """A JSON dict as one message of the table; keys the table does not know are left out."""
    if not isinstance(obj, dict):
        raise ProtobufError(f"{name}: expected an object, not {obj!r}")
    out = bytearray()
    for number, f in sorted(SCHEMA[name].items()):
        if f.card == INLINE:
            out += _len_field(number, encode_message(f.message, obj))
            continue
        value = obj.get(f.json)
        if value is None:
            continue
        if f.card == REP:
            if not isinstance(value, list):
                raise ProtobufError(f"{name}.{f.json}: expected a list")
            for item in value:
                out += (_len_field(number, encode_message(f.message, item)) if f.kind == MSG
                        else _encode_scalar(number, f.kind, item))
        elif f.card == MAP:
            if not isinstance(value, dict):
                raise ProtobufError(f"{name}.{f.json}: expected an object")
            for key in sorted(value):
                entry = _len_field(1, str(key).encode())
                if value[key] is not None:
                    entry += _encode_scalar(2, f.kind, value[key])
                out += _len_field(number, entry)
        elif f.kind == MSG:
            out += _len_field(number, encode_message(f.message, value))
        elif f.card == ONE and _zero(f.kind, value):
            continue
        else:
            out += _encode_scalar(number, f.kind, value)
    return bytes(out)


# -- the envelope

def decode_unknown(data: bytes) -> tuple[str, str, bytes]:
    """(apiVersion, kind, raw) of a `k8s\\x00` + runtime.Unknown body."""
    if not data.startswith(MAGIC):
        raise ProtobufError("the body does not start with the Kubernetes protobuf magic k8s\\x00")
    api_version = kind = encoding = ""
    raw = b""
    for number, _, value in fields(data[len(MAGIC):]):
        if number == 1:
            if not isinstance(value, bytes):
                raise ProtobufError("typeMeta: expected a message")
            for n, _, v in fields(value):
                if n == 1:
                    api_version = _str(v)
                elif n == 2:
                    kind = _str(v)
        elif number == 2:
            if not isinstance(value, bytes):
                raise ProtobufError("raw: expected bytes")
            raw = value
        elif number == 3:
            encoding = _str(value)
    if encoding:
        raise ProtobufError(f"unsupported contentEncoding {encoding!r}")
    return api_version, kind, raw


def encode_unknown(api_version: str, kind: str, raw: bytes) -> bytes:
    type_meta = _len_field(1, api_version.encode()) + _len_field(2, kind.encode())
    return MAGIC + _len_field(1, type_meta) + _len_field(2, raw) + _len_field(3, b"") + _len_field(4, b"")


def message_for(api_version: str, kind: str) -> str | None:
    return KINDS.get((api_version, kind))


def decode_object(data: bytes, strict: bool = False) -> dict[str, Any]:
    """A request body: the object as the JSON path would give it, apiVersion and kind first."""
    api_version, kind, raw = decode_unknown(data)
    name = message_for(api_version, kind)
    if name is None:
        raise UnsupportedKind(api_version, kind)
    return {"apiVersion": api_version, "kind": kind, **decode_message(name, raw, strict)}


def encode_object(obj: dict[str, Any]) -> bytes:
    """An object with apiVersion and kind, as a `k8s\\x00` + runtime.Unknown body."""
    api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
    name = message_for(api_version, kind)
    if name is None:
        raise UnsupportedKind(api_version, kind)
    return encode_unknown(api_version, kind, encode_message(name, obj))
