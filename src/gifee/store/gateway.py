"""HTTP endpoints of the store: /health, /version and /metrics (Prometheus text)."""

from __future__ import annotations

import json

from aiohttp import web

from gifee.store.node import ETCD_VERSION, Store


def metrics_text(store: Store) -> str:
    m = store.metrics
    sm = store.sm
    lines = [
        "# HELP etcd_server_has_leader Whether or not a leader exists. 1 is existence, 0 is not.",
        "# TYPE etcd_server_has_leader gauge",
        "etcd_server_has_leader 1",
        "# HELP etcd_server_is_leader Whether or not this member is a leader.",
        "# TYPE etcd_server_is_leader gauge",
        "etcd_server_is_leader 1",
        "# HELP etcd_server_proposals_committed_total The total number of consensus proposals committed.",
        "# TYPE etcd_server_proposals_committed_total gauge",
        f"etcd_server_proposals_committed_total {sm.applied_index}",
        "# HELP etcd_server_proposals_applied_total The total number of consensus proposals applied.",
        "# TYPE etcd_server_proposals_applied_total gauge",
        f"etcd_server_proposals_applied_total {sm.applied_index}",
        "# HELP etcd_server_proposals_failed_total The total number of failed proposals seen.",
        "# TYPE etcd_server_proposals_failed_total counter",
        f"etcd_server_proposals_failed_total {int(m['proposals_failed'])}",
        "# HELP etcd_mvcc_db_total_size_in_bytes Total size of the underlying database physically allocated in bytes.",
        "# TYPE etcd_mvcc_db_total_size_in_bytes gauge",
        f"etcd_mvcc_db_total_size_in_bytes {store.db_size()}",
        "# HELP etcd_mvcc_db_total_size_in_use_in_bytes Total size of the underlying database logically in use in bytes.",
        "# TYPE etcd_mvcc_db_total_size_in_use_in_bytes gauge",
        f"etcd_mvcc_db_total_size_in_use_in_bytes {store.db_size_in_use()}",
        "# HELP etcd_debugging_mvcc_current_revision The current revision of store.",
        "# TYPE etcd_debugging_mvcc_current_revision gauge",
        f"etcd_debugging_mvcc_current_revision {sm.mvcc.revision}",
        "# HELP etcd_debugging_mvcc_compact_revision The revision of the last compaction in store.",
        "# TYPE etcd_debugging_mvcc_compact_revision gauge",
        f"etcd_debugging_mvcc_compact_revision {sm.mvcc.compact_revision}",
        "# HELP etcd_debugging_mvcc_watcher_total Total number of watchers.",
        "# TYPE etcd_debugging_mvcc_watcher_total gauge",
        f"etcd_debugging_mvcc_watcher_total {len(store.watch_hub)}",
        "# HELP etcd_debugging_lease_granted_total Leases currently granted.",
        "# TYPE etcd_debugging_lease_granted_total gauge",
        f"etcd_debugging_lease_granted_total {len(sm.leases)}",
        "# HELP etcd_disk_wal_fsync_total Number of WAL fsyncs (one per group commit).",
        "# TYPE etcd_disk_wal_fsync_total counter",
        f"etcd_disk_wal_fsync_total {int(m['wal_fsyncs'])}",
        "# HELP etcd_disk_wal_fsync_seconds_total Time spent in WAL fsyncs.",
        "# TYPE etcd_disk_wal_fsync_seconds_total counter",
        f"etcd_disk_wal_fsync_seconds_total {m['wal_fsync_seconds']:.6f}",
    ]
    return "\n".join(lines) + "\n"


def build_app(store: Store) -> web.Application:
    async def health(_: web.Request) -> web.Response:
        ok = not store.sm.alarms
        body = {"health": "true" if ok else "false"}
        if not ok:
            body["reason"] = "ALARM " + ",".join(sorted({str(a) for _, a in store.sm.alarms}))
        return web.json_response(body, status=200 if ok else 503)

    async def version(_: web.Request) -> web.Response:
        return web.Response(
            text=json.dumps({"etcdserver": ETCD_VERSION, "etcdcluster": ETCD_VERSION[:-1] + "0"}),
            content_type="application/json",
        )

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=metrics_text(store), content_type="text/plain", charset="utf-8")

    app = web.Application(client_max_size=2 * 1024 * 1024)
    app.router.add_get("/health", health)
    app.router.add_get("/version", version)
    app.router.add_get("/metrics", metrics)
    return app
