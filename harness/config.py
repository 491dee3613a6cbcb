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

Input is untrusted: only regular files up to :data:`MAX_FILE_BYTES` are read,
as UTF-8 plain text; YAML aliases, anchors and exotic tags are refused and
nesting is bounded; every float must be finite and within its unit's physical
range (:func:`check_quantity`); messages quote at most an :func:`excerpt` of a
value. Every rejection is a :class:`ConfigError` naming the file and line.
"""

from __future__ import annotations

import codecs
import dataclasses
import functools
import math
import os
import re
import stat
import types
import typing
import unicodedata
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml


# ----------------------------------------------------------------------- limits
#: largest plan or rig file read (bytes): a hand-written plan is a few kB
MAX_FILE_BYTES = 1 << 20
#: deepest nesting of mappings and lists (a plan needs about 5)
MAX_DEPTH = 32
#: most YAML values (scalars, lists, mappings) in one file: a shipped plan has a few hundred; the bound keeps
#: the parse of a hostile file short (pure-Python YAML reads about 100 000 values a second)
MAX_NODES = 10000
#: longest excerpt of an offending value quoted in a message
EXCERPT_CHARS = 60
#: longest message a ConfigError prints (a safety net; messages quote excerpts anyway)
MAX_MESSAGE_CHARS = 400
#: longest name (plan, step, rig, ...) and other one-line text; longest description
MAX_NAME_CHARS = 100
MAX_TEXT_CHARS = 200
MAX_DESCRIPTION_CHARS = 4000
#: most items in any list field (specific fields allow far fewer)
MAX_LIST_ITEMS = 1000
#: longest capture (and waveform period) in samples
MAX_SAMPLES = 1 << 24
#: longest settling wait before a capture (s)
MAX_SETTLE_S = 10.0
#: longest delay of a cable, attenuator or DUT (s): 200 km of cable; a simulated bench feeds that much lead-in
MAX_DELAY_S = 1e-3


def excerpt(value: Any, limit: int = EXCERPT_CHARS, quote: bool = True) -> str:
    """``repr(value)`` (``quote=False``: a string as it is) cut to ``limit`` characters with an ellipsis:
    what a message may quote of an input."""
    if isinstance(value, str) and len(value) > limit:
        value = value[: limit + 1]  # repr of a megabyte string costs a megabyte
    text = repr(value) if quote or not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 1] + "…"


_CONTROL_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` with line breaks and other control characters escaped (a message is one line), cut to
    ``limit`` characters with an ellipsis."""
    text = _CONTROL_RE.sub(lambda m: repr(m.group())[1:-1], text.replace("\n", "\\n").replace("\r", "\\r")
                           .replace("\t", "\\t"))
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


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
            where = one_line(self.file) + (f":{self.line}" if self.line else "") + ": "
        return where + one_line(self.message, MAX_MESSAGE_CHARS)


def fail_closed(what: str):
    """Decorator for a loader ``fn(path)`` that raises only :class:`ConfigError`: any other exception (a bug
    some input trips) refuses the file as an internal error, exit 2 and nothing run, instead of a traceback."""

    def deco(fn):
        @functools.wraps(fn)
        def loader(path, *args, **kwargs):
            try:
                return fn(path, *args, **kwargs)
            except ConfigError:
                raise
            except Exception as e:  # noqa: BLE001 - fail closed
                raise ConfigError(f"internal error while checking this {what} ({type(e).__name__}: "
                                  f"{excerpt(str(e), quote=False)}); nothing was run; please report it", path) from e

        return loader

    return deco


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


#: explicit YAML tags a plan or rig may carry (``!!str 0001``); others (``!!binary``, ``!!set``, ``!foo``) are refused
_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map")}


