"""The REST verbs over storage: create, get, list, update, patch, delete,
deletecollection and the subresources (status, scale, binding, eviction, log,
namespace finalize). HTTP-free: handlers.py turns requests into these calls,
and in-process callers (controllers, tests) can call them directly.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from gifee.api import errors, jsoncodec, lifecycle, patch, resources
from gifee.api.defaults import apply_defaults
from gifee.api.ipalloc import ServiceAllocator
from gifee.api.resources import Resource
from gifee.api.selectors import SelectorError, format_label_selector, from_label_selector_object, labels_match
from gifee.api.storage import ListQuery, ListResult, Storage
from gifee.api.validation import validate, validate_update

Obj = dict[str, Any]
log = logging.getLogger("gifee.api")
NAMESPACES = resources.lookup("", "v1", "namespaces")
PODS = resources.lookup("", "v1", "pods")
PDBS = resources.lookup("policy", "v1", "poddisruptionbudgets")
assert NAMESPACES is not None and PODS is not None and PDBS is not None
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
LogSource = Callable[[Obj, str, dict[str, str]], Awaitable[bytes]]
PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json",
               "application/strategic-merge-patch+json")


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _dry_run(query: dict[str, str]) -> bool:
    v = query.get("dryRun", "")
    if v not in ("", "All"):
        raise errors.bad_request(f"unsupported dryRun value {v!r}")
    return v == "All"


async def _done(obj: Obj) -> Obj:
    return obj


def _strip_rv(obj: Obj) -> Obj:
    out = jsoncodec.clone(obj)
    out.get("metadata", {}).pop("resourceVersion", None)
    return out


def _same_but_rv(new: Obj, current: Obj) -> bool:
    """new == current without current's resourceVersion (a no-op write), without copying current."""
    if new.keys() != current.keys():
        return False
    for k, v in new.items():
        if k != "metadata":
            if v != current[k]:
                return False
            continue
        cur_meta = current[k]
        if not isinstance(v, dict) or not isinstance(cur_meta, dict):
            if v != cur_meta:
                return False
            continue
        if "resourceVersion" in v or len(v) != len(cur_meta) - ("resourceVersion" in cur_meta):
            return False
        if any(k2 not in cur_meta or cur_meta[k2] != v2 for k2, v2 in v.items()):
            return False
    return True


