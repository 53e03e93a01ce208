"""Configuration: frozen, keyword-only dataclasses validated on load.

Each component's dataclass is the single source of truth for its keys. :meth:`ConfigBase.from_dict`
rejects unknown keys (with a suggestion) and wrong types with a :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from glance.exceptions import ConfigError

__all__ = ["ConfigBase", "load_config_file"]

C = TypeVar("C", bound="ConfigBase")


def _check_type(value: Any, tp: Any, where: str) -> Any:
    """Return ``value`` coerced to ``tp`` where lossless (int → float, list → tuple), else raise."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _check_type(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where} must be {tp}; got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where} must be None; got {value!r}")
    if origin is typing.Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{where} must be one of {list(typing.get_args(tp))}; got {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list; got {value!r}")
        args = typing.get_args(tp)
        item = args[0] if args else Any
        return tuple(_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping; got {value!r}")
        args = typing.get_args(tp)
        vt = args[1] if args else Any
        return {str(k): _check_type(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false; got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} must be a number; got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be an integer; got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string; got {value!r}")
    if isinstance(tp, type) and issubclass(tp, ConfigBase):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return tp.from_dict(value, where=where)
        raise ConfigError(f"{where} must be a mapping; got {value!r}")
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConfigBase:
    """Base of every configuration dataclass (frozen, keyword-only, validated)."""

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any], *, where: str | None = None) -> C:
        """Build from a mapping; unknown keys or wrong types raise :class:`ConfigError`."""
        where = where or cls.__name__
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where} must be a mapping; got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        fields = {f.name for f in dataclasses.fields(cls) if f.init}
        kwargs = {}
        for key, value in data.items():
            if key not in fields:
                close = difflib.get_close_matches(str(key), fields, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(
                    f"unknown key {key!r} in {where}{hint} "
                    f"(valid keys: {', '.join(sorted(fields))})"
                )
            kwargs[key] = _check_type(value, hints[key], f"{where}.{key}")
        obj = cls(**kwargs)
        obj.validate()
        return obj

    def validate(self) -> None:
        """Check value ranges; subclasses override and raise :class:`ConfigError`."""

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists) suitable for YAML/JSON."""

        def conv(v: Any) -> Any:
            if isinstance(v, ConfigBase):
                return v.to_dict()
            if isinstance(v, tuple):
                return [conv(x) for x in v]
            if isinstance(v, dict):
                return {k: conv(x) for k, x in v.items()}
            return v

        return {f.name: conv(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self: C, **changes: Any) -> C:
        """Return a copy with ``changes`` applied (validated like :meth:`from_dict`)."""
        merged = {**self.to_dict(), **changes}
        return type(self).from_dict(merged)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) file into a dict."""
    import tomllib

    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        else:
            data = yaml.safe_load(text) or {}
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot parse config ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data
