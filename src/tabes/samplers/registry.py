"""The sampler registry: samplers (and searches, :mod:`tabes.search`) by name, and spec parsing.

A spec is ``"name"`` or ``"name:key=value,key=value"``; values are coerced to the types of the
sampler's config dataclass, which validates them.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from tabes.samplers.base import Sampler

_REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: make a sampler (a class with ``step``) or a search over whole decodes
    (a class with ``run``, see :mod:`tabes.search`) available under ``cls.name``."""
    if cls.name in _REGISTRY:
        raise ValueError(f"sampler {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def available() -> dict[str, type]:
    """Registered sampler classes by name, sorted."""
    return dict(sorted(_REGISTRY.items()))


def _coerce(cls: type, key: str, text: str) -> Any:
    hints = typing.get_type_hints(cls.Config)
    if key not in hints:
        raise ValueError(f"sampler {cls.name!r} has no option {key!r}; options: {sorted(hints) or 'none'}")
    kind = hints[key]
    if kind is bool:
        if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise ValueError(f"option {key}={text!r} of sampler {cls.name!r} must be true or false")
        return text.lower() in ("1", "true", "yes")
    try:
        return kind(text) if kind in (int, float, str) else text
    except ValueError:
        raise ValueError(f"option {key}={text!r} of sampler {cls.name!r} must be {kind.__name__}") from None


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``"name:key=value,key=value"`` into the name and raw option strings."""
    name, _, rest = spec.partition(":")
    options = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"sampler option {item!r} in {spec!r} must look like key=value")
        options[key.strip()] = value.strip()
    return name.strip(), options


def get_sampler(spec: str, **options: Any) -> Sampler:
    """Build a sampler from ``"name"`` or ``"name:key=value,..."`` plus keyword options.

    Raises ``ValueError`` naming an unknown sampler, an unknown option or a bad value.
    """
    name, raw = parse_spec(spec)
    if name not in _REGISTRY:
        raise ValueError(f"unknown sampler {name!r}; available: {', '.join(available())}")
    cls = _REGISTRY[name]
    values = {k: _coerce(cls, k, v) for k, v in raw.items()}
    values.update(options)
    try:
        config = cls.Config(**values)
    except TypeError as err:
        raise ValueError(f"sampler {name!r}: {err}") from None
    return cls(config)


def describe(name: str) -> list[tuple[str, str, Any]]:
    """(option, type, default) for each option of a registered sampler."""
    cls = _REGISTRY[name]
    hints = typing.get_type_hints(cls.Config)
    return [(f.name, getattr(hints[f.name], "__name__", str(hints[f.name])), f.default) for f in dataclasses.fields(cls.Config)]


def spec_label(rec: dict[str, Any]) -> str:
    """A short label for a record with ``sampler`` and ``options``: the name plus its non-default options."""
    from tabes.samplers.base import config_fields

    default = config_fields(get_sampler(rec["sampler"]).config)
    diff = {k: v for k, v in rec["options"].items() if default.get(k) != v}
    return rec["sampler"] + (":" + ",".join(f"{k}={v}" for k, v in sorted(diff.items())) if diff else "")
