"""A small asyncio client for the API server, for controllers and tests.

    async with ApiClient("http://127.0.0.1:8080") as api:
        pods = await api.list("pods", namespace="default", label_selector="app=web")
        await api.patch("deployments", "web", {"status": {"replicas": 2}}, namespace="default",
                        subresource="status")
        async for event in api.watch("pods", resource_version=pods["metadata"]["resourceVersion"]):
            ...  # {"type": "ADDED"|"MODIFIED"|"DELETED"|"BOOKMARK"|"ERROR", "object": {...}}

Resources are named by plural (or plural.group); paths come from the registry.
Failures raise ApiError with the server's Status (code, reason, message).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import aiohttp

from gifee.api import jsoncodec, resources
from gifee.api.errors import ApiError
from gifee.api.http11 import Http11Pool

Obj = dict[str, Any]
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"


def resource_path(plural: str, namespace: str = "", name: str = "", subresource: str = "") -> str:
    res = resources.by_plural(plural)
    if res is None:
        raise ValueError(f"unknown resource {plural!r}")
    base = f"/apis/{res.group}/{res.version}" if res.group else "/api/v1"
    path = f"{base}/namespaces/{namespace}/{res.plural}" if res.namespaced and namespace else f"{base}/{res.plural}"
    if name:
        path += f"/{name}"
        if subresource:
            path += f"/{subresource}"
    return path


class ApiClient:
    def __init__(self, server: str, *, timeout: float = 30.0) -> None:
        self.server = server.rstrip("/")
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=None,
                                                                             connect=timeout))
        self.timeout = timeout
        # single requests to a plain-HTTP server go through a lighter keep-alive pool than
        # aiohttp's client (http11.py); watches and https stay with aiohttp
        self._pool = Http11Pool(self.server) if self.server.startswith("http://") else None

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        await self._session.close()

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def request(self, method: str, path: str, body: Any = None, *, params: dict[str, str] | None = None,
                      content_type: str = "application/json") -> Obj:
        data = None if body is None else jsoncodec.dumps(body)
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        if self._pool is not None:
            async with asyncio.timeout(self.timeout):
                status, _, raw = await self._pool.request(method, path, data, headers, params)
        else:
            async with self._session.request(method, self.server + path, data=data, params=params, headers=headers,
                                             timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                raw = await resp.read()
                status = resp.status
        try:
            out = jsoncodec.loads(raw) if raw else {}
        except ValueError:
            out = {"message": raw.decode(errors="replace")}
        if status >= 400:
            raise ApiError(status, str(out.get("reason", "Unknown")), str(out.get("message", "")),
                           out.get("details"))
        return out if isinstance(out, dict) else {"value": out}

    async def get(self, plural: str, name: str, *, namespace: str = "", subresource: str = "",
                  resource_version: str = "") -> Obj:
        """resource_version "0": any version will do (the API server may answer from its cache)."""
        params = {"resourceVersion": resource_version} if resource_version else None
        return await self.request("GET", resource_path(plural, namespace, name, subresource), params=params)

    async def list(self, plural: str, *, namespace: str = "", label_selector: str = "", field_selector: str = "",
                   limit: int = 0, continue_token: str = "") -> Obj:
        params = {k: v for k, v in (("labelSelector", label_selector), ("fieldSelector", field_selector),
                                    ("limit", str(limit) if limit else ""), ("continue", continue_token)) if v}
        return await self.request("GET", resource_path(plural, namespace), params=params)

    async def create(self, plural: str, obj: Obj, *, namespace: str = "") -> Obj:
        namespace = namespace or obj.get("metadata", {}).get("namespace", "")
        return await self.request("POST", resource_path(plural, namespace), obj)

    async def update(self, plural: str, obj: Obj, *, subresource: str = "") -> Obj:
        meta = obj["metadata"]
        return await self.request("PUT", resource_path(plural, meta.get("namespace", ""), meta["name"], subresource),
                                  obj)

    async def patch(self, plural: str, name: str, body: Any, *, namespace: str = "", subresource: str = "",
                    patch_type: str = MERGE) -> Obj:
        return await self.request("PATCH", resource_path(plural, namespace, name, subresource), body,
                                  content_type=patch_type)

    async def delete(self, plural: str, name: str, *, namespace: str = "", options: Obj | None = None) -> Obj:
        return await self.request("DELETE", resource_path(plural, namespace, name), options or {})

    async def watch(self, plural: str, *, namespace: str = "", resource_version: str = "", label_selector: str = "",
                    field_selector: str = "", timeout_seconds: int = 0, bookmarks: bool = True) -> AsyncIterator[Obj]:
        params = {"watch": "1", "allowWatchBookmarks": "true" if bookmarks else "false"}
        for k, v in (("resourceVersion", resource_version), ("labelSelector", label_selector),
                     ("fieldSelector", field_selector), ("timeoutSeconds", str(timeout_seconds or ""))):
            if v:
                params[k] = v
        async with self._session.get(self.server + resource_path(plural, namespace), params=params) as resp:
            if resp.status >= 400:
                out = await resp.json(content_type=None)
                raise ApiError(resp.status, out.get("reason", ""), out.get("message", ""), out.get("details"))
            async for line in resp.content:
                if line.strip():
                    yield jsoncodec.loads(line)
