"""The registry: an OCI distribution spec v1.1 server over a content-addressed filesystem store.

Cores (no I/O): `names` (repository, tag and digest grammar), `errors` (the spec's error
codes and JSON body), `ranges` (Range and Content-Range), `manifests` (manifest
validation and what a manifest refers to), `routes` (the /v2 path grammar),
`pagination` (tag lists), `auth` (credentials, rights, scopes, tokens).
Shells: `storage` (files), `server` (aiohttp), `gc` (mark and sweep), `commands` (CLI).
"""
