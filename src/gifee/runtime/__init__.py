"""The container runtime: rkt-style pods with no daemon.

`gifee run` turns an image into a pod: namespaces (mount, PID, UTS, IPC,
network), an overlay root over the image's read-only layers, cgroup limits, and a
network from CNI plugins. The pod's state lives in its directory under DIR/pods
(pods.py); the only process gifee leaves beside a running pod is a small C shim
that records how it ended (shim.c). Modules: spec (options -> PodSpec, no I/O),
pods (state directories and locks), cgroups, network/netns, launch (the launcher),
stage2 (inside the pod), enter, lifecycle (stop/rm/gc), commands (the CLI).
"""
