"""Where the compiled gifee-shim lives: built from shim.c on first use, cached by the
source's hash (so an edited shim.c is rebuilt, never run stale), atomically."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

SOURCE = Path(__file__).with_name("shim.c")


def shim_binary(lib_dir: Path) -> Path:
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    target = lib_dir / f"gifee-shim-{digest}"
    if target.exists():
        return target
    import secrets  # building is rare (once per shim.c version): its imports only then
    import shutil
    import subprocess

    lib_dir.mkdir(parents=True, exist_ok=True)
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("building gifee-shim needs a C compiler (apt-get install gcc)")
    tmp = lib_dir / f".gifee-shim-{digest}.{os.getpid()}.{secrets.token_hex(4)}"  # unique: threads build at once
    for static in (["-static"], []):  # static when libc.a is there: smaller resident size
        result = subprocess.run([compiler, "-O2", "-s", *static, "-o", str(tmp), str(SOURCE)],
                                capture_output=True, text=True)
        if result.returncode == 0:
            break
    else:
        raise RuntimeError(f"building gifee-shim failed:\n{result.stderr}")
    os.rename(tmp, target)
    return target
