"""Typed settings: dataclass fields that carry their own help text and bounds.

Owns the generic machinery behind every tessy config class, and knows nothing of any one
class's fields. A field is declared with `option(default, help, min=, max=, gt=, choices=, ...)`;
its bounds live in the field's metadata. The same dataclass then serves a YAML file and the
command line (TRL's pattern): `add_dataclass_arguments` makes one flag per field (nested
dataclasses as `--teacher.model`), and `config_from_sources` merges defaults, the YAML file and
the flags given (flags win).

Promises:

- bounds are checked in ONE place, `validate`, whatever the value's source (YAML, flag or
  Python), and show in `--help` (`describe_bounds`);
- a bad key or value raises one `ConfigError` naming every offending field, where its value came
  from, and its allowed type and range, before a command has written anything;
- harmless conversions happen in place (3 -> 3.0 for a float field, a JSON text for a
  `JsonMapping`); nothing else is changed;
- rules across fields are a dataclass's own `cross_checks()` -> [(field, problem)], run by
  `validate` once the fields themselves are fine;
- each field says whether it shapes the data (`option(..., shapes_data=...)`), and
  `data_fields` keeps exactly those: the part of a config that a run's fingerprint covers.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any

#: Constraint keys `option` accepts (all optional): see `describe_bounds`.
BOUND_KEYS = ("min", "max", "gt", "choices", "aliases", "ignore_case", "values")

#: `shapes_data=WHEN_SET`: the field shapes the data only when set away from its default (a
#: field added after runs existed: runs that leave it unset keep their fingerprint).
WHEN_SET = "when set"


def option(default: Any, help: str, shapes_data: Any = True, **bounds: Any) -> Any:
    """A dataclass field with help text and optional bounds, checked by `validate`:

    ``min`` / ``max`` (inclusive), ``gt`` (exclusive lower bound), ``choices`` (allowed strings,
    plus ``aliases`` also accepted and ``ignore_case``), ``values`` (type of a mapping's values).

    ``shapes_data`` says whether the field's value shapes the data written (see `data_fields`):
    True, False (paths, transport, speed), `WHEN_SET`, or a test of the owning config
    (``lambda config: ...``) for a field that only some settings read.
    """
    unknown = set(bounds) - set(BOUND_KEYS)
    if unknown:
        raise TypeError(f"option(): unknown bounds {sorted(unknown)}")
    metadata = {"help": help, "shapes_data": shapes_data, **bounds}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


class JsonMapping(dict):
    """A mapping setting: a YAML mapping in the config file, a JSON object on the command line."""

    def __init__(self, value: Any = (), /, **kwargs: Any):
        if isinstance(value, str):
            import json

            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"expected a JSON object: {exc}") from None
            if not isinstance(value, dict):
                raise ValueError("expected a JSON object")
        super().__init__(value, **kwargs)


class ConfigError(ValueError):
    """A config file or flag has a bad key or value."""


# ---------------------------------------------------------------------------- validation


def _field_type(cls: type, f: dataclasses.Field) -> Any:
    return typing.get_type_hints(cls)[f.name]


def _is_nested(tp: Any) -> bool:
    return dataclasses.is_dataclass(tp)


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def describe_bounds(meta: typing.Mapping[str, Any]) -> str:
    """The allowed range of a field in words ('at least 1', 'one of: a, b'); '' when unbounded."""
    if meta.get("choices"):
        return "one of: " + ", ".join(meta["choices"])
    lo, hi, gt = meta.get("min"), meta.get("max"), meta.get("gt")
    if gt is not None and hi is not None:
        return f"greater than {_number(gt)} and at most {_number(hi)}"
    if gt is not None:
        return f"greater than {_number(gt)}"
    if lo is not None and hi is not None:
        return f"from {_number(lo)} to {_number(hi)}"
    if lo is not None:
        return f"at least {_number(lo)}"
    if hi is not None:
        return f"at most {_number(hi)}"
    return ""


def _type_words(tp: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        tp, "a mapping (a YAML mapping, or a JSON object on the command line)" if tp is JsonMapping
        else getattr(tp, "__name__", str(tp)))


def _show(value: Any) -> str:
    """A value as the user wrote it (YAML spelling for null and booleans)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_type(value: Any, tp: Any, meta: typing.Mapping[str, Any]) -> Any:
    """The value converted to `tp` (an int 3 for a float field, a JSON text for a mapping), or
    raise ValueError saying what was expected."""
    if isinstance(tp, types.UnionType):  # `X | None`: None is allowed, anything else must be an X
        if value is None:
            return None
        tp = next(t for t in typing.get_args(tp) if t is not type(None))
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ValueError(f"expected a finite number, got {_show(value)}")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is JsonMapping:
        if isinstance(value, (dict, str)):
            try:
                mapping = JsonMapping(value)
            except ValueError:
                mapping = None
            if mapping is not None:
                bad_key = next((k for k in mapping if not isinstance(k, str)), None)
                if bad_key is not None:
                    raise ValueError(f"keys must be strings, got {_show(bad_key)}")
                want = meta.get("values")
                bad = next((k for k, v in mapping.items() if want and not isinstance(v, want)), None)
                if bad is not None:
                    raise ValueError(f"the value of {bad!r} must be {_type_words(want)}, got {_show(mapping[bad])}")
                return mapping
    else:
        return value
    what = _type_words(tp)
    bounds = describe_bounds(meta)
    if bounds and not meta.get("choices"):
        what += f" {bounds}"
    elif meta.get("choices"):
        what = bounds
    raise ValueError(f"expected {what}, got {_show(value)}")


def _check_bounds(value: Any, meta: typing.Mapping[str, Any], shown: Any = None) -> str | None:
    """A problem with an already typed value (`shown` as the user wrote it), or None."""
    shown = value if shown is None else shown
    choices = meta.get("choices")
    if choices:
        allowed = tuple(choices) + tuple(meta.get("aliases", ()))
        key = value.strip().lower() if meta.get("ignore_case") else value
        return None if key in allowed else f"expected one of: {', '.join(choices)}; got {_show(shown)}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    lo, hi, gt = meta.get("min"), meta.get("max"), meta.get("gt")
    if (lo is not None and value < lo) or (hi is not None and value > hi) or (gt is not None and value <= gt):
        kind = "an integer" if isinstance(value, int) else "a number"
        return f"expected {kind} {describe_bounds(meta)}, got {_show(shown)}"
    return None


def validate(config: Any, sources: typing.Mapping[str, str] | None = None) -> Any:
    """Check every field of `config` (recursively) against its type and bounds, and the class's
    `cross_checks`; convert values in place where harmless (3 -> 3.0 for a float). Raise one
    `ConfigError` listing every problem as ``where: field: problem``; return `config` when fine.

    `sources` maps a dotted field name to where its value came from (a YAML path or a flag)."""
    problems: list[str] = []
    sources = sources or {}

    def label(name: str) -> str:  # '--teacher.k', 'run.yaml: teacher.k' or 'teacher.k'
        origin = sources.get(name, "")
        return origin if origin.startswith("--") else f"{origin}: {name}" if origin else name

    def walk(obj: Any, prefix: str) -> None:
        cls = type(obj)
        for f in dataclasses.fields(cls):
            name = prefix + f.name
            tp = _field_type(cls, f)
            value = getattr(obj, f.name)
            if _is_nested(tp):
                if isinstance(value, tp):
                    walk(value, name + ".")
                else:
                    problems.append(f"{label(name)}: expected a mapping of {tp.__name__} settings")
                continue
            try:
                typed = _check_type(value, tp, f.metadata)
            except ValueError as exc:
                problems.append(f"{label(name)}: {exc}")
                continue
            setattr(obj, f.name, typed)
            problem = _check_bounds(typed, f.metadata, shown=value)
            if problem:
                problems.append(f"{label(name)}: {problem}")
        if not problems and hasattr(obj, "cross_checks"):
            for key, problem in obj.cross_checks():
                problems.append(f"{label(prefix + key)}: {problem}")

    walk(config, "")
    if problems:
        if len(problems) == 1:
            raise ConfigError(f"bad setting: {problems[0]}")
        raise ConfigError(f"{len(problems)} bad settings:\n  " + "\n  ".join(problems))
    return config


# ---------------------------------------------------------------------------- data fields


def data_fields(config: Any) -> dict[str, Any]:
    """`dataclasses.asdict(config)` keeping only the fields that shape the data, by each field's
    ``shapes_data`` metadata (True when absent); nested configs are filtered the same way."""
    return _shaping(config, dataclasses.asdict(config))


def _shaping(config: Any, values: dict[str, Any]) -> dict[str, Any]:
    for f in dataclasses.fields(config):
        shapes = f.metadata.get("shapes_data", True)
        if shapes == WHEN_SET:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            shapes = values[f.name] != default
        elif callable(shapes):
            shapes = shapes(config)
        if not shapes:
            del values[f.name]
        elif dataclasses.is_dataclass(getattr(config, f.name)):
            _shaping(getattr(config, f.name), values[f.name])
    return values


# ---------------------------------------------------------------------------- sources


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """Add one flag per field of `cls` (recursively for nested configs). Defaults are left unset
    so that only flags actually given override the YAML file; types and bounds are checked by
    `validate`, except that argparse already refuses a non-number for a number flag."""
    for f in dataclasses.fields(cls):
        tp = _field_type(cls, f)
        name = f"{prefix}{f.name}"
        if _is_nested(tp):
            add_dataclass_arguments(parser, tp, prefix=f"{name}.")
            continue
        flag = "--" + name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        bounds = describe_bounds(f.metadata)
        help_text = f"{f.metadata.get('help', '')} (default: {default!r}{'; ' + bounds if bounds else ''})"
        help_text = help_text.replace("%", "%%")
        if tp is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif tp is JsonMapping:  # parsed by validate, which names the field when the JSON is bad
            parser.add_argument(flag, dest=name, type=str, default=None, help=help_text, metavar="JSON")
        else:
            parser.add_argument(flag, dest=name, type=tp, default=None, help=help_text, metavar=tp.__name__.upper())


def _apply(obj: Any, values: dict[str, Any], where: str, sources: dict[str, str], origin: str,
           prefix: str = "") -> None:
    """Set the given values (raw: `validate` checks them) and note where each came from."""
    cls = type(obj)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in values.items():
        attr = key.replace("-", "_")
        if attr not in fields:
            raise ConfigError(f"{where}: unknown key {key!r}; known keys: {', '.join(sorted(fields))}")
        tp = _field_type(cls, fields[attr])
        name = prefix + attr
        if _is_nested(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {key!r} must be a mapping of {tp.__name__} settings, got {_show(value)}")
            _apply(getattr(obj, attr), value, f"{where}.{key}", sources, origin, name + ".")
            continue
        setattr(obj, attr, value)
        sources[name] = origin or "--" + name.replace("_", "-")


def config_from_sources(cls: type, yaml_path: str | None = None, flags: dict[str, Any] | None = None) -> Any:
    """Defaults, then the YAML file, then flags given on the command line (dotted names); then
    `validate` (ConfigError naming the field, its source and the allowed range)."""
    config = cls()
    sources: dict[str, str] = {}
    if yaml_path:
        import yaml

        path = Path(yaml_path)
        if not path.is_file():
            raise ConfigError(f"config file {yaml_path} does not exist" if not path.exists()
                              else f"config file {yaml_path} is not a file")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{yaml_path}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{yaml_path}: the top level must be a mapping of settings")
        _apply(config, data, yaml_path, sources, origin=yaml_path)
    nested: dict[str, Any] = {}
    for dotted, value in (flags or {}).items():
        if value is None:
            continue
        target = nested
        *parents, leaf = dotted.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    _apply(config, nested, "command line", sources, origin="")
    return validate(config, sources)
