"""The reconcile-loop shell: informers (list + watch + resync) feeding local caches,
work queues of keys with rate-limited requeue, action application against the API
server, and leader election through a coordination.k8s.io Lease.

Theory of operation (Kubernetes' client-go, small):
- An Informer lists a resource, then watches from the list's resourceVersion and
  keeps `cache` (key -> object) current; a closed or expired (410) watch relists.
  Every event and every `resync` period calls the handlers, which only enqueue keys.
- A WorkQueue holds each key once; a key being processed that is added again is
  processed once more afterwards. Failures requeue with per-key exponential
  back-off (`rate_limited`), success forgets the back-off; `add_after` schedules a
  later look (minReadySeconds, eviction deadlines).
- `apply_actions` turns core Actions into REST calls and writes every answer
  through to the informer's cache, so a reconcile that follows at once sees its own
  writes (no duplicate creations); watch events older than the cached
  resourceVersion are ignored, deletions leave a tombstone for the same reason.
- LeaderElector holds a Lease (holderIdentity, leaseDurationSeconds, renewTime,
  acquireTime, leaseTransitions) with optimistic concurrency; others wait until it
  expires. Losing the lease stops the process's loops.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from gifee.api.client import ApiClient, resource_path
from gifee.api.errors import ApiError
from gifee.controllers.objects import KIND_PLURALS, Action, Obj, key_of, micro_timestamp, parse_time

log = logging.getLogger("gifee.controllers")
Handler = Callable[[str, Obj, Obj | None], None]  # (event type, object, old object)
IndexFn = Callable[[Obj], list[str]]  # an object's index values


def by_node_name(obj: Obj) -> list[str]:
    node = (obj.get("spec") or {}).get("nodeName")
    return [str(node)] if node else []


def by_namespace(obj: Obj) -> list[str]:
    return [str((obj.get("metadata") or {}).get("namespace") or "")]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _rv(obj: Obj | None) -> int:
    try:
        return int(((obj or {}).get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


class Informer:
    def __init__(self, api: ApiClient, resource: str, *, namespace: str = "", resync: float = 30.0,
                 field_selector: str = "") -> None:
        self.api, self.resource, self.namespace, self.resync = api, resource, namespace, resync
        self.field_selector = field_selector
        self.cache: dict[str, Obj] = {}
        self.tombstones: dict[str, int] = {}
        self.handlers: list[Handler] = []
        self.synced = asyncio.Event()
        self.kind = next((k for k, p in KIND_PLURALS.items() if p == resource), "")
        self._index_fns: dict[str, IndexFn] = {}
        self._indexes: dict[str, dict[str, dict[str, Obj]]] = {}

    def add_index(self, name: str, fn: IndexFn) -> None:
        """Keep cached objects grouped by fn(obj) (index values; an object may have several),
        so handlers and reconciles can look up e.g. the pods of one node without a full scan."""
        self._index_fns[name] = fn
        index: dict[str, dict[str, Obj]] = {}
        for key, obj in self.cache.items():
            for value in fn(obj):
                index.setdefault(value, {})[key] = obj
        self._indexes[name] = index

    def by_index(self, name: str, value: str) -> list[Obj]:
        return list(self._indexes[name].get(value, {}).values())

    def in_index(self, name: str, value: str) -> bool:
        """Whether any cached object has this index value (no list built: an empty bucket is dropped)."""
        return value in self._indexes[name]

    def _reindex(self, key: str, old: Obj | None, new: Obj | None) -> None:
        # most events keep an object's index values (a pod's status, its binding for all but the node
        # index): the object is replaced in its buckets, without removing it first or building an
        # empty bucket for setdefault on every call (the pod informer has four indexes)
        for name, fn in self._index_fns.items():
            index = self._indexes[name]
            values = fn(new) if new is not None else []
            if old is not None:
                for value in fn(old):
                    if value in values:
                        continue
                    bucket = index.get(value)
                    if bucket is not None:
                        bucket.pop(key, None)
                        if not bucket:
                            del index[value]
            if new is not None:
                for value in values:
                    bucket = index.get(value)
                    if bucket is None:
                        index[value] = {key: new}
                    else:
                        bucket[key] = new

    def on_event(self, handler: Handler) -> None:
        self.handlers.append(handler)

    def list(self) -> list[Obj]:
        return list(self.cache.values())

    def get(self, key: str) -> Obj | None:
        return self.cache.get(key)

    def _emit(self, kind: str, obj: Obj, old: Obj | None) -> None:
        for h in self.handlers:
            try:
                h(kind, obj, old)
            except Exception:  # a handler bug must not stop the informer
                log.exception("%s handler failed", self.resource)

    def observe(self, kind: str, obj: Obj) -> None:
        """Apply one event (from the watch or written through), unless it is older than what we hold."""
        if not obj.get("kind") and self.kind:
            obj["kind"] = self.kind
        key = key_of(obj)
        old = self.cache.get(key)
        rv = _rv(obj)
        if kind == "DELETED":
            if old is not None and _rv(old) > rv > 0:
                return
            self.cache.pop(key, None)
            if self._index_fns:
                self._reindex(key, old, None)
            self.tombstones[key] = rv
            self._emit("DELETED", obj, old)
            return
        if old is not None and _rv(old) >= rv > 0:
            return
        if old is None and self.tombstones.get(key, 0) >= rv > 0:
            return
        self.tombstones.pop(key, None)
        self.cache[key] = obj
        if self._index_fns:
            self._reindex(key, old, obj)
        self._emit("MODIFIED" if old is not None else "ADDED", obj, old)

    async def run(self) -> None:
        backoff = 0.2
        while True:
            try:
                listing = await self.api.list(self.resource, namespace=self.namespace,
                                              field_selector=self.field_selector)
                rv = str((listing.get("metadata") or {}).get("resourceVersion") or "")
                seen = set()
                for item in listing.get("items") or []:
                    item.setdefault("kind", _kind(listing))
                    item.setdefault("apiVersion", listing.get("apiVersion", ""))
                    seen.add(key_of(item))
                    self.observe("ADDED", item)
                for key in [k for k in self.cache if k not in seen]:
                    gone = self.cache[key]
                    self.cache.pop(key)
                    if self._index_fns:
                        self._reindex(key, gone, None)
                    self._emit("DELETED", gone, gone)
                self.synced.set()
                backoff = 0.2
                await self._watch(rv)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - relist on any failure
                log.info("%s: relisting after %s", self.resource, e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _watch(self, rv: str) -> None:
        last_resync = time.monotonic()
        while True:
            timeout = max(int(self.resync), 1)
            async for ev in self.api.watch(self.resource, namespace=self.namespace, resource_version=rv,
                                           field_selector=self.field_selector, timeout_seconds=timeout):
                typ, obj = ev.get("type"), ev.get("object") or {}
                if typ == "ERROR":
                    raise RuntimeError(f"watch error: {obj.get('message')}")
                if typ == "BOOKMARK":
                    rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                    continue
                rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                self.observe(str(typ), obj)
            if time.monotonic() - last_resync >= self.resync:
                last_resync = time.monotonic()
                for obj in list(self.cache.values()):
                    self._emit("RESYNC", obj, obj)


def _kind(listing: Obj) -> str:
    kind = str(listing.get("kind", ""))
    return kind[:-4] if kind.endswith("List") else kind


class WorkQueue:
    def __init__(self, base_delay: float = 0.05, max_delay: float = 10.0) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._processing: set[str] = set()
        self._dirty: set[str] = set()
        self._failures: dict[str, int] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.base_delay, self.max_delay = base_delay, max_delay

    def add(self, key: str) -> None:
        if key in self._processing:
            self._dirty.add(key)
            return
        if key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def add_after(self, key: str, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        old = self._timers.get(key)
        when = loop.time() + delay
        if old is not None and old.when() <= when:
            return
        if old is not None:
            old.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def rate_limited(self, key: str) -> None:
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        self.add_after(key, min(self.base_delay * (2 ** n), self.max_delay))

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)

    async def get(self) -> str:
        key = await self._queue.get()
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def __len__(self) -> int:
        return len(self._queued)


Reconciler = Callable[[str], Awaitable[float | None]]  # returns "look again after N seconds" or None


async def run_worker(name: str, queue: WorkQueue, reconcile: Reconciler) -> None:
    while True:
        key = await queue.get()
        try:
            again = await reconcile(key)
        except asyncio.CancelledError:
            raise
        except ApiError as e:
            log.info("%s %s: %s %s (requeued)", name, key, e.code, e)
            queue.rate_limited(key)
        except Exception as e:
            if type(e).__name__.startswith("_"):  # an expected outcome told as an exception (unschedulable)
                log.debug("%s %s: %s (requeued)", name, key, e)
            else:
                log.exception("%s %s failed (requeued)", name, key)
            queue.rate_limited(key)
        else:
            queue.forget(key)
            if again is not None:
                queue.add_after(key, again)
        finally:
            queue.done(key)


def delete_options(options: Obj) -> Obj:
    body: Obj = {"kind": "DeleteOptions", "apiVersion": "v1"}
    for k in ("preconditions", "propagationPolicy", "gracePeriodSeconds"):
        if k in options:
            body[k] = options[k]
    return body


async def owners_absent(api: ApiClient, refs: list[Obj]) -> bool:
    """The GC's live check: every named owner is really gone (or replaced by another uid)."""
    for r in refs:
        plural = KIND_PLURALS.get(str(r.get("kind")))
        if plural is None:
            return False  # a kind we cannot look up: never assume it is gone
        ns = "" if plural in ("nodes", "namespaces") else str(r.get("namespace") or "")
        try:
            got = await api.get(plural, str(r.get("name")), namespace=ns)
        except ApiError as e:
            if e.code == 404:
                continue
            raise
        if (got.get("metadata") or {}).get("uid") == r.get("uid"):
            return False
    return True


