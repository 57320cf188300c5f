"""gifee agent: the node agent (the kubelet's job).

    gifee --dir DIR agent --master http://API:8080 [--hostname-override NAME] [--node-ip IP]
          [--port 10250] [--insecure-options=image] [--insecure-registry] [--backoff-base 10]
          [--backoff-max 300] [--lease-interval 10] [--node-status-update-frequency 10]
          [--sync-frequency 1] [--volume-refresh 10] [--max-pods 110] [--node-labels k=v,...]
          [--cluster-dns 10.96.0.10] [--cluster-domain cluster.local]

What it does: registers its Node (capacity/allocatable: CPUs, memory, pods 110;
InternalIP and Hostname addresses; Ready and pressure conditions; the daemon
endpoint port), renews a Lease in kube-node-lease, watches the pods bound to it
(spec.nodeName) and runs each as runtime pods: a sandbox (busybox `sleep`, image
gifee.local/pause:1 built into the store on first start; the pod's network on the
node's bridge, or the host's with hostNetwork) plus one runtime pod per container
joined to it with --net=pod:UUID. It writes pod status (phase, conditions,
podIP, hostIP, startTime, init and app containerStatuses) through the status
subresource, restarts containers by restartPolicy with back-off, runs startup,
liveness and readiness probes (httpGet, tcpSocket, exec), terminates pods
gracefully (preStop exec, SIGTERM, grace period, SIGKILL) and then deletes them,
records Events, and serves logs and exec on its port for the API server
(nodeproxy.py there) to proxy.

Modules:
- core.py     pure: plans (what to start/kill/terminate/finalize), back-off,
              probe bookkeeping, pod status and conditions.
- specs.py    pure: container -> runtime options (command/args, env, envFrom,
              downward API, limits, capabilities), volume plans.
- runtime.py  thin shell over gifee.runtime (in-process Launcher on one priority
              launch thread, observe DIR/pods, stop/remove, images, state file).
- agent.py    the asyncio shell: node, lease, watch, reconcile loop, probes,
              status writes, events, volume refresh, recovery.
- enter.py    commands in running containers (exec, exec probes, preStop) as
              `gifee enter` runs them, with pipes or a terminal.
- server.py   HTTP: /containerLogs, /exec (WebSocket v5/v4.channel.k8s.io), /pods.

State: DIR/agent/state.json (pod uid -> sandbox and container attempts, restart
counts, last states), DIR/agent/pods/<uid>/volumes/<name> (emptyDir, configMap,
secret), DIR/agent/launched/<uuid>.json (a launch not yet in the state file).
A restarted agent adopts the runtime pods its state file names and removes
runtime pods launched but never recorded.

DNS: with --cluster-dns, ClusterFirst pods get the cluster nameservers, the
search path <ns>.svc.<domain> svc.<domain> <domain> and ndots:5 (specs.dns_settings);
Default (and no --cluster-dns) gives the host's resolv.conf; None gives spec.dnsConfig.

Not done: resource requests without limits set nothing in cgroups; no
port-forward or attach; no projected/downwardAPI volumes; a sandbox that dies
restarts the containers but not the init containers.
"""