class _Loader(yaml.SafeLoader):
    """Safe YAML with line numbers, no aliases or anchors, bounded nesting and plain tags only.

    Aliases are refused rather than capped: plans and rigs never need them, a
    shared node would be edited in two places at once (the plan loader renames
    keys in place), line numbers of an aliased value point at the anchor, and
    an alias bomb (billion laughs) cannot grow with none allowed.
    """

    depth = 0
    nodes = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        line = event.start_mark.line + 1 if event.start_mark else None
        if isinstance(event, yaml.AliasEvent):
            raise ConfigError(f"YAML alias *{excerpt(event.anchor, quote=False)} is not allowed: plans and rigs "
                              f"do not use anchors and aliases; write the value out", self.name, line)
        if getattr(event, "anchor", None) is not None:
            raise ConfigError(f"YAML anchor &{excerpt(event.anchor, quote=False)} is not allowed: plans and rigs "
                              f"do not use anchors and aliases; write the value out", self.name, line)
        tag = getattr(event, "tag", None)
        if tag not in (None, "!") and tag not in _PLAIN_TAGS:
            raise ConfigError(f"YAML tag {excerpt(tag)} is not allowed here; plans and rigs hold plain text, "
                              f"numbers, lists and mappings", self.name, line)
        self.depth += 1
        self.nodes += 1
        try:
            if self.depth > MAX_DEPTH:
                raise ConfigError(f"nested deeper than {MAX_DEPTH} levels", self.name, line)
            if self.nodes > MAX_NODES:
                raise ConfigError(f"more than {MAX_NODES} values (scalars, lists and mappings); a plan or rig "
                                  f"is far smaller", self.name, line)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (ValueError, ArithmeticError) as e:  # a scalar its own tag cannot read, e.g. an int of 5000 digits
            raise ConfigError(f"cannot read value: {excerpt(str(e), quote=False)}", self.name,
                              node.start_mark.line + 1) from None


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineMap:
    out = LineMap()
    out.file = loader.name
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str):
            what = "is not a plain value" if isinstance(key, (dict, list)) or key is None else \
                "must be text (quote it)"
            raise ConfigError(f"mapping key {excerpt(key)} {what}", loader.name, line)
        if key in out:
            raise ConfigError(f"duplicate key {excerpt(key)}", loader.name, line)
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = line
    return out


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    out = LineList(loader.construct_object(child, deep=True) for child in node.value)
    out.file = loader.name
    out.line = node.start_mark.line + 1
    out.item_lines = [child.start_mark.line + 1 for child in node.value]
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)
# a date-like scalar (serial: 2024-01-31) stays text: plans have no date fields, and 2024-02-30 would not parse
_Loader.add_constructor("tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node))


def _position(data: bytes, index: int) -> tuple[int, int]:
    """(line, column), 1-based, of byte ``index``."""
    return data.count(b"\n", 0, index) + 1, index - (data.rfind(b"\n", 0, index) + 1) + 1


def read_text(path: str | Path, limit: int = MAX_FILE_BYTES) -> str:
    """The text of a configuration file: a regular file of at most ``limit`` bytes, UTF-8 (a BOM is allowed).

    Refused, each with a :class:`ConfigError` naming the file (and the line
    where there is one): anything but a regular file (a FIFO, a directory,
    ``/dev/zero`` is never read), a larger file, another encoding (Latin-1,
    UTF-16), NUL and other control characters.
    """
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; we refuse it right after
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise ConfigError("file not found", path) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a file", path) from None
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", path) from None
    except ValueError:  # a NUL in the name
        raise ConfigError("cannot read: the file name contains a NUL character", path) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else
                "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else
                "a socket" if stat.S_ISSOCK(mode) else "something else")
        raise ConfigError(f"is {kind}, not a regular file: plans and rigs are read from regular files only", path)
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise ConfigError(f"cannot read: {e.strerror}", path) from None
    if len(data) > limit:
        raise ConfigError(f"file is larger than {limit} bytes, the most a plan or rig may have", path)
    return decode_text(data, str(path))


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 (with or without a BOM) to text; other encodings and control characters are a ConfigError."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    elif data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise ConfigError("the file is UTF-32 encoded (it starts with a UTF-32 byte-order mark); save it as UTF-8",
                          name, 1)
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ConfigError("the file is UTF-16 encoded (it starts with a UTF-16 byte-order mark, as some Windows "
                          "editors write); save it as UTF-8", name, 1)
    nuls = data.count(b"\0")
    if nuls and nuls * 4 >= len(data):  # ASCII as UTF-16 or UTF-32: every other (or 3 in 4) byte is NUL
        line, col = _position(data, data.index(b"\0"))
        raise ConfigError(f"NUL bytes from column {col} on: the file looks UTF-16 or UTF-32 encoded; "
                          f"save it as UTF-8", name, line)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line, col = _position(data, e.start)
        raise ConfigError(f"not UTF-8: byte 0x{data[e.start]:02X} at column {col} ({e.reason}); save the file as "
                          f"UTF-8 (it may be Latin-1 or Windows-1252)", name, line) from None
    m = _CONTROL_RE.search(text)
    if m:
        line = text.count("\n", 0, m.start()) + 1
        col = m.start() - (text.rfind("\n", 0, m.start()) + 1) + 1
        ch = m.group()
        label = unicodedata.name(ch, "") or {"\x00": "NUL"}.get(ch, "control character")
        raise ConfigError(f"character U+{ord(ch):04X} ({label}) at column {col} is not allowed; plans and rigs are "
                          f"plain text", name, line)
    return text


