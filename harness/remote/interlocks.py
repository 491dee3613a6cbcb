"""Transmit interlocks of a rig server: what its own rig file allows, whatever a client asks.

Checked on every request that could put power somewhere (configure TX, transmit, switch the DUT bypass
while transmitting) and on every capture (the level actually reaching the RX port). A refusal names the
limit; nothing is transmitted.
"""

from __future__ import annotations

import math

import numpy as np

from devices import iq_kernels
from devices.radio import StreamConfig
from harness.rig import Rig


class Refusal(Exception):
    """A request the server's limits forbid; ``limit`` names the rig-file field."""

    def __init__(self, limit: str, message: str):
        super().__init__(message)
        self.limit = limit


class Interlocks:
    def __init__(self, rig: Rig):
        self.rig = rig
        self.limits = rig.spec.limits

    def check_band(self, cfg: StreamConfig) -> None:
        """The whole TX band (LO +- rate/2) must lie in one of ``limits.tx_bands``."""
        lo, hi = cfg.freq_hz - cfg.sample_rate_hz / 2, cfg.freq_hz + cfg.sample_rate_hz / 2
        bands = self.limits.tx_bands
        if not bands:
            raise Refusal("limits.tx_bands", f"rig {self.rig.spec.name!r} allows no TX band (limits.tx_bands "
                                             f"is empty): nothing is transmitted")
        if not any(b.low_hz <= lo and hi <= b.high_hz for b in bands):
            allowed = ", ".join(f"{b.low_hz / 1e6:.6g}-{b.high_hz / 1e6:.6g} MHz" for b in bands)
            raise Refusal("limits.tx_bands", f"TX {lo / 1e6:.6g}-{hi / 1e6:.6g} MHz lies outside the allowed "
                                             f"TX bands (limits.tx_bands: {allowed}) of rig {self.rig.spec.name!r}")

    def dut_input_dbm(self, cfg: StreamConfig, rms_dbfs: float) -> float:
        """Power at the DUT input of a waveform at ``rms_dbfs`` with the TX set to ``cfg``."""
        nominal = self.rig.tx_full_scale_dbm + float(self.rig.spec.tx_to_dut.gain_db_at(cfg.freq_hz))
        guess = nominal + cfg.gain_db + rms_dbfs
        a0 = self.rig.input_dbm_at_0dbfs(cfg.freq_hz, guess)  # calibrated where a calibration is attached
        return a0 + cfg.gain_db + rms_dbfs

    def check_tx(self, cfg: StreamConfig | None, rms_dbfs: float, bypassed: bool) -> dict:
        """Raise :class:`Refusal` if playing at ``rms_dbfs`` (dBFS) with ``cfg`` breaks a limit; else the levels."""
        if cfg is None:
            raise Refusal("configure_tx", "configure the transmitter before transmitting")
        self.check_band(cfg)
        dut_in = self.dut_input_dbm(cfg, rms_dbfs)
        lim = self.limits.max_dut_input_dbm
        if not bypassed and lim is not None and dut_in > lim + 1e-9:
            raise Refusal("limits.max_dut_input_dbm", f"{dut_in:.2f} dBm at the DUT input exceeds the rig limit "
                                                      f"max_dut_input_dbm {lim:g} dBm: nothing transmitted")
        out = {"dut_input_dbm": dut_in}
        if bypassed:  # a thru in place of the DUT: the DUT input level reaches the RX port through dut_to_rx
            rx_port = self.rig.rx_port_dbm(cfg.freq_hz, dut_in)
            out["rx_port_dbm"] = rx_port
            if rx_port > self.limits.max_rx_input_dbm + 1e-9:
                raise Refusal("limits.max_rx_input_dbm",
                              f"{rx_port:.2f} dBm at the RX port (DUT bypassed) exceeds the rig limit "
                              f"max_rx_input_dbm {self.limits.max_rx_input_dbm:g} dBm: nothing transmitted")
        return out

    def check_rx(self, rx_gain_db: float, samples: np.ndarray, mean_power: float | None = None) -> None:
        """The level a capture shows at the RX port must stay below ``max_rx_input_dbm`` (``mean_power``: the
        samples' mean |x|^2 if the caller computed it already)."""
        # one pass on this thread (BLAS threads wait for a busy core)
        mean = iq_kernels.mean_power(samples) if mean_power is None else mean_power
        port = 10 * math.log10(max(mean, 1e-30)) + self.rig.rx_full_scale_dbm - rx_gain_db
        if port > self.limits.max_rx_input_dbm:
            raise Refusal("limits.max_rx_input_dbm",
                          f"{port:.1f} dBm at the RX port exceeds the rig limit max_rx_input_dbm "
                          f"{self.limits.max_rx_input_dbm:g} dBm: transmitter stopped")


def rms_dbfs(samples: np.ndarray) -> float:
    mean = float(np.mean(np.abs(samples.astype(np.complex128)) ** 2))
    return 10 * math.log10(max(mean, 1e-30))
