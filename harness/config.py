"""YAML configuration with line numbers, quantities with units, typed sections.

Plans and rigs are YAML. Every mapping loaded here remembers the file and the
line of each key, so a typo is reported as ``plan.yaml:12: unknown field
'pwr' ...``. Sections are described by dataclasses; :func:`build` checks a
mapping against one (unknown and missing fields, types, units) and constructs
it.

Units travel in field names (``power_dbm``, ``freq_hz``). In YAML a value may
be a bare number in the field's unit (``power_dbm: -10``) or a string with its
unit (``power: -10 dBm``, ``frequency: 2.14 GHz``); a unit that does not fit
the field is an error.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml


class ConfigError(Exception):
    """A malformed plan, rig or other configuration file."""

    def __init__(self, message: str, file: str | Path | None = None, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        return where + self.message


# --------------------------------------------------------------------------- YAML
class LineMap(dict):
    """A dict that knows its file and the line of itself and of each key."""

    file: str | None = None
    line: int | None = None
    key_lines: dict

    def line_of(self, key: str) -> int | None:
        return self.key_lines.get(key, self.line)


class LineList(list):
    file: str | None = None
    line: int | None = None
    item_lines: list


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineMap:
    out = LineMap()
    out.file = loader.name
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)):
            raise ConfigError(f"mapping key {key!r} is not a plain value", loader.name, key_node.start_mark.line + 1)
        if key in out:
            raise ConfigError(f"duplicate key {key!r}", loader.name, key_node.start_mark.line + 1)
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = key_node.start_mark.line + 1
    return out


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    out = LineList(loader.construct_object(child, deep=True) for child in node.value)
    out.file = loader.name
    out.line = node.start_mark.line + 1
    out.item_lines = [child.start_mark.line + 1 for child in node.value]
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load_yaml(path: str | Path) -> LineMap:
    """Load a YAML file whose top level is a mapping, keeping line numbers."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", path) from None
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", path) from None
    return loads_yaml(text, str(path))


def loads_yaml(text: str, name: str = "<string>") -> LineMap:
    loader = _Loader(text)
    loader.name = name
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise ConfigError(f"YAML syntax error: {e.problem or e}", name, mark.line + 1 if mark else None) from None
    finally:
        loader.dispose()
    if not isinstance(data, LineMap):
        raise ConfigError("expected a mapping at the top level", name, 1)
    return data


# ----------------------------------------------------------------------- units
#: field-name suffix -> canonical unit (longest suffixes first)
UNIT_SUFFIXES: list[tuple[str, str]] = [
    ("_db_per_db", "dB/dB"), ("_dbm_hz", "dBm/Hz"), ("_dbfs_hz", "dBFS/Hz"), ("_dbc_hz", "dBc/Hz"),
    ("_db_per_ghz", "dB/GHz"), ("_dbfs", "dBFS"),
    ("_dbm", "dBm"), ("_dbc", "dBc"), ("_db", "dB"), ("_hz", "Hz"), ("_s", "s"),
    ("_pct", "%"), ("_ppm", "ppm"), ("_deg", "deg"), ("_rad", "rad"), ("_k", "K"),
]

_PREFIX = {"G": 1e9, "M": 1e6, "k": 1e3, "K": 1e3, "": 1.0, "m": 1e-3, "u": 1e-6, "µ": 1e-6, "n": 1e-9,
           "p": 1e-12}
_SCALED_UNITS = {"Hz": "Hz", "S/s": "Hz", "sps": "Hz", "s": "s"}
_QTY_RE = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(.*?)\s*$")


def unit_of(field_name: str) -> str:
    """The unit a field carries by its name's suffix ('' when dimensionless)."""
    for suffix, unit in UNIT_SUFFIXES:
        if field_name.endswith(suffix):
            return unit
    return ""


def base_name(field_name: str) -> str:
    """``power_dbm`` -> ``power``: the name a plan may use together with a unit string."""
    for suffix, _ in UNIT_SUFFIXES:
        if field_name.endswith(suffix) and len(field_name) > len(suffix):
            return field_name[: -len(suffix)]
    return field_name


def parse_quantity(value: Any, unit: str) -> float:
    """Parse a number or a ``"<number> <unit>"`` string into ``unit``; raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number in {unit or 'no unit'}, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a number{' in ' + unit if unit else ''}, got {type(value).__name__}")
    m = _QTY_RE.match(value)
    if not m:
        raise ValueError(f"cannot read {value!r} as a quantity{' in ' + unit if unit else ''}")
    number, text = float(m.group(1)), m.group(2)
    if text == "" or text == unit:
        return number
    if unit in ("Hz", "s"):
        for u in ("Hz", "S/s", "sps", "s") if unit == "Hz" else ("s",):
            if text.endswith(u):
                prefix = text[: -len(u)]
                if prefix in _PREFIX and _SCALED_UNITS[u] == unit and not (u == "s" and unit == "Hz"):
                    return number * _PREFIX[prefix]
    if unit == "%" and text in ("pct", "percent"):
        return number
    raise ValueError(f"unit {text!r} in {value!r} does not fit here; expected {unit or 'a plain number'}")


def format_quantity(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} {unit}".strip()
    if unit == "Hz":
        for p, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(value) >= scale:
                return f"{value / scale:.6g} {p}Hz"
    if unit == "s":
        for p, scale in (("", 1.0), ("m", 1e-3), ("µ", 1e-6), ("n", 1e-9)):
            if abs(value) >= scale:
                return f"{value / scale:.4g} {p}s"
    return f"{value:.4g} {unit}".strip()


# ------------------------------------------------------------ typed sections
def doc(text: str, **kw) -> dict:
    """Field metadata: ``field(default=..., metadata=doc("what it is"))``."""
    return {"doc": text, **kw}


def _is_optional(tp) -> tuple[bool, Any]:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) < len(get_args(tp)):
            return True, args[0] if len(args) == 1 else Union[tuple(args)]
    return False, tp


class Section:
    """Where a mapping came from, for error messages (``what`` names it for people)."""

    def __init__(self, node: Any, what: str, file: str | None = None, line: int | None = None):
        self.node = node
        self.what = what
        self.file = getattr(node, "file", None) or file
        self.line = getattr(node, "line", None) or line

    def error(self, message: str, key: str | None = None) -> ConfigError:
        line = self.node.line_of(key) if key is not None and isinstance(self.node, LineMap) else self.line
        return ConfigError(f"{self.what}: {message}", self.file, line)


def field_key_map(cls) -> dict[str, dataclasses.Field]:
    """YAML keys accepted for ``cls``: each field's full name and, for unit fields, its base name."""
    keys: dict[str, dataclasses.Field] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        keys[f.name] = f
        b = base_name(f.name)
        if b != f.name:
            keys.setdefault(b, f)
    return keys