def load_yaml(path: str | Path, limit: int = MAX_FILE_BYTES) -> LineMap:
    """Load a YAML file whose top level is a mapping, keeping line numbers (see :func:`read_text`)."""
    return loads_yaml(read_text(path, limit), str(path))


def loads_yaml(text: str, name: str = "<string>") -> LineMap:
    m = _CONTROL_RE.search(text)
    if m:  # text not read by read_text: same rule
        decode_text(text.encode("utf-8", "surrogatepass"), name)
    loader = _Loader(text)
    loader.name = name
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise ConfigError(f"YAML syntax error: {excerpt(e.problem or str(e), 200, quote=False)}", name,
                          mark.line + 1 if mark else None) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"YAML error: {excerpt(str(e), 200, quote=False)}", name) from None
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


#: time units beyond the SI prefixes of "s" (a plan's max_duration: 3 h)
_TIME_UNITS = {"min": 60.0, "h": 3600.0}
#: longest quantity string read (a number and a unit)
_MAX_QTY_CHARS = 64


def parse_quantity(value: Any, unit: str) -> float:
    """Parse a number or a ``"<number> <unit>"`` string into ``unit``; raises ValueError.

    The result is always finite: NaN, infinities and numbers beyond the float
    range (``1e999 dBm``) are refused.
    """
    number = _parse_quantity(value, unit)
    if not math.isfinite(number):
        raise ValueError(f"{excerpt(value)} is not a finite number")
    return number


