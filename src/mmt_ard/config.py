"""Typed, nested configs: dataclass defaults in code, YAML presets, ``a.b=c`` overrides.

Every command's config is a dataclass tree. :func:`load_config` starts from the dataclass
defaults, applies a YAML preset (optional) and then ``key.path=value`` overrides, checking every
key and coercing every value to the field's declared type, so a typo is an error, not a silently
ignored setting. :func:`save_config` writes the resolved config beside a run.

Floats accept fractions (``attack.eps=2/255``), which is how attack budgets are usually written.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mmt_ard.errors import ConfigError

C = TypeVar("C")


def expand_env(text: str) -> str:
    """``$VAR`` / ``${VAR}`` from the environment in a path or spec; an unset variable is an error."""
    expanded = os.path.expandvars(text)
    missing = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expanded)
    if missing:
        raise ConfigError(f"environment variable {missing[0]} used in {text!r} is not set; export it first")
    return expanded


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain nested dict of a dataclass config (tuples become lists)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        out[f.name] = _plain(getattr(cfg, f.name))
    return out


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def from_dict(cls: type[C], data: dict[str, Any], where: str = "") -> C:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section {where or '<root>'!r} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    moved = getattr(cls, "MOVED_KEYS", {})
    if unknown and unknown[0] in moved:
        raise ConfigError(
            f"config key {_join(where, unknown[0])!r} has moved: write {_join(where, moved[unknown[0]])!r} instead"
        )
    if unknown:
        close = difflib.get_close_matches(unknown[0], names, n=1)
        hint = f" Did you mean {_join(where, close[0])!r}?" if close else ""
        raise ConfigError(
            f"unknown config key {_join(where, unknown[0])!r}; valid keys here: {', '.join(sorted(names))}.{hint}"
        )
    kwargs = {k: _coerce(hints[k], v, _join(where, k)) for k, v in data.items()}
    return cls(**kwargs)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"bad value for {where!r}: {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where} must be one of {list(args)}, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        inner = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(inner, v, f"{where}.{k}") for k, v in value.items()}
    if origin in (list, tuple):
        items = value if isinstance(value, (list, tuple)) else _split_list(value, where)
        inner = args[0] if args else Any
        coerced = [_coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(items)]
        return tuple(coerced) if origin is tuple else coerced
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value):
            return value
        return from_dict(tp, value, where)
    if tp is Any:
        return value
    return _scalar(tp, value, where)


def _split_list(value: Any, where: str) -> list[Any]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    raise ConfigError(f"{where} must be a list, got {value!r}")


def _scalar(tp: Any, value: Any, where: str) -> Any:
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
                return value.lower() in ("true", "yes", "on", "1")
            raise ValueError
        if tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            number = float(Fraction(value.strip())) if isinstance(value, str) and "/" in value else float(value)
            if not math.isfinite(number):
                raise ValueError
            return number
        if tp is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
    except (ValueError, TypeError, ZeroDivisionError, OverflowError):
        kind = "finite number" if tp is float else tp.__name__
        raise ConfigError(f"{where} must be a {kind}, got {value!r}") from None
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=c"`` -> (["a", "b"], parsed c); the value is read as YAML (``none`` -> None)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value, e.g. optim.lr=1e-4")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=c`` overrides to a nested dict (in place) and return it."""
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for depth, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise ConfigError(f"override {text!r}: {where} is a value, not a section; write {where}=VALUE")
            node = child
        node[path[-1]] = value
    return data


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def _nest(path: list[str], value: Any) -> dict[str, Any]:
    return {path[0]: _nest(path[1:], value) if len(path) > 1 else value}


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path``, with a clear error for a missing or malformed file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist; pass an existing YAML file")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top level")
    return data


def load_config(
    cls: type[C],
    preset: str | Path | dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    base: C | None = None,
    values: dict[str, Any] | None = None,
) -> C:
    """Defaults of ``cls`` (or ``base``) <- preset <- ``values`` (``{"a.b": raw value}``, as command-line
    flags give them, never parsed as YAML) <- ``a.b=c`` overrides."""
    data = to_dict(base if base is not None else cls())
    if preset is not None:
        _deep_merge(data, preset if isinstance(preset, dict) else read_yaml(preset))
    for key, value in (values or {}).items():
        _deep_merge(data, _nest(key.split("."), value))
    apply_overrides(data, list(overrides or []))
    return from_dict(cls, data)


def save_config(cfg: Any, path: str | Path, extra: dict[str, Any] | None = None) -> None:
    """Write the resolved config (plus ``extra`` keys such as the code version) as YAML."""
    data = to_dict(cfg)
    if extra:
        data = {**extra, "config": data}
    from mmt_ard.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
