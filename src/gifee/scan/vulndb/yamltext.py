"""YAML to plain Python data, for the loaders whose upstream data is YAML (Alpine secdb, the
PyPA advisory database). Uses PyYAML's safe loader, the C one when present (the PyPA data is
thousands of files); PyYAML is imported here only, so the rest of the scanner works without it."""

from __future__ import annotations

from typing import Any


class YAMLUnavailable(RuntimeError):
    pass


class YAMLError(ValueError):
    pass


def load_yaml(text: str) -> Any:
    """The document in `text`; YAMLError (with the parser's message) when it is not YAML."""
    try:
        import yaml
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise YAMLUnavailable("reading YAML advisory data needs PyYAML (pip install pyyaml)") from e
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as e:
        raise YAMLError(" ".join(str(e).split())) from e
