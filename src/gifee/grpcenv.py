"""gRPC's C core settings for every gifee process, applied before gRPC loads.

gRPC reads `GRPC_EXPERIMENTS` from the environment once, when its core starts,
so this must run before the first `import grpc` in the process; `gifee`'s
package `__init__` calls `configure()` for that reason. Child processes (the
store's gRPC workers) inherit the setting through the environment.

Why: since grpcio 1.6x a server's listener and connections run on gRPC's
EventEngine, where every incoming call crosses four threads before the
asyncio loop sees it (the poller, an EventEngine worker, the completion
queue's thread, then the loop). With iomgr's listener the thread that polls
the completion queue reads the socket itself. Measured on the bare grpc.aio
server (benchmarks/bare_grpc_server.py, uvloop, one kvbench client): median
put 0.56 -> 0.44 ms and about a quarter less CPU per call; at 64 clients no
change. A client channel the same way (`event_engine_client`): a
sequential grpc.aio client's CPU per call 290-320 -> 230 us. A user who sets
`GRPC_EXPERIMENTS` keeps what they set for the same experiment.
"""

from __future__ import annotations

import os

# Experiments switched off: iomgr's TCP listener (servers) and TCP client (channels).
DISABLED_EXPERIMENTS = ("event_engine_listener", "event_engine_client")


def configure(environ: os._Environ[str] | dict[str, str] = os.environ) -> None:
    """Add gifee's experiment settings to `environ`, keeping any the user set."""
    given = [part.strip() for part in environ.get("GRPC_EXPERIMENTS", "").split(",") if part.strip()]
    named = {part.lstrip("-") for part in given}
    wanted = given + [f"-{name}" for name in DISABLED_EXPERIMENTS if name not in named]
    if wanted:
        environ["GRPC_EXPERIMENTS"] = ",".join(wanted)
