"""Errors raised both by the open rig and by its calibration table (kept here so neither imports the other)."""

from devices import DeviceError


class LevelError(DeviceError):
    """The rig cannot deliver the requested power."""
