"""`gifee image ...` and `gifee trust`: the image part's subcommands.

Imports here stay light (argparse only); the work is imported inside each command.
Every command turns an ImageError (or an OS error on a user-given path) into one
line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gifee.image.imagecopy import Transport
    from gifee.image.progress import Progress
    from gifee.image.store import ImageStore

Run = Callable[[argparse.Namespace], int]


def _handled(label: str, func: Run) -> Run:
    def run(args: argparse.Namespace) -> int:
        from gifee.image.errors import ImageError

        try:
            return func(args)
        except ImageError as e:
            print(f"gifee {label}: {e}", file=sys.stderr)
        except OSError as e:
            print(f"gifee {label}: {e.filename or ''}: {e.strerror}", file=sys.stderr)
        return 1

    return run


def _store(args: argparse.Namespace) -> ImageStore:
    from gifee.image.store import ImageStore

    return ImageStore(Path(args.dir) / "images")


def _list_arg(value: str) -> list[str]:
    """A JSON list of strings, or one string."""
    if value.startswith("["):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as e:
            raise argparse.ArgumentTypeError(f"not a JSON list: {e}") from None
        if not isinstance(parsed, list) or not all(isinstance(v, str) for v in parsed):
            raise argparse.ArgumentTypeError("must be a JSON list of strings")
        return parsed
    return [value]


def _label(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{value!r} is not KEY=VALUE")
    return key, val


def run_build(args: argparse.Namespace) -> int:
    from gifee.image.build import build_from_file, build_from_rootfs
    from gifee.image.errors import ImageError

    store = _store(args)
    if args.file:
        if args.rootfs:
            raise ImageError("give either -f BUILDFILE or --rootfs DIR, not both")
        image = build_from_file(store, Path(args.file), args.compression, args.timestamp)
    elif args.rootfs:
        if not args.name:
            raise ImageError("--rootfs needs --name")
        image = build_from_rootfs(
            store, Path(args.rootfs), args.name, args.compression, args.timestamp,
            entrypoint=args.entrypoint, cmd=args.cmd, env=args.env, workdir=args.workdir,
            labels=dict(args.label),
        )
    else:
        raise ImageError("give -f BUILDFILE or --rootfs DIR")
    print(f"{image.name} {image.manifest_digest}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    images = _store(args).images()
    rows = [("NAME", "DIGEST", "SIZE", "CREATED")]
    for image in sorted(images, key=lambda i: i.name):
        rows.append((image.name, image.manifest_digest[7:19], _human(image.size), image.created))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}")
    return 0


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(size)


def run_inspect(args: argparse.Namespace) -> int:
    from gifee.image.trust import signatures_of

    store = _store(args)
    image = store.resolve(args.ref)
    out = {
        "name": image.name,
        "names": store.names_of(image.manifest_digest),
        "digest": image.manifest_digest,
        "size": image.size,
        "manifest": image.manifest,
        "config": image.config,
        "signatures": [keyid for keyid, _ in signatures_of(store, image)],
    }
    print(json.dumps(out, indent=2))
    return 0


def run_rm(args: argparse.Namespace) -> int:
    store = _store(args)
    for ref in args.refs:
        for name in store.remove(ref):
            print(f"removed {name}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from gifee.image.layout import export_images

    store = _store(args)
    images = [store.resolve(ref) for ref in args.refs]
    export_images(store, images, Path(args.target))
    return 0


def run_import(args: argparse.Namespace) -> int:
    from gifee.image.layout import import_layout

    for image in import_layout(_store(args), Path(args.source), args.name):
        print(f"{image.name} {image.manifest_digest}")
    return 0


def run_keygen(args: argparse.Namespace) -> int:
    import os

    from gifee.image import signing
    from gifee.image.errors import ImageError

    private, public = signing.generate()
    key_path, pub_path = Path(f"{args.out}.key"), Path(f"{args.out}.pub")
    for p in (key_path, pub_path):
        if p.exists():
            raise ImageError(f"{p}: already exists")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    pub_path.write_bytes(public)
    key = signing.load_public(public, str(pub_path))
    print(f"{key_path} {pub_path} fingerprint {signing.fingerprint(key)}")
    return 0


def run_sign(args: argparse.Namespace) -> int:
    from gifee.image import signing
    from gifee.image.trust import add_signature

    store = _store(args)
    image = store.resolve(args.ref)
    key = signing.load_private(Path(args.key).read_bytes(), args.key)
    digest = add_signature(store, image, key)
    print(f"signed {image.name} {image.manifest_digest} with {signing.fingerprint(key.public_key())}: {digest}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from gifee.image.trust import TrustStore

    store = _store(args)
    image = store.resolve(args.ref)
    store.verify(image)
    keyid = TrustStore(Path(args.dir) / "trust").check(store, image)
    print(f"{image.name} {image.manifest_digest}: intact, signed by trusted key {keyid}")
    return 0


def run_trust(args: argparse.Namespace) -> int:
    from gifee.image.errors import ImageError
    from gifee.image.trust import TrustStore

    trust = TrustStore(Path(args.dir) / "trust")
    if args.list:
        for key in trust.keys():
            print(f"{key.prefix or '(root)'}  {key.fingerprint}  {key.path}")
        return 0
    if not args.keyfile or (args.prefix is None) == (not args.root):
        raise ImageError("give --prefix PREFIX KEYFILE, --root KEYFILE or --list")
    added = trust.add(Path(args.keyfile).read_bytes(), None if args.root else args.prefix, args.keyfile)
    print(f"trusted {added.fingerprint} for {added.prefix or 'all images (root key)'}: {added.path}")
    return 0


def _tls_verify(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{value!r} is not true or false")


def _insecure_image(args: argparse.Namespace) -> bool:
    from gifee.image.errors import ImageError

    options = {o.strip() for o in args.insecure_options.split(",") if o.strip()}
    if options - {"image", "all"}:
        raise ImageError(f"--insecure-options: unknown option(s) {', '.join(sorted(options - {'image', 'all'}))}")
    return bool(options)


def _transport(args: argparse.Namespace) -> Transport:
    from gifee.image.imagecopy import Transport

    return Transport(insecure=args.insecure or args.tls_verify is False, force_tls=args.tls_verify is True,
                     creds=args.creds, data_dir=Path(args.dir))


def _progress(args: argparse.Namespace) -> Progress:
    from gifee.image.progress import Progress

    return Progress(quiet=args.quiet)


def _summary(args: argparse.Namespace, progress: Progress, verb: str) -> None:
    if not args.quiet:
        print(f"{verb} {progress.summary()}", file=sys.stderr)


def run_pull(args: argparse.Namespace) -> int:
    from gifee.image.imagecopy import pull_scope
    from gifee.image.pull import pull
    from gifee.image.remoteref import parse_remote

    ref = parse_remote(args.ref)
    name = None
    if args.name:
        from gifee.image.reference import parse_reference

        name = str(parse_reference(args.name))
    trust_root = None if _insecure_image(args) else Path(args.dir) / "trust"
    progress = _progress(args)
    image = pull(_transport(args).client(ref, pull_scope(ref)), ref, _store(args), progress, name, trust_root)
    _summary(args, progress, "pulled")
    print(f"{image.name} {image.manifest_digest}")
    return 0


def run_push(args: argparse.Namespace) -> int:
    from gifee.image.imagecopy import mount_source, push_scopes
    from gifee.image.push import push
    from gifee.image.remoteref import parse_remote

    ref = parse_remote(args.ref)
    store = _store(args)
    image = store.resolve(args.name or ref.local_name)
    mount = mount_source(image.name, ref)
    progress = _progress(args)
    digest = push(_transport(args).client(ref, *push_scopes(ref, mount)), image, ref, store, progress, mount)
    _summary(args, progress, "pushed")
    print(f"{ref.registry}/{ref.repository}@{digest}")
    return 0


def run_copy(args: argparse.Namespace) -> int:
    from gifee.image.imagecopy import copy
    from gifee.image.remoteref import parse_endpoint

    src, dst = parse_endpoint(args.source), parse_endpoint(args.destination)
    trust_root = None if _insecure_image(args) else Path(args.dir) / "trust"
    progress = _progress(args)
    digest = copy(src, dst, _store(args), _transport(args), progress, trust_root)
    _summary(args, progress, "copied")
    print(digest)
    return 0


def _remote_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--insecure", action="store_true", help="plain HTTP (loopback registries use it anyway)")
    p.add_argument("--tls-verify", type=_tls_verify, default=None, metavar="BOOL",
                   help="true: HTTPS with a verified certificate even on loopback (CAs from the system or "
                        "$SSL_CERT_FILE); false: plain HTTP, as --insecure")
    p.add_argument("--creds", metavar="USER:PASS",
                   help="registry credentials (else $GIFEE_REGISTRY_AUTH, else DIR/auth.json)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    image = sub.add_parser("image", help="build, list, inspect, export, import, sign, push and pull OCI images")
    isub = image.add_subparsers(dest="image_command", required=True)

    p = isub.add_parser("build", help="build an image from a build file (TOML) or a root directory")
    p.add_argument("-f", "--file", help="the build file")
    p.add_argument("--rootfs", help="a directory holding the whole root file system")
    p.add_argument("--name", help="the image's name (with --rootfs)")
    p.add_argument("--entrypoint", type=_list_arg, help='a path or a JSON list, e.g. \'["/bin/sh","-c"]\'')
    p.add_argument("--cmd", type=_list_arg, help="a string or a JSON list")
    p.add_argument("--env", action="append", default=[], help="NAME=value (repeatable)")
    p.add_argument("--workdir")
    p.add_argument("--label", type=_label, action="append", default=[], help="KEY=VALUE (repeatable)")
    p.add_argument("--compression", choices=["none", "gzip", "zstd"], default="gzip")
    p.add_argument("--timestamp", type=int, default=None,
                   help="seconds since the epoch for every file and the created time (reproducible builds)")
    p.set_defaults(run=_handled("image build", run_build))

    p = isub.add_parser("list", help="list images")
    p.set_defaults(run=_handled("image list", run_list))

    p = isub.add_parser("inspect", help="print an image's manifest, config and signatures as JSON")
    p.add_argument("ref", help="name[:tag] or sha256:<digest prefix>")
    p.set_defaults(run=_handled("image inspect", run_inspect))

    p = isub.add_parser("rm", help="remove images (by name, or every name of a digest)")
    p.add_argument("refs", nargs="+")
    p.set_defaults(run=_handled("image rm", run_rm))

    p = isub.add_parser("export", help="write images and their signatures as an OCI layout (DIR, or FILE.tar)")
    p.add_argument("refs", nargs="+", metavar="REF")
    p.add_argument("target", metavar="FILE|DIR")
    p.set_defaults(run=_handled("image export", run_export))

    p = isub.add_parser("import", help="import images from an OCI layout (directory or tar archive)")
    p.add_argument("source", metavar="FILE|DIR")
    p.add_argument("--name", help="name for the image (needed when the layout names it only by a tag)")
    p.set_defaults(run=_handled("image import", run_import))

    p = isub.add_parser("keygen", help="make an Ed25519 key pair: PATH.key (private) and PATH.pub")
    p.add_argument("--out", required=True, metavar="PATH")
    p.set_defaults(run=_handled("image keygen", run_keygen))

    p = isub.add_parser("sign", help="sign an image's manifest digest; the signature is stored with the image")
    p.add_argument("ref")
    p.add_argument("--key", required=True, help="PEM private key (from gifee image keygen)")
    p.set_defaults(run=_handled("image sign", run_sign))

    p = isub.add_parser("verify", help="check every blob of an image and that a trusted key signed it")
    p.add_argument("ref")
    p.set_defaults(run=_handled("image verify", run_verify))

    p = isub.add_parser("pull", help="pull an image and its signatures from a registry (REGISTRY/REPO[:TAG|@DIGEST])")
    p.add_argument("ref")
    p.add_argument("--name", help="store it under this name (default: the reference)")
    p.add_argument("--insecure-options", default="", help="image: do not require a trusted signature")
    _remote_options(p)
    p.set_defaults(run=_handled("image pull", run_pull))

    p = isub.add_parser("push", help="push a local image and its signatures to a registry")
    p.add_argument("ref", help="REGISTRY/REPO[:TAG]")
    p.add_argument("--name", help="the local image to push (default: REF)")
    _remote_options(p)
    p.set_defaults(run=_handled("image push", run_push))

    p = isub.add_parser("copy", help="copy an image: docker://REF, oci:DIR[:TAG], local:NAME (or NAME)")
    p.add_argument("source")
    p.add_argument("destination")
    p.add_argument("--insecure-options", default="", help="image: into the local store without a trusted signature")
    _remote_options(p)
    p.set_defaults(run=_handled("image copy", run_copy))

    p = sub.add_parser("trust", help="trust a public key for images whose names start with a prefix (like rkt trust)")
    p.add_argument("--prefix", help="e.g. example.com/app (covers example.com/app/...)")
    p.add_argument("--root", action="store_true", help="trust the key for every image")
    p.add_argument("--list", action="store_true", help="list trusted keys")
    p.add_argument("keyfile", nargs="?", help="PEM public key")
    p.set_defaults(run=_handled("trust", run_trust))