def _parse_quantity(value: Any, unit: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number in {unit or 'no unit'}, got {value!r}")
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:
            raise ValueError(f"{excerpt(value)} is not a finite number") from None
    if not isinstance(value, str):
        what = "a mapping" if isinstance(value, dict) else "a list" if isinstance(value, list) else \
            type(value).__name__
        raise ValueError(f"expected a number{' in ' + unit if unit else ''}, got {what}")
    m = _QTY_RE.match(value) if len(value) <= _MAX_QTY_CHARS else None
    if not m:
        raise ValueError(f"cannot read {excerpt(value)} as a quantity{' in ' + unit if unit else ''}")
    number, text = float(m.group(1)), m.group(2)
    if text == "" or text == unit:
        return number
    if unit in ("Hz", "s"):
        for u in ("Hz", "S/s", "sps", "s") if unit == "Hz" else ("s",):
            if text.endswith(u):
                prefix = text[: -len(u)]
                if prefix in _PREFIX and _SCALED_UNITS[u] == unit and not (u == "s" and unit == "Hz"):
                    return number * _PREFIX[prefix]
    if unit == "s" and text in _TIME_UNITS:
        return number * _TIME_UNITS[text]
    if unit == "%" and text in ("pct", "percent"):
        return number
    raise ValueError(f"unit {excerpt(text)} in {excerpt(value)} does not fit here; expected {unit or 'a plain number'}")


#: physical range of a value by unit: nothing a plan, a rig or a limit may state lies outside
UNIT_RANGES: dict[str, tuple[float, float]] = {
    "dBm": (-200.0, 100.0), "dB": (-400.0, 400.0), "dBc": (-400.0, 400.0), "dBFS": (-400.0, 100.0),
    "dBm/Hz": (-300.0, 100.0), "dBFS/Hz": (-400.0, 100.0), "dBc/Hz": (-400.0, 100.0),
    "dB/GHz": (-1000.0, 1000.0), "dB/dB": (-100.0, 100.0),
    "Hz": (-100e9, 100e9), "s": (-86400.0, 86400.0), "%": (-1000.0, 1000.0), "ppm": (-1e6, 1e6),
    "deg": (-3600.0, 3600.0), "rad": (-1000.0, 1000.0), "K": (0.0, 1e5), "": (-1e9, 1e9),
}

#: words of Hz field names that may be negative (offsets from the LO or an edge, tones, errors, shifts)
_SIGNED_HZ = {"offset", "offsets", "tones", "error", "shift"}
#: words of field names that must be above zero (rates, widths, steps, spacings); Hz ones at least 1 Hz
_POSITIVE = {"rate", "bandwidth", "width", "mbw", "step", "spacing", "transition", "freq", "frequencies"}


def value_range(name: str, unit: str | None = None) -> tuple[float, float, bool]:
    """(low, high, low_exclusive) a field named ``name`` accepts, from its unit and what its name means.

    By unit: :data:`UNIT_RANGES`. By meaning (the words of the name):
    durations (``_s``) are not negative, a settling time is at most
    :data:`MAX_SETTLE_S` and a delay at most :data:`MAX_DELAY_S`; rates,
    bandwidths, steps and spacings are above zero (at least 1 Hz);
    frequencies are not negative unless the name says offset, error or shift.
    """
    unit = unit_of(name) if unit is None else unit
    low, high = UNIT_RANGES.get(unit, UNIT_RANGES[""])
    words = set(base_name(name).split("_"))
    exclusive = False
    if unit == "s":
        low = 0.0
        if words & {"settle", "settling"}:
            high = MAX_SETTLE_S
        elif "delay" in words:
            high = MAX_DELAY_S
    if words & _POSITIVE and not words & _SIGNED_HZ:
        low, exclusive = (1.0, False) if unit == "Hz" else (0.0, True)
    elif unit == "Hz" and not words & _SIGNED_HZ:
        low = 0.0
    return low, high, exclusive


def check_quantity(value: float, name: str, unit: str | None = None, bounds: tuple | None = None) -> float:
    """``value`` if it is finite and within :func:`value_range` (or ``bounds``) for field ``name``; else ValueError."""
    unit = unit_of(name) if unit is None else unit
    if not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number")
    low, high, exclusive = value_range(name, unit) if bounds is None else (*bounds, False)
    if value < low or value > high or (exclusive and value == low):
        u = f" {unit}" if unit else ""
        rng = f"above {low:g}{u} and at most {high:g}{u}" if exclusive else f"within {low:g}..{high:g}{u}"
        raise ValueError(f"{value:g}{u} is out of range: must be {rng}")
    return value


def check_count(value: int, name: str, bounds: tuple | None = None) -> int:
    """A whole-number field within its range: counts (``n_...``) 1..; capture lengths at most
    :data:`MAX_SAMPLES`; seeds 0..2**32-1; channels 0..255; else |value| < 2**31."""
    if bounds is None:
        bounds = (-(1 << 31), (1 << 31) - 1)
        if name.startswith("n_"):
            bounds = (1, MAX_SAMPLES if name.endswith("samples") else 1_000_000)
        elif name == "seed":
            bounds = (0, (1 << 32) - 1)
        elif name == "channel":
            bounds = (0, 255)
    if not bounds[0] <= value <= bounds[1]:
        raise ValueError(f"{excerpt(value)} is out of range: must be within {bounds[0]}..{bounds[1]}")
    return value


def seed_arg(text: str) -> int:
    """A run seed from the command line (argparse ``type``): a whole number 0..2**32-1."""
    import argparse

    try:
        return check_count(int(text), "seed")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{excerpt(text)} is not a seed: give a whole number 0..{(1 << 32) - 1}") \
            from None


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
    naming the file, line and field for unknown, missing or malformed fields,
    and for values outside their range (see :func:`convert`).
    """
    sec = Section(node, what, file, line)
    if node is None:
        node = LineMap()
        node.key_lines = {}
    if not isinstance(node, dict):
        raise sec.error(f"expected a mapping of fields, got {kind_of(node)}")
    keys = field_key_map(cls)
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, raw in node.items():
        if key in ignore:
            continue
        f = keys.get(key)
        if f is None:
            known = sorted({f.name for f in dataclasses.fields(cls) if f.init} | set(ignore))
            raise sec.error(f"unknown field {excerpt(key)}; known fields: {', '.join(known)}", key)
        if f.name in values:
            raise sec.error(f"field {f.name!r} given twice (as {excerpt(key)})", key)
        values[f.name] = convert(hints[f.name], raw, f.name, sec, key, f.metadata)
    for f in dataclasses.fields(cls):
        if f.init and f.name not in values and f.default is dataclasses.MISSING \
                and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            unit = unit_of(f.name)
            hint = f" (in {unit})" if unit else ""
            raise sec.error(f"missing field {f.name!r}{hint}")
    try:
        return cls(**values)
    except (ValueError, TypeError, ArithmeticError) as e:
        raise sec.error(str(e)) from None


def kind_of(value: Any) -> str:
    """What a YAML value is, for messages: 'a list', 'a mapping', or an excerpt of the value."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return excerpt(value)


def check_text(value: str, name: str) -> str:
    """A text field: descriptions up to :data:`MAX_DESCRIPTION_CHARS` (several lines allowed), names up to
    :data:`MAX_NAME_CHARS`, other text up to :data:`MAX_TEXT_CHARS`, on one line; no control characters."""
    multiline = name == "description"
    limit = MAX_DESCRIPTION_CHARS if multiline else MAX_NAME_CHARS if name == "name" else MAX_TEXT_CHARS
    if len(value) > limit:
        raise ValueError(f"{excerpt(value)} is {len(value)} characters long; at most {limit} allowed")
    if _CONTROL_RE.search(value) or (not multiline and any(c in value for c in "\n\r\t")):
        raise ValueError(f"{excerpt(value)} contains a line break or control character")
    if name == "name" and not value.strip():
        raise ValueError("a name must not be empty")
    return value


def convert(tp: Any, raw: Any, name: str, sec: Section, key: str | None = None, meta: Any = None) -> Any:
    """Convert one YAML value to type ``tp`` (see :func:`build`).

    Floats must be finite and within :func:`value_range` for the field's
    name, whole numbers within :func:`check_count` (either: or within the
    field's ``metadata['bounds']``), text within :func:`check_text`, lists
    at most :data:`MAX_LIST_ITEMS` long.
    """
    optional, tp = _is_optional(tp)
    meta = meta or {}
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
            return check_quantity(parse_quantity(raw, unit_of(name)), name, bounds=meta.get("bounds"))
        if tp is int:
            if isinstance(raw, bool) or not isinstance(raw, int):
                raise ValueError(f"expected a whole number, got {kind_of(raw)}")
            return check_count(raw, name, meta.get("bounds"))
        if tp is bool:
            if not isinstance(raw, bool):
                raise ValueError(f"expected true or false, got {kind_of(raw)}")
            return raw
        if tp is str:
            if not isinstance(raw, (str, int, float)) or isinstance(raw, bool):
                raise ValueError(f"expected text, got {kind_of(raw)}")
            return check_text(str(raw), name)
        if origin is Literal:
            if isinstance(raw, (dict, list)) or raw not in get_args(tp):
                raise ValueError(f"{kind_of(raw)} is not one of {', '.join(map(repr, get_args(tp)))}")
            return raw
        if origin in (list, tuple):
            (item_tp, *_rest) = get_args(tp) or (Any,)
            if not isinstance(raw, list):
                raw = [raw] if origin is list and not isinstance(raw, dict) else raw
            if not isinstance(raw, list):
                raise ValueError(f"expected a list, got {kind_of(raw)}")
            if len(raw) > MAX_LIST_ITEMS:
                raise ValueError(f"{len(raw)} items; at most {MAX_LIST_ITEMS} allowed")
            lines = getattr(raw, "item_lines", None)
            items = []
            for i, item in enumerate(raw):
                if dataclasses.is_dataclass(item_tp):
                    items.append(build(item_tp, item, f"{sec.what}.{name}[{i}]", sec.file,
                                       lines[i] if lines else sec.line))
                else:
                    items.append(convert(item_tp, item, name, sec, key, meta))
            return items if origin is list else tuple(items)
        if origin is dict or tp is dict:
            if not isinstance(raw, dict):
                raise ValueError(f"expected a mapping, got {kind_of(raw)}")
            return raw
        if tp is Any:
            return raw
    except ValueError as e:
        raise sec.error(f"field {name!r}: {e}", key) from None
    raise TypeError(f"unsupported field type {tp!r} for {name}")


def name_in(node: Any, key: str, choices: typing.Mapping[str, Any], sec: Section, what: str) -> Any:
    """``choices[node[key]]`` where ``node[key]`` names one of them (a measurement, a stimulus type, a model...);
    a missing, unknown or non-text name is a ConfigError listing the choices."""
    raw = node.get(key) if isinstance(node, dict) else None
    known = ", ".join(sorted(choices))
    if not isinstance(raw, str):
        got = "" if raw is None else f", got {kind_of(raw)}"
        raise sec.error(f"{key!r} must name a {what} (one of: {known}){got}", key if raw is not None else None)
    found = choices.get(raw)
    if found is None:
        raise sec.error(f"unknown {what} {excerpt(raw)}; known: {known}", key)
    return found


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