async def apply_action(api: ApiClient, a: Action, informers: dict[str, Informer] | None = None) -> Obj | None:
    """Make one API call; write the answer through to the matching informer's cache."""
    inf = (informers or {}).get(a.resource)
    out: Obj | None = None
    sub = str(a.options.get("subresource", ""))
    if a.options.get("confirmAbsent") and not await owners_absent(api, list(a.options["confirmAbsent"])):
        return None
    try:
        if a.verb == "create":
            out = await api.create(a.resource, a.body or {}, namespace=a.namespace)
        elif a.verb == "update":
            out = await api.update(a.resource, a.body or {}, subresource=sub)
        elif a.verb == "update_status":
            out = await api.update(a.resource, a.body or {}, subresource="status")
        elif a.verb == "patch":
            out = await api.patch(a.resource, a.name, a.body, namespace=a.namespace, subresource=sub,
                                  patch_type=str(a.options.get("patchType", "application/merge-patch+json")))
        elif a.verb == "delete":
            out = await api.delete(a.resource, a.name, namespace=a.namespace, options=delete_options(a.options))
            m = out.get("metadata") or {}
            still_there = bool(m.get("deletionTimestamp")) and bool(
                m.get("finalizers") or int(m.get("deletionGracePeriodSeconds") or 0) > 0)
            if inf is not None and not still_there:
                old = inf.get(f"{a.namespace}/{a.name}" if a.namespace else a.name)
                if old is not None:
                    inf.observe("DELETED", old)
                return out
        elif a.verb in ("bind", "evict"):
            sub = "binding" if a.verb == "bind" else "eviction"
            return await api.request("POST", resource_path(a.resource, a.namespace, a.name, sub), a.body or {})
        else:
            raise ValueError(f"unknown verb {a.verb}")
    except ApiError as e:
        if a.verb == "delete" and (e.code == 404 or (e.code == 409 and "preconditions" in a.options)):
            return None  # already gone, or a newer object under the same name: nothing to do
        raise
    if inf is not None and out and out.get("metadata"):
        out.setdefault("kind", (a.body or {}).get("kind", ""))
        inf.observe("MODIFIED", out)
    return out


