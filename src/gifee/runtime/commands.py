"""`gifee run`, `list`, `status`, `logs`, `enter`, `stop`, `rm`, `gc`: pods without a daemon.

Flags as rkt has them where rkt had them (`--net`, `--cpu`, `--memory`,
`--interactive`, `--insecure-options=image`, `--uuid-file-save`, `gc --grace-period`,
`stop --force`), and the issue's forms for the rest. Imports stay lazy so that
`gifee run` starts quickly.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

_SUB = argparse._SubParsersAction


def add_parsers(sub: _SUB[argparse.ArgumentParser]) -> None:
    options = run_options(sub._parser_class)  # gifee's parser class, as its subcommands have
    p = sub.add_parser("run", help="run an image as a pod", parents=[options],
                       usage="gifee run IMAGE [options] [-- ARGS...]")
    p.add_argument("image")
    # Options may follow the image (rkt's order); they are parsed again from here in cmd_run.
    p.add_argument("args", nargs=argparse.REMAINDER, help="-- followed by the command's arguments")
    # exit_at_once: the process ends as soon as the pod has (no interpreter teardown; see cli.main)
    p.set_defaults(run=cmd_run, run_options=options, exit_at_once=True)

    p = sub.add_parser("list", help="list pods")
    p.add_argument("--full", action="store_true", help="full UUIDs and image digests")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("--no-legend", action="store_true")
    p.set_defaults(run=cmd_list)

    p = sub.add_parser("status", help="show a pod's state and exit status")
    p.add_argument("uuid")
    p.add_argument("--wait", action="store_true", help="wait until the pod has exited")
    p.add_argument("--wait-timeout", type=float, default=None, help="seconds to wait at most")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(run=cmd_status)

    p = sub.add_parser("logs", help="print a pod's output")
    p.add_argument("uuid")
    p.add_argument("--follow", "-f", action="store_true")
    p.set_defaults(run=cmd_logs)

    p = sub.add_parser("enter", help="run a command inside a running pod", usage="gifee enter UUID [-- CMD...]")
    p.add_argument("uuid")
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(run=cmd_enter)

    p = sub.add_parser("stop", help="stop running pods (SIGTERM, then SIGKILL after the grace period)")
    p.add_argument("uuids", nargs="+")
    p.add_argument("--force", action="store_true", help="SIGKILL at once")
    p.add_argument("--grace-period", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL")
    p.set_defaults(run=cmd_stop)

    p = sub.add_parser("rm", help="remove exited pods")
    p.add_argument("uuids", nargs="+")
    p.set_defaults(run=cmd_rm)

    p = sub.add_parser("gc", help="collect exited and abandoned pods")
    p.add_argument("--grace-period", default="30m", help="how long exited pods stay listed (e.g. 0s, 10m)")
    p.set_defaults(run=cmd_gc)


def run_options(parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser) -> argparse.ArgumentParser:
    p = parser_class(add_help=False, prog="gifee run")
    p.add_argument("--cpu", help="CPU limit, e.g. 750m or 1.5")
    p.add_argument("--cpu-request", help="CPU weight as a request, e.g. 250m (cpu.shares; not a cap)")
    p.add_argument("--memory", help="memory limit, e.g. 128M or 1Gi")
    p.add_argument("--pids", type=int, help="limit on the number of processes")
    p.add_argument("--net", default="default",
                   help="host, default (own namespace on gifee's bridge), none, or pod:UUID (join that pod's "
                        "network, UTS and IPC namespaces, as containers of one Kubernetes pod do)")
    p.add_argument("--port", action="append", default=[], help="HOST:POD[/udp] port forwarding (--net=default)")
    p.add_argument("--volume", action="append", default=[], help="HOST:POD[:ro] bind mount")
    p.add_argument("--env", "--set-env", action="append", default=[], help="NAME=VALUE")
    p.add_argument("--hostname", help="the pod's host name (default: gifee-<uuid prefix>)")
    p.add_argument("--dns", action="append", default=[], help="name server for the pod's resolv.conf (repeatable)")
    p.add_argument("--dns-search", action="append", default=[], help="search domain for resolv.conf (repeatable)")
    p.add_argument("--dns-opt", action="append", default=[], help="resolv.conf option, e.g. ndots:5 (repeatable)")
    p.add_argument("--hosts-entry", action="append", default=[], help="ADDRESS=NAME[,NAME...] line for /etc/hosts")
    p.add_argument("--readonly-root", action="store_true", help="mount the pod's root read-only")
    p.add_argument("--restart", default="no", metavar="POLICY",
                   help="no, always, or on-failure[:N]: run the command again when it ends (always) or fails, "
                        "with a back-off from 100 ms to 10 s; restarts show in gifee status")
    p.add_argument("--interactive", action="store_true", help="attach the terminal to the pod's stdin/stdout")
    p.add_argument("--private-users", action="store_true",
                   help="run the pod in a user namespace: its root is an unprivileged host uid range")
    p.add_argument("--detach", "-d", action="store_true", help="start the pod and return; print its UUID")
    p.add_argument("--insecure-options", default="", help="comma-separated checks to skip: image (signature)")
    p.add_argument("--uuid-file-save", help="write the pod's UUID to this file")
    p.add_argument("--fail-on-severity", metavar="LEVEL",
                   help="refuse the image if the scanner finds vulnerabilities of this severity or worse "
                        "(unknown, negligible, low, medium, high, critical; needs DIR/vulndb.sqlite)")
    return p


def split_run_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """Options given after the image are parsed into `args`; returns the command's arguments
    (what follows `--`)."""
    rest = list(args.args)
    if "--" in rest:
        cut = rest.index("--")
        options, command = rest[:cut], rest[cut + 1:]
    elif rest and rest[0].startswith("-"):
        options, command = rest, []
    else:  # argparse has already taken the `--` that came straight after the image
        options, command = [], rest
    parser.parse_args(options, namespace=args)
    return command


def _fail(message: str) -> int:
    print(f"gifee: {message}", file=sys.stderr)
    return 1


def _launcher(args: argparse.Namespace) -> Any:
    from gifee.runtime.launch import Launcher

    return Launcher(Path(args.dir))


def cmd_run(args: argparse.Namespace) -> int:
    from gifee.image.store import ImageStore
    from gifee.runtime.launch import LaunchError
    from gifee.runtime.spec import SpecError, make_spec

    extra = split_run_arguments(args.run_options, args)
    if args.interactive and args.detach:
        return _fail("--interactive and --detach exclude each other")
    insecure = {o.strip() for o in args.insecure_options.split(",") if o.strip()}
    unknown = insecure - {"image", "all"}
    if unknown:
        return _fail(f"--insecure-options: unknown option(s) {', '.join(sorted(unknown))}")
    data_dir = Path(args.dir)
    try:
        store = ImageStore(data_dir / "images")
        image = store.resolve(args.image)
        if not insecure & {"image", "all"}:
            from gifee.image.trust import TrustStore

            TrustStore(data_dir / "trust").check(store, image)
        store.verify(image)
        if args.fail_on_severity:
            from gifee.scan.policy import check_image

            check_image(data_dir, store, image, args.fail_on_severity)
        layers = store.layer_dirs(image)
        launcher = _launcher(args)
        hostname = args.hostname or _joined_hostname(launcher, args.net) or f"gifee-{os.urandom(4).hex()}"
        spec = make_spec(
            image_name=image.name, image_digest=image.manifest_digest, image_config=image.config,
            hostname=hostname, args=extra, env=args.env, cpu=args.cpu, memory=args.memory, pids=args.pids,
            net=args.net, ports=args.port, volumes=args.volume, readonly_root=args.readonly_root,
            interactive=args.interactive, private_users=args.private_users, cpu_request=args.cpu_request,
            dns=args.dns, dns_search=args.dns_search, dns_opt=args.dns_opt, hosts_entries=args.hosts_entry,
            restart=args.restart,
        )

        def started(pod: Any) -> None:
            if args.uuid_file_save:
                Path(args.uuid_file_save).write_text(pod.uuid + "\n")
            if args.detach:
                print(pod.uuid, flush=True)

        _, code = launcher.launch(spec, layers, detach=args.detach, on_started=started)
    except SpecError as e:
        return _fail(str(e))
    except LaunchError as e:
        return _fail(f"the pod did not start: {e}")
    except Exception as e:  # image, trust and network errors carry their own messages
        return _fail(str(e) or type(e).__name__)
    return 0 if code is None else code


def _joined_hostname(launcher: Any, net: str) -> str | None:
    """A pod joined to another (--net=pod:UUID) shares its UTS namespace, so its name."""
    from gifee.runtime.spec import joined_pod

    target = joined_pod(net)
    if not target:
        return None
    try:
        record = launcher.pods.find(target).read_json("pod.json") or {}
    except Exception:
        return None  # the launcher reports a missing pod with its own message
    name = (record.get("spec") or {}).get("hostname")
    return str(name) if name else None


def _age(ts: float | None) -> str:
    if not ts:
        return ""
    seconds = max(0, int(time.time() - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def cmd_list(args: argparse.Namespace) -> int:
    import json

    from gifee.runtime.launch import describe

    pods = [describe(pod) for pod in _launcher(args).pods.all()]
    if args.format == "json":
        print(json.dumps(pods, indent=2, sort_keys=True))
        return 0
    rows = []
    for info in pods:
        net = (info.get("networks") or {}).get("default")
        rows.append([
            info["uuid"] if args.full else info["uuid"][:8],
            info["image"],
            info["image_digest"] if args.full else info["image_digest"][7:19],
            info["state"],
            _age(info.get("created")),
            f"default:ip4={net['ip']}" if net else "",
        ])
    header = ["UUID", "IMAGE", "DIGEST", "STATE", "CREATED", "NETWORKS"]
    table = rows if args.no_legend else [header, *rows]
    widths = [max((len(r[i]) for r in table), default=0) for i in range(len(header))]
    for row in table:
        print("\t".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from gifee.runtime.launch import describe, dumps
    from gifee.runtime.pods import PodNotFound

    launcher = _launcher(args)
    try:
        pod = launcher.pods.find(args.uuid)
        if args.wait and not pod.wait_unlocked(args.wait_timeout):
            return _fail(f"pod {pod.uuid} still running after {args.wait_timeout} s")
        info = describe(launcher.pods.find(pod.uuid))
    except PodNotFound as e:
        return _fail(str(e))
    if args.format == "json":
        print(dumps(info))
        return 0
    print(f"state={info['state']}")
    for key in ("created", "started", "finished"):
        if info.get(key):
            print(f"{key}={time.strftime('%Y-%m-%d %H:%M:%S %z', time.localtime(info[key]))}")
    net = (info.get("networks") or {}).get("default")
    if net:
        print(f"networks=default:ip4={net['ip']}")
    if info.get("pid") and info["state"] == "running":
        print(f"pid={info['pid']}")
    print(f"exited={'true' if info['exited'] else 'false'}")
    if "restarts" in info:
        print(f"restarts={info['restarts']}")
    if "exit_code" in info:
        print(f"app-exit-code={info['exit_code']}")
        if info.get("signal"):
            print(f"app-signal={info['signal']}")
        print(f"oom-killed={'true' if info['oom_killed'] else 'false'}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from gifee.runtime.pods import PodNotFound

    launcher = _launcher(args)
    try:
        pod = launcher.pods.find(args.uuid)
    except PodNotFound as e:
        return _fail(str(e))
    log = pod.path / "log"
    if not log.exists():
        return _fail(f"pod {pod.uuid} has no log (it ran with --interactive)")
    out = sys.stdout.buffer
    with open(log, "rb") as f:
        while True:
            chunk = f.read(65536)
            if chunk:
                out.write(chunk)
                continue
            out.flush()
            if not args.follow or not pod.is_locked():
                # one more read: the last output may have landed just before the pod exited
                rest = f.read()
                out.write(rest)
                out.flush()
                return 0
            time.sleep(0.2)


def cmd_enter(args: argparse.Namespace) -> int:
    from gifee.runtime.enter import enter
    from gifee.runtime.pods import PodNotFound
    from gifee.runtime.spec import PodSpec

    launcher = _launcher(args)
    try:
        pod = launcher.pods.find(args.uuid)
    except PodNotFound as e:
        return _fail(str(e))
    if pod.state != "running" or pod.pid is None:
        return _fail(f"pod {pod.uuid} is not running")
    record = pod.read_json("pod.json") or {}
    spec = PodSpec.from_json(record["spec"])
    argv = list(args.args)
    if argv and argv[0] == "--":
        argv = argv[1:]
    try:
        return enter(pod.uuid, pod.pid, spec, argv or ["/bin/sh"], interactive=sys.stdin.isatty())
    except OSError as e:
        return _fail(f"cannot enter pod {pod.uuid}: {e}")


def cmd_stop(args: argparse.Namespace) -> int:
    from gifee.runtime.lifecycle import stop_pod
    from gifee.runtime.pods import PodNotFound

    launcher = _launcher(args)
    status = 0
    for prefix in args.uuids:
        try:
            pod = launcher.pods.find(prefix)
            stop_pod(pod, force=args.force, grace=args.grace_period)
            print(pod.uuid)
        except PodNotFound as e:
            status = _fail(str(e))
    return status


def cmd_rm(args: argparse.Namespace) -> int:
    from gifee.runtime.lifecycle import remove_pod
    from gifee.runtime.pods import PodError

    launcher = _launcher(args)
    status = 0
    for prefix in args.uuids:
        try:
            pod = launcher.pods.find(prefix)
            remove_pod(launcher, pod)
            print(f"{pod.uuid}")
        except PodError as e:
            status = _fail(str(e))
    return status


def parse_duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip()
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def cmd_gc(args: argparse.Namespace) -> int:
    from gifee.runtime.lifecycle import collect

    try:
        grace = parse_duration(args.grace_period)
    except ValueError:
        return _fail(f"--grace-period={args.grace_period}: expected a duration such as 0s, 10m, 1h")
    for line in collect(_launcher(args), grace):
        print(line)
    return 0
