"""The build file: what `gifee image build -f FILE` makes (pure).

Rules: a TOML document with `name` (an image name), `from` ("none" or an image
in the store, whose layers become the base), any number of `[[add]]` tables
(`src` on the host, relative to the build file's directory; `dest` an absolute
path in the image; a directory is added recursively) and an optional `[config]`
table (env, entrypoint, cmd, workdir, user, labels). Unknown keys are errors, so
a misspelt key never silently builds a different image.

Theory of operation: `parse_build_file` takes the TOML text and the build
file's directory and returns a checked `BuildSpec`; it does not look at the
files to add (the builder reports those that are missing).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from gifee.image.errors import BadBuildFile, ImageError
from gifee.image.reference import parse_reference
from gifee.image.safepath import entry_path


@dataclass(frozen=True)
class Add:
    src: str  # host path, absolute
    dest: str  # path in the image, relative to its root (no leading slash)


@dataclass(frozen=True)
class BuildSpec:
    name: str
    base: str | None
    adds: list[Add] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    workdir: str | None = None
    user: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


def _strings(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadBuildFile(f"{where} must be a string or a list of strings")
    return list(value)


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise BadBuildFile(f"{where} must be a non-empty string")
    return value


def _unknown(table: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise BadBuildFile(f"{where}: unknown key(s) {', '.join(extra)} (allowed: {', '.join(sorted(allowed))})")


def image_path(dest: str, where: str) -> str:
    """An absolute path in the image, as a relative path below its root."""
    if not dest.startswith("/"):
        raise BadBuildFile(f"{where}: {dest!r} must be an absolute path in the image")
    try:
        segments = entry_path(dest)
    except ImageError as e:
        raise BadBuildFile(f"{where}: {e}") from None
    if ".." in dest.split("/"):
        raise BadBuildFile(f"{where}: {dest!r} must not contain '..'")
    return "/".join(segments)


def parse_build_file(text: str, directory: str, where: str = "build file") -> BuildSpec:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise BadBuildFile(f"{where}: not valid TOML: {e}") from None
    _unknown(doc, {"name", "from", "add", "config"}, where)
    name = _string(doc.get("name"), f"{where}: name")
    try:
        name = str(parse_reference(name))
        base_text = _string(doc.get("from", "none"), f"{where}: from")
        base = None if base_text == "none" else base_text
        if base is not None and not base.startswith("sha256:"):
            parse_reference(base)
    except ImageError as e:
        raise BadBuildFile(f"{where}: {e}") from None
    adds: list[Add] = []
    raw_adds = doc.get("add", [])
    if not isinstance(raw_adds, list):
        raise BadBuildFile(f"{where}: add must be an array of tables ([[add]])")
    for i, item in enumerate(raw_adds):
        w = f"{where}: add[{i}]"
        if not isinstance(item, dict):
            raise BadBuildFile(f"{w} must be a table")
        _unknown(item, {"src", "dest"}, w)
        src = _string(item.get("src"), f"{w}.src")
        dest = image_path(_string(item.get("dest"), f"{w}.dest"), f"{w}.dest")
        if not dest:
            raise BadBuildFile(f"{w}.dest: cannot replace the image's root directory")
        src_path = PurePosixPath(src) if src.startswith("/") else PurePosixPath(directory) / src
        adds.append(Add(str(src_path), dest))
    config = doc.get("config", {})
    if not isinstance(config, dict):
        raise BadBuildFile(f"{where}: config must be a table")
    _unknown(config, {"env", "entrypoint", "cmd", "workdir", "user", "labels"}, f"{where}: config")
    env = _strings(config.get("env", []), f"{where}: config.env")
    for variable in env:
        if "=" not in variable or variable.startswith("="):
            raise BadBuildFile(f"{where}: config.env entry {variable!r} must be NAME=value")
    labels = config.get("labels", {})
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise BadBuildFile(f"{where}: config.labels must map strings to strings")
    return BuildSpec(
        name=name,
        base=base,
        adds=adds,
        env=env,
        entrypoint=_strings(config["entrypoint"], f"{where}: config.entrypoint") if "entrypoint" in config else None,
        cmd=_strings(config["cmd"], f"{where}: config.cmd") if "cmd" in config else None,
        workdir=_string(config["workdir"], f"{where}: config.workdir") if "workdir" in config else None,
        user=_string(config["user"], f"{where}: config.user") if "user" in config else None,
        labels=dict(labels),
    )