CREATE_BATCH_MAX = 64


async def apply_actions(api: ApiClient, actions: list[Action], informers: dict[str, Informer] | None = None) -> None:
    """Apply in order; a run of creations goes out in slow-start batches (1, 2, 4, ... up to
    CREATE_BATCH_MAX concurrent calls, as Kubernetes' replica controllers do): a failing batch
    stops the run, so a refused template costs one call, a good one is not one round trip per pod."""
    i = 0
    while i < len(actions):
        a = actions[i]
        if a.verb != "create":
            log.debug("%s", a.describe())
            await apply_action(api, a, informers)
            i += 1
            continue
        j = i
        while j < len(actions) and actions[j].verb == "create":
            j += 1
        size = 1
        while i < j:
            batch = actions[i:min(j, i + size)]
            results = await asyncio.gather(*(apply_action(api, b, informers) for b in batch), return_exceptions=True)
            for r in results:
                if isinstance(r, BaseException):
                    raise r
            i += len(batch)
            size = min(size * 2, CREATE_BATCH_MAX)


class LeaderElector:
    """Holds kube-system/<name> Lease while it can; `run(work)` runs `work` only while leading."""

    def __init__(self, api: ApiClient, name: str, identity: str, *, namespace: str = "kube-system",
                 lease_duration: float = 15.0, renew_deadline: float = 10.0, retry_period: float = 2.0,
                 clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.api, self.name, self.identity, self.namespace = api, name, identity, namespace
        self.lease_duration, self.renew_deadline, self.retry_period = lease_duration, renew_deadline, retry_period
        self.clock = clock
        self.leading = False

    async def try_acquire_or_renew(self) -> bool:
        now = self.clock()
        try:
            lease = await self.api.get("leases", self.name, namespace=self.namespace)
        except ApiError as e:
            if e.code != 404:
                raise
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.lease_duration),
                             "acquireTime": micro_timestamp(now), "renewTime": micro_timestamp(now),
                             "leaseTransitions": 0}}
            try:
                await self.api.create("leases", body, namespace=self.namespace)
            except ApiError as e2:
                if e2.code == 409:
                    return False
                raise
            return True
        spec = lease.setdefault("spec", {})
        holder = spec.get("holderIdentity")
        renew = parse_time(spec.get("renewTime"))
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        if holder and holder != self.identity and renew is not None and renew + dt.timedelta(seconds=duration) > now:
            return False
        if holder != self.identity:
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
            spec["acquireTime"] = micro_timestamp(now)
            spec["holderIdentity"] = self.identity
        spec["renewTime"] = micro_timestamp(now)
        spec["leaseDurationSeconds"] = int(self.lease_duration)
        try:
            await self.api.update("leases", lease)
        except ApiError as e:
            if e.code == 409:
                return False
            raise
        return True

    async def run(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        while True:
            try:
                if await self.try_acquire_or_renew():
                    break
            except (ApiError, OSError) as e:
                log.info("leader election %s: %s", self.name, e)
            await asyncio.sleep(self.retry_period)
        self.leading = True
        log.info("%s: became leader of %s", self.identity, self.name)
        task = asyncio.create_task(work())
        last_ok = time.monotonic()
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=self.retry_period)
                if task.done():
                    break
                try:
                    ok = await self.try_acquire_or_renew()
                except (ApiError, OSError):
                    ok = False
                if ok:
                    last_ok = time.monotonic()
                elif time.monotonic() - last_ok > self.renew_deadline:
                    raise RuntimeError(f"{self.identity}: lost the {self.name} lease")
            await task
        finally:
            self.leading = False
            task.cancel()


def seconds_until(when: dt.datetime | None, now: dt.datetime) -> float | None:
    if when is None:
        return None
    return max((when - now).total_seconds(), 0.0) + 0.05

