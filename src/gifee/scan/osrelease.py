"""Which distribution a root holds, from its release files (pure), and the vulnerability
database namespace that goes with it.

Rules:
- `os-release` (freedesktop.org): `KEY=value` lines, values optionally quoted with shell
  quoting ('...' literal, "..." with backslash escapes); ID and VERSION_ID decide.
- Older roots: `/etc/lsb-release` (DISTRIB_ID, DISTRIB_RELEASE), `/etc/debian_version`
  ("7.4", or "bookworm/sid" for testing), `/etc/alpine-release` ("3.11.6"),
  `/etc/redhat-release`-style lines ("CentOS release 6.10 (Final)").
- Namespaces, as scan/vulndb spells them: Debian by major release number ("debian:7"; a
  release without a number is "debian:unstable"), Alpine by major.minor with a v
  ("alpine:v3.18"; development snapshots are "alpine:edge"), Ubuntu by VERSION_ID
  ("ubuntu:22.04"), rpm distributions by ID and major version ("centos:7", "rhel:8").
"""

from __future__ import annotations

import re

from gifee.scan.inventory import Distro

_ESCAPES = re.compile(r"\\(.)")
_REDHAT = re.compile(r"^(?P<name>.*?) (?:Linux )?(?:Server )?release (?P<version>[0-9][0-9.]*)")
_REDHAT_IDS = {"centos": "centos", "red hat enterprise": "rhel", "fedora": "fedora", "rocky": "rocky",
               "almalinux": "almalinux", "oracle": "ol"}


def parse_assignments(text: str) -> dict[str, str]:
    """KEY=value lines; comments, blank and malformed lines are passed over."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.replace("_", "").isalnum():
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        elif len(value) >= 2 and value[0] == value[-1] == '"':
            value = _ESCAPES.sub(r"\1", value[1:-1])
        out[key] = value
    return out


def from_os_release(text: str, path: str) -> Distro | None:
    fields = parse_assignments(text)
    if not fields.get("ID"):
        return None
    return Distro(fields["ID"].lower(), fields.get("VERSION_ID", ""), fields.get("PRETTY_NAME", ""), path)


def from_lsb_release(text: str, path: str) -> Distro | None:
    fields = parse_assignments(text)
    if not fields.get("DISTRIB_ID"):
        return None
    return Distro(fields["DISTRIB_ID"].lower(), fields.get("DISTRIB_RELEASE", ""),
                  fields.get("DISTRIB_DESCRIPTION", ""), path)


def from_debian_version(text: str, path: str) -> Distro | None:
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not line:
        return None
    version = line if line[:1].isdigit() else ""
    return Distro("debian", version, f"Debian {line}", path)


def from_alpine_release(text: str, path: str) -> Distro | None:
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    return Distro("alpine", line, f"Alpine Linux {line}", path) if line[:1].isdigit() else None


def from_redhat_release(text: str, path: str) -> Distro | None:
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    m = _REDHAT.match(line)
    if m is None:
        return None
    lowered = m["name"].lower()
    distro_id = next((v for k, v in _REDHAT_IDS.items() if lowered.startswith(k)), lowered.split()[0])
    return Distro(distro_id, m["version"], line, path)


def _major(version: str) -> str:
    return version.split(".", 1)[0]


def namespace(distro: Distro) -> str | None:
    """The database namespace for a distribution; None when there is no version to go by."""
    version = distro.version_id.strip()
    if distro.id == "debian":
        return f"debian:{_major(version)}" if version[:1].isdigit() else "debian:unstable"
    if distro.id == "alpine":
        parts = version.split(".")
        if len(parts) < 2 or "_" in version or not parts[0].isdigit():
            return "alpine:edge" if version else None
        return f"alpine:v{parts[0]}.{parts[1].split('_')[0]}"
    if not version:
        return None
    if distro.id == "ubuntu":
        return f"ubuntu:{version}"
    return f"{distro.id}:{_major(version)}"