class Rest:
    def __init__(self, storage: Storage, *, log_source: LogSource | None = None) -> None:
        self.storage = storage
        self.log_source = log_source
        self.services: ServiceAllocator | None = None  # cluster IPs and node ports (ipalloc.py), set by the server
        self._namespace_tasks: dict[str, asyncio.Task[None]] = {}

    # -- checks

    def _check_type(self, res: Resource, obj: Any) -> Obj:
        if not isinstance(obj, dict):
            raise errors.bad_request("the request body must be a JSON object")
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if api_version and api_version != res.api_version:
            raise errors.bad_request(f"the API version in the data ({api_version}) does not match the expected "
                                     f"API version ({res.api_version})")
        if kind and kind != res.kind:
            raise errors.bad_request(f"the kind in the data ({kind}) does not match the expected kind ({res.kind})")
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        return obj

    async def _check_namespace(self, namespace: str, *, creating: bool) -> None:
        assert NAMESPACES is not None
        # the watch-fed cache answers for a namespace that exists and is not being deleted (the
        # namespace lifecycle admission of Kubernetes reads its informer the same way); anything
        # else is read from the store
        ns = self.storage.cached(NAMESPACES, "", namespace) if self.storage.cached is not None else None
        if ns is None or ns["metadata"].get("deletionTimestamp"):
            ns = await self.storage.get_or_none(NAMESPACES, "", namespace)
        if ns is None:
            raise errors.not_found(NAMESPACES, namespace)
        if creating and ns["metadata"].get("deletionTimestamp"):
            raise errors.ApiError(403, "Forbidden", f"unable to create new content in namespace {namespace} because "
                                  "it is being terminated", {"name": namespace, "kind": "namespaces"})

    # -- verbs

    async def create(self, res: Resource, namespace: str, body: Any, *, dry_run: bool = False,
                     owned: bool = False) -> Obj:
        """owned: the body is the caller's to give away (a request's, just decoded): no copy is made."""
        obj = self._check_type(res, body if owned else jsoncodec.clone(body))
        meta = obj["metadata"]
        if res.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and namespace and body_ns != namespace:
                raise errors.bad_request("the namespace of the provided object does not match the namespace sent "
                                         "on the request")
            namespace = namespace or body_ns or ""
            if not namespace:
                raise errors.bad_request("a namespace is required to create this object")
            meta["namespace"] = namespace
            await self._check_namespace(namespace, creating=True)
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and isinstance(meta.get("generateName"), str) and meta["generateName"]:
            meta["name"] = meta["generateName"] + "".join(random.choice(_NAME_CHARS) for _ in range(5))
        apply_defaults(res.kind, obj)
        causes = validate(res.kind, obj)
        if causes:
            raise errors.invalid(res, str(meta.get("name", "")), causes)
        lifecycle.prepare_create(res, obj, now())
        if res.kind == "Service" and self.services is not None:
            return await self.services.create(obj, lambda: self.storage.create(res, obj) if not dry_run else
                                              _done(obj), dry_run)
        if dry_run:
            return obj
        return await self.storage.create(res, obj)

    async def get(self, res: Resource, namespace: str, name: str) -> Obj:
        return await self.storage.get(res, namespace, name)

    async def list(self, res: Resource, query: ListQuery) -> ListResult:
        return await self.storage.list(res, query)

    def list_object(self, res: Resource, result: ListResult) -> Obj:
        meta: Obj = {"resourceVersion": str(result.revision)}
        if result.continue_token:
            meta["continue"] = result.continue_token
        if result.remaining is not None:
            meta["remainingItemCount"] = result.remaining
        return {"kind": res.list_kind, "apiVersion": res.api_version, "metadata": meta, "items": result.items}

    async def update(self, res: Resource, namespace: str, name: str, body: Any, *, subresource: str = "",
                     dry_run: bool = False, owned: bool = False) -> Obj:
        obj = self._check_type(res, body if owned else jsoncodec.clone(body))
        meta = obj["metadata"]
        if meta.get("name") and meta["name"] != name:
            raise errors.bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL "
                                     f"({name})")
        if res.namespaced and meta.get("namespace") and meta["namespace"] != namespace:
            raise errors.bad_request("the namespace of the provided object does not match the namespace sent on "
                                     "the request")
        meta["name"] = name
        if res.namespaced:
            meta["namespace"] = namespace
        want_rv = str(meta.get("resourceVersion") or "")
        # the body replaces the object: `make` never looks at the current copy, which needs no copying,
        # and gives our own copy of the body, which needs none either
        return await self._write(res, namespace, name, lambda current: obj, want_rv, subresource, dry_run,
                                 copy_current=False, owned_new=True)

    async def _write(self, res: Resource, namespace: str, name: str, make: Callable[[Obj], Obj], want_rv: str,
                     subresource: str, dry_run: bool, *, allocated: bool = False, copy_current: bool = True,
                     owned_new: bool = False) -> Obj:
        """The shared update path: precondition, server fields, defaults, validation, one guarded write.
        `make` gets a copy of the current object it may change (the current object itself, which may be
        the watch cache's and must stay untouched, when copy_current is False: make must not change it).
        owned_new: what `make` returns shares nothing with the current object or anyone else's (it may
        be changed in place; a retry gets it again and sets every server field afresh)."""
        if res.kind == "Service" and not subresource and not allocated and self.services is not None:
            current = await self.storage.get(res, namespace, name)
            return await self.services.update(current, make, lambda m: self._write(
                res, namespace, name, m, want_rv, subresource, dry_run, allocated=True,
                copy_current=copy_current), dry_run)
        result: list[Obj] = []

        def mutate(current: Obj) -> Obj | None:
            result.clear()  # called again on a fresh read when a cached copy was not current
            if want_rv and want_rv != current["metadata"]["resourceVersion"]:
                raise errors.conflict(res, name)
            new = make(jsoncodec.clone(current) if copy_current else current)
            new = self._check_type(res, new)
            new["metadata"]["name"] = name
            if res.namespaced:
                new["metadata"]["namespace"] = namespace
            new = lifecycle.prepare_update(res, current, new, subresource=subresource, owned=owned_new)
            apply_defaults(res.kind, new)
            causes = validate_update(res.kind, current, new) if subresource != "status" else []
            if causes:
                raise errors.invalid(res, name, causes)
            if dry_run or _same_but_rv(new, current):
                result.append(current if not dry_run else {**new, "metadata": {
                    **new["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]}})
                return None
            return new

        _, written = await self.storage.guaranteed_update(res, namespace, name, mutate)
        if result:
            return result[0]
        if lifecycle.should_remove_after_update(written):
            mod = int(written["metadata"]["resourceVersion"])
            if res.kind == "Service" and self.services is not None:
                removed = await self.services.delete(self.storage.delete_if(res, written, mod))
            else:
                removed = await self.storage.delete_if(res, written, mod)
            if removed is not None:
                return removed
        return written

    async def patch(self, res: Resource, namespace: str, name: str, content_type: str, body: Any, *,
                    subresource: str = "", dry_run: bool = False) -> Obj:
        ctype = content_type.split(";")[0].strip()
        if ctype not in PATCH_TYPES:
            raise errors.unsupported_media_type(ctype)
        seen_rv: list[str] = []

        def make(current: Obj) -> Obj:
            seen_rv.append(current["metadata"]["resourceVersion"])
            try:
                if ctype == "application/json-patch+json":
                    out = patch.json_patch(current, body)
                elif ctype == "application/merge-patch+json":
                    if not isinstance(body, dict):
                        raise patch.PatchError("a merge patch must be a JSON object")
                    out = patch.merge_patch(current, body)
                else:
                    out = patch.strategic_merge_patch(current, body, res.kind)
            except patch.PatchError as e:
                if ctype == "application/json-patch+json":
                    raise errors.ApiError(422, "Invalid", f"the server rejected our request due to an error in our "
                                          f"request: {e}", {}) from None
                raise errors.bad_request(f"the server rejected our request due to an error in our request: "
                                         f"{e}") from None
            if not isinstance(out, dict):
                raise errors.bad_request("the patch must leave an object")
            rv = (out.get("metadata") or {}).get("resourceVersion")
            if rv is not None and str(rv) != current["metadata"]["resourceVersion"]:
                raise errors.conflict(res, name)
            return out

        return await self._write(res, namespace, name, make, "", subresource, dry_run)

    async def delete(self, res: Resource, namespace: str, name: str, options: Obj) -> Obj:
        dry_run = "All" in (options.get("dryRun") or [])
        pre = options.get("preconditions") or {}
        for _ in range(16):
            current = await self.storage.get(res, namespace, name)
            meta = current["metadata"]
            if pre.get("uid") and pre["uid"] != meta.get("uid"):
                raise errors.conflict(res, name, f"Precondition failed: UID in precondition: {pre['uid']}, UID in "
                                      f"object meta: {meta.get('uid')}")
            if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
                raise errors.conflict(res, name, f"Precondition failed: ResourceVersion in precondition: "
                                      f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                                      f"{meta.get('resourceVersion')}")
            if res.kind == "Namespace":
                return await self._delete_namespace(current, dry_run)
            decision = lifecycle.plan_delete(res, current, options, now())
            if dry_run:
                return current if decision.remove else decision.updated or current
            mod = int(meta["resourceVersion"])
            if decision.remove:
                if res.kind == "Service" and self.services is not None:
                    deleted = await self.services.delete(self.storage.delete_if(res, current, mod))
                else:
                    deleted = await self.storage.delete_if(res, current, mod)
                if deleted is not None:
                    return deleted
            else:
                assert decision.updated is not None
                if _same_but_rv(decision.updated, current):
                    return current
                written = await self.storage.put_if(res, decision.updated, mod)
                if written is not None:
                    return written
        raise errors.conflict(res, name)

    async def delete_collection(self, res: Resource, query: ListQuery, options: Obj) -> Obj:
        result = await self.storage.list(res, ListQuery(query.namespace, query.label_selector, query.field_selector))
        deleted = []
        for obj in result.items:
            meta = obj["metadata"]
            try:
                deleted.append(await self.delete(res, meta.get("namespace", ""), meta["name"], options))
            except errors.ApiError as e:
                if e.code != 404:
                    raise
        return {"kind": res.list_kind, "apiVersion": res.api_version,
                "metadata": {"resourceVersion": str(result.revision)}, "items": deleted}

    # -- namespaces: deletion empties the namespace, then removes it

    async def _delete_namespace(self, ns: Obj, dry_run: bool) -> Obj:
        assert NAMESPACES is not None
        name = ns["metadata"]["name"]
        if name in DEFAULT_NAMESPACES[:3]:
            raise errors.forbidden(NAMESPACES, name, "this namespace may not be deleted")
        if dry_run:
            return ns
        if not ns["metadata"].get("deletionTimestamp"):
            marked = jsoncodec.clone(ns)
            marked["metadata"]["deletionTimestamp"] = lifecycle.timestamp(now())
            marked["metadata"]["deletionGracePeriodSeconds"] = 0
            marked.setdefault("status", {})["phase"] = "Terminating"
            written = await self.storage.put_if(NAMESPACES, marked, int(ns["metadata"]["resourceVersion"]))
            if written is None:
                raise errors.conflict(NAMESPACES, name)
            ns = written
        self.ensure_namespace_finalizer(name)
        return ns

    def ensure_namespace_finalizer(self, name: str) -> None:
        task = self._namespace_tasks.get(name)
        if task is None or task.done():
            self._namespace_tasks[name] = asyncio.create_task(self._finalize_namespace(name))

    async def _finalize_namespace(self, name: str) -> None:
        assert NAMESPACES is not None
        delay = 0.05
        while True:
            try:
                remaining = 0
                for res in resources.RESOURCES:
                    if not res.namespaced:
                        continue
                    result = await self.delete_collection(res, ListQuery(namespace=name),
                                                          {"propagationPolicy": "Background", "gracePeriodSeconds": 0})
                    remaining += len(result["items"])
                    left = await self.storage.list(res, ListQuery(namespace=name, limit=1))
                    remaining += len(left.items)
                if remaining == 0:
                    ns = await self.storage.get_or_none(NAMESPACES, "", name)
                    if ns is not None:
                        await self.storage.delete_if(NAMESPACES, ns, int(ns["metadata"]["resourceVersion"]))
                    self._namespace_tasks.pop(name, None)
                    return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("finalizing namespace %s", name)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def stop(self) -> None:
        for task in list(self._namespace_tasks.values()):
            task.cancel()
        for task in list(self._namespace_tasks.values()):
            try:
                await task
            except BaseException:  # noqa: B036 - stopping: whatever it ended with is done
                pass

    async def ensure_default_namespaces(self) -> None:
        assert NAMESPACES is not None
        for name in DEFAULT_NAMESPACES:
            try:
                await self.create(NAMESPACES, "", {"apiVersion": "v1", "kind": "Namespace",
                                                   "metadata": {"name": name}})
            except errors.ApiError as e:
                if e.reason != "AlreadyExists":
                    raise
        result = await self.storage.list(NAMESPACES, ListQuery())
        for ns in result.items:
            if ns["metadata"].get("deletionTimestamp"):
                self.ensure_namespace_finalizer(ns["metadata"]["name"])

    # -- subresources

    def scale_of(self, res: Resource, obj: Obj) -> Obj:
        meta = obj["metadata"]
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        selector = spec.get("selector")
        try:
            sel_text = format_label_selector(from_label_selector_object(
                selector if res.kind != "ReplicationController" else {"matchLabels": selector or {}}))
        except SelectorError:
            sel_text = ""
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                                  "creationTimestamp") if k in meta},
                "spec": {"replicas": spec.get("replicas", 0)},
                "status": {"replicas": status.get("replicas", 0), "selector": sel_text}}

    async def get_scale(self, res: Resource, namespace: str, name: str) -> Obj:
        return self.scale_of(res, await self.storage.get(res, namespace, name))

    async def update_scale(self, res: Resource, namespace: str, name: str, scale: Any, *, dry_run: bool = False,
                           patch_type: str = "") -> Obj:
        current_scale = await self.get_scale(res, namespace, name)
        if patch_type:
            if patch_type.split(";")[0].strip() not in PATCH_TYPES:
                raise errors.unsupported_media_type(patch_type)
            try:
                if patch_type.startswith("application/json-patch+json"):
                    scale = patch.json_patch(current_scale, scale)
                else:
                    scale = patch.merge_patch(current_scale, scale)
            except patch.PatchError as e:
                raise errors.bad_request(str(e)) from None
        if not isinstance(scale, dict):
            raise errors.bad_request("the request body must be a Scale object")
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise errors.ApiError(422, "Invalid", f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid '
                                  f"value: {replicas}: must be greater than or equal to 0",
                                  {"name": name, "group": "autoscaling", "kind": "Scale", "causes": [
                                      errors.cause("spec.replicas", "must be greater than or equal to 0")]})
        want_rv = str((scale.get("metadata") or {}).get("resourceVersion") or "")
        if patch_type:
            want_rv = ""

        def make(current: Obj) -> Obj:
            current.setdefault("spec", {})["replicas"] = replicas
            return current

        written = await self._write(res, namespace, name, make, want_rv, "", dry_run, owned_new=True)
        return self.scale_of(res, written)

    async def bind(self, namespace: str, name: str, binding: Any) -> Obj:
        assert PODS is not None
        if not isinstance(binding, dict):
            raise errors.bad_request("the request body must be a Binding")
        target = binding.get("target") or {}
        node = target.get("name")
        if not node:
            raise errors.invalid(PODS, name, [errors.cause("target.name", "Required value", "FieldValueRequired")])
        bname = (binding.get("metadata") or {}).get("name", name)
        if bname != name:
            raise errors.bad_request(f"the name of the binding ({bname}) does not match the pod ({name})")

        def mutate(pod: Obj) -> Obj:
            if pod["metadata"].get("deletionTimestamp"):
                raise errors.conflict(PODS, name, f"pod {name} is being deleted, cannot be assigned to a host")
            current = (pod.get("spec") or {}).get("nodeName")
            if current:
                raise errors.conflict(PODS, name, f'pod {name} is already assigned to node "{current}"')
            # the pod with its node and condition: new metadata, spec and status dicts, the rest (the
            # containers, the other conditions) shared with the current pod, which nothing changes
            conds = [c for c in (pod.get("status") or {}).get("conditions", []) if c.get("type") != "PodScheduled"]
            conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                          "lastTransitionTime": lifecycle.timestamp(now())})
            meta = {k: v for k, v in pod["metadata"].items() if k != "resourceVersion"}
            return {**pod, "metadata": meta, "spec": {**(pod.get("spec") or {}), "nodeName": node},
                    "status": {**(pod.get("status") or {}), "conditions": conds}}

        await self.storage.guaranteed_update(PODS, namespace, name, mutate)
        return errors.success_status() | {"code": 201}

    async def evict(self, namespace: str, name: str, eviction: Any) -> Obj:
        assert PODS is not None and PDBS is not None
        if not isinstance(eviction, dict):
            raise errors.bad_request("the request body must be an Eviction")
        pod = await self.storage.get(PODS, namespace, name)
        labels = pod["metadata"].get("labels") or {}
        pdbs = (await self.storage.list(PDBS, ListQuery(namespace=namespace))).items
        for pdb in pdbs:
            try:
                sel = from_label_selector_object((pdb.get("spec") or {}).get("selector"))
            except SelectorError:
                continue
            if not sel or not labels_match(sel, labels):
                continue
            pdb_name = pdb["metadata"]["name"]

            def take(budget: Obj, pdb_name: str = pdb_name) -> Obj:
                allowed = int((budget.get("status") or {}).get("disruptionsAllowed", 0))
                if allowed < 1:
                    raise errors.ApiError(429, "TooManyRequests", "Cannot evict pod as it would violate the pod's "
                                          "disruption budget.", {"causes": [{
                                              "reason": "DisruptionBudget",
                                              "message": f"The disruption budget {pdb_name} needs "
                                              f"{(budget.get('status') or {}).get('desiredHealthy', 0)} healthy pods "
                                              f"and has {(budget.get('status') or {}).get('currentHealthy', 0)} "
                                              "currently"}]})
                budget = _strip_rv(budget)
                budget["status"]["disruptionsAllowed"] = allowed - 1
                return budget

            await self.storage.guaranteed_update(PDBS, namespace, pdb_name, take)
        await self.delete(PODS, namespace, name, dict(eviction.get("deleteOptions") or {}))
        return errors.success_status() | {"code": 201}

    async def pod_log(self, namespace: str, name: str, params: dict[str, str]) -> bytes:
        assert PODS is not None
        pod = await self.storage.get(PODS, namespace, name)
        containers = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
        container = params.get("container") or (containers[0] if len(containers) == 1 else "")
        if not container:
            raise errors.bad_request(f"a container name must be specified for pod {name}, choose one of: "
                                     f"{containers}")
        if container not in containers:
            raise errors.bad_request(f"container {container} is not valid for pod {name}")
        if self.log_source is None or not (pod.get("spec") or {}).get("nodeName"):
            raise errors.bad_request(f'container "{container}" in pod "{name}" is waiting to start: no node serves '
                                     "its logs yet")
        return await self.log_source(pod, container, params)
