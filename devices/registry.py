"""Drivers chosen by URI scheme.

A driver registers ``scheme -> "module:factory"``; the module is imported only
when a URI with that scheme is opened, so a missing vendor library only
matters to the users of that board. ``factory(uri, rest, **options)`` returns
an open :class:`~devices.radio.Radio`.
"""

from __future__ import annotations

import importlib

from devices.radio import DeviceError, Radio


class UnknownDeviceError(DeviceError):
    """The URI names no known driver."""


_DRIVERS: dict[str, str] = {
    "sim": "devices.sim.driver:open_sim",
    "soapy": "devices.soapy:open_soapy",
    "pluto": "devices.pluto:open_pluto",
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


def open_radio(uri: str, **options) -> Radio:
    """Open the radio named by ``uri`` with its scheme's driver."""
    scheme, rest = split_uri(uri)
    target = _DRIVERS.get(scheme)
    if target is None:
        raise UnknownDeviceError(f"unknown device URI scheme {scheme!r} in {uri!r}; known schemes: "
                                 + ", ".join(f"{s}:" for s in known_schemes()))
    module_name, func_name = target.split(":")
    module = importlib.import_module(module_name)
    return getattr(module, func_name)(uri, rest, **options)
