"""Simulated rig: SDR port models, RF paths and DUT models (a deterministic physics model).

Signals inside are complex baseband in sqrt(mW) around the RF centre
frequency; the driver (``sim:`` URIs) turns them into SDR samples.
"""

from devices.sim.bench import RxPortModel, SimBench, SimConfig, TxPortModel
from devices.sim.driver import SimRadio, open_sim
from devices.sim.dut import RappAmplifier, Thru
from devices.sim.models import DUT_MODELS, register_dut
from devices.paths import KT0_DBM_HZ, PATH_ELEMENTS, Amplifier, Attenuator, Cable, Path

__all__ = [
    "Amplifier", "Attenuator", "Cable", "DUT_MODELS", "KT0_DBM_HZ", "PATH_ELEMENTS", "Path", "RappAmplifier",
    "RxPortModel", "SimBench", "SimConfig", "SimRadio", "Thru", "TxPortModel", "open_sim", "register_dut",
]
