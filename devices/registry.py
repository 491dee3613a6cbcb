"""Drivers chosen by URI scheme.

A driver registers ``scheme -> "module:factory"``; the module is imported only
when a URI with that scheme is opened, so a missing vendor library only
matters to the users of that board. ``factory(uri, rest, **options)`` returns
an open :class:`~devices.radio.Radio`.

A driver module may declare ``OPTION_TYPES``: the options a rig file gives it
in sections of its own, by section name, each a dataclass or a registry of
dataclasses by model name (``{name: cls}``, picked by the section's ``model``
field). Whoever reads rig files builds the options from those types
(:func:`driver_option_types`) and passes them to :func:`open_radio`.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from devices.radio import DeviceError, Radio


class UnknownDeviceError(DeviceError):
    """The URI names no known driver."""


_DRIVERS: dict[str, str] = {
    "sim": "devices.sim.driver:open_sim",
    "soapy": "devices.soapy:open_soapy",
    "pluto": "devices.pluto:open_pluto",
    "sigmf": "devices.replay:open_replay",
    "zmq": "devices.zmq:open_zmq",
    "replay": "devices.replay_run:open_run_replay",
}


def register_driver(scheme: str, target: str) -> None:
    """Register ``target`` ("package.module:function") for URIs ``scheme:...``."""
    _DRIVERS[scheme] = target


def known_schemes() -> list[str]:
    return sorted(_DRIVERS)


def split_uri(uri: str) -> tuple[str, str]:
    """``"pluto:ip:192.168.2.1"`` -> ``("pluto", "ip:192.168.2.1")``; ``zmq://h:p`` -> ``("zmq", "//h:p")``."""
    if not isinstance(uri, str) or ":" not in uri:
        raise UnknownDeviceError(f"device URI {uri!r} has no scheme; expected one of: "
                                 + ", ".join(f"{s}:" for s in known_schemes()))
    scheme, rest = uri.split(":", 1)
    return scheme.strip().lower(), rest


def _driver(scheme: str, where: str = "") -> tuple[ModuleType, str]:
    """The driver module of ``scheme`` (imported now) and the name of its factory."""
    target = _DRIVERS.get(scheme)
    if target is None:
        raise UnknownDeviceError(f"unknown device URI scheme {scheme!r}{where}; known schemes: "
                                 + ", ".join(f"{s}:" for s in known_schemes()))
    module_name, func_name = target.split(":")
    return importlib.import_module(module_name), func_name


def driver_option_types(scheme: str) -> dict[str, Any]:
    """The types of the options ``scheme``'s driver takes from a rig file, by section (its ``OPTION_TYPES``)."""
    module, _ = _driver(scheme.strip().lower())
    return dict(getattr(module, "OPTION_TYPES", {}))


def open_radio(uri: str, **options) -> Radio:
    """Open the radio named by ``uri`` with its scheme's driver."""
    scheme, rest = split_uri(uri)
    module, func_name = _driver(scheme, f" in {uri!r}")
    return getattr(module, func_name)(uri, rest, **options)