def build(cls, node: Any, what: str, file: str | None = None, line: int | None = None,
          ignore: tuple[str, ...] = ()):
    """Check ``node`` (a mapping from YAML) against dataclass ``cls`` and construct it.

    ``ignore`` lists keys handled by the caller. Raises :class:`ConfigError`
    naming the file, line and field for unknown, missing or malformed fields.
    """
    sec = Section(node, what, file, line)
    if node is None:
        node = LineMap()
        node.key_lines = {}
    if not isinstance(node, dict):
        raise sec.error(f"expected a mapping of fields, got {type(node).__name__}")
    keys = field_key_map(cls)
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, raw in node.items():
        if key in ignore:
            continue
        f = keys.get(key)
        if f is None:
            known = sorted(f.name for f in dataclasses.fields(cls) if f.init)
            raise sec.error(f"unknown field {key!r}; known fields: {', '.join(known)}", key)
        if f.name in values:
            raise sec.error(f"field {f.name!r} given twice (as {key!r})", key)
        values[f.name] = convert(hints[f.name], raw, f.name, sec, key)
    for f in dataclasses.fields(cls):
        if f.init and f.name not in values and f.default is dataclasses.MISSING \
                and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            unit = unit_of(f.name)
            hint = f" (in {unit})" if unit else ""
            raise sec.error(f"missing field {f.name!r}{hint}")
    try:
        return cls(**values)
    except (ValueError, TypeError) as e:
        raise sec.error(str(e)) from None


def convert(tp: Any, raw: Any, name: str, sec: Section, key: str | None = None) -> Any:
    """Convert one YAML value to type ``tp`` (see :func:`build`)."""
    optional, tp = _is_optional(tp)
    if raw is None:
        if optional:
            return None
        raise sec.error(f"field {name!r} needs a value", key)
    origin = get_origin(tp)
    try:
        if hasattr(tp, "from_config"):  # a type that parses its own section (e.g. a stimulus)
            line = sec.node.line_of(key) if isinstance(sec.node, LineMap) and key is not None else sec.line
            return tp.from_config(raw, f"{sec.what}.{name}", sec.file, line)
        if dataclasses.is_dataclass(tp):
            return build(tp, raw, f"{sec.what}.{name}", sec.file, sec.node.line_of(key)
                         if isinstance(sec.node, LineMap) and key is not None else sec.line)
        if tp is float:
            return parse_quantity(raw, unit_of(name))
        if tp is int:
            if isinstance(raw, bool) or not isinstance(raw, int):
                raise ValueError(f"expected a whole number, got {raw!r}")
            return raw
        if tp is bool:
            if not isinstance(raw, bool):
                raise ValueError(f"expected true or false, got {raw!r}")
            return raw
        if tp is str:
            if not isinstance(raw, (str, int, float)) or isinstance(raw, bool):
                raise ValueError(f"expected text, got {raw!r}")
            return str(raw)
        if origin is Literal:
            if raw not in get_args(tp):
                raise ValueError(f"{raw!r} is not one of {', '.join(map(repr, get_args(tp)))}")
            return raw
        if origin in (list, tuple):
            (item_tp, *_rest) = get_args(tp) or (Any,)
            if not isinstance(raw, list):
                raw = [raw] if origin is list and not isinstance(raw, dict) else raw
            if not isinstance(raw, list):
                raise ValueError(f"expected a list, got {type(raw).__name__}")
            lines = getattr(raw, "item_lines", None)
            items = []
            for i, item in enumerate(raw):
                if dataclasses.is_dataclass(item_tp):
                    items.append(build(item_tp, item, f"{sec.what}.{name}[{i}]", sec.file,
                                       lines[i] if lines else sec.line))
                else:
                    items.append(convert(item_tp, item, name, sec, key))
            return items if origin is list else tuple(items)
        if origin is dict or tp is dict:
            if not isinstance(raw, dict):
                raise ValueError(f"expected a mapping, got {type(raw).__name__}")
            return raw
        if tp is Any:
            return raw
    except ValueError as e:
        raise sec.error(f"field {name!r}: {e}", key) from None
    raise TypeError(f"unsupported field type {tp!r} for {name}")


def describe_fields(cls) -> list[tuple[str, str, str, str]]:
    """(name, unit, default, doc) per field, for ``--help`` style listings."""
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = repr(f.default_factory())  # type: ignore[misc]
        else:
            default = "required"
        out.append((f.name, unit_of(f.name), default, f.metadata.get("doc", "")))
    return out
