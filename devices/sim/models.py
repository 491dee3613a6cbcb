"""Every simulated DUT model, registered.

:mod:`devices.sim.dut` holds the registry (``DUT_MODELS``, ``register_dut``)
and the basic models; a model in a module of its own registers itself when
that module is imported, and is listed here. Importing this module makes
``DUT_MODELS`` complete; the package imports it, so it is complete whichever
``devices.sim`` module is imported first.
"""

from devices.sim import repeater  # noqa: F401 - registers "repeater", "repeater_uplink"
from devices.sim.dut import DUT_MODELS, register_dut

__all__ = ["DUT_MODELS", "register_dut"]
