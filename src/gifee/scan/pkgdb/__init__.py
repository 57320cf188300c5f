"""Package-database parsers: bytes or text in, `Package` records and warnings out, no I/O.

- `dpkg`: `var/lib/dpkg/status` and distroless `status.d/*` paragraphs.
- `apk`: Alpine's `lib/apk/db/installed`.
- `rpmheader`: one rpm header blob (the documented index/data-store structure).
- `rpmdb`: the SQLite rpm database (`rpmdb.sqlite`), opened in memory from its bytes.
- `python`: `*.dist-info/METADATA`, `*.egg-info/PKG-INFO` and single-file `.egg-info`.
- `npm`: `package.json` of a package under `node_modules`.

Every parser returns `(packages, warnings)` and never raises on bad input.
"""
