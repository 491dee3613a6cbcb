"""The ``sim:`` driver: a :class:`~devices.radio.Radio` in front of a :class:`SimBench`.

``sim:`` or ``sim:<name>`` opens a simulated SDR. The rig loader passes its
own bench (``open_radio("sim:", bench=...)``); without one, a default bench
(AD9361-like ports, empty paths, a Thru as DUT) is built.
"""

from __future__ import annotations

import re

import numpy as np

from devices.radio import Capabilities, Capture, CaptureMeta, DeviceError, Radio, StreamConfig
from devices.sim.bench import SimBench, SimConfig
from devices.sim.dut import Thru
from devices.paths import Path

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]*$")


class SimRadio(Radio):
    """Simulated SDR: every call is translated to the bench."""

    scheme = "sim"

    def __init__(self, uri: str, bench: SimBench, name: str = ""):
        super().__init__(uri)
        self.bench = bench
        self.name = name

    @property
    def capabilities(self) -> Capabilities:
        return self.bench.capabilities

    def _configure_tx(self, config: StreamConfig) -> StreamConfig:
        return self.bench.set_tx(config)

    def _configure_rx(self, config: StreamConfig) -> StreamConfig:
        return self.bench.set_rx(config)

    def _transmit(self, samples: np.ndarray, cyclic: bool) -> None:
        self.bench.start_tx(samples, cyclic)

    def _stop_tx(self) -> None:
        self.bench.stop_tx()

    def _capture(self, n_samples: int, timeout_s: float) -> Capture:
        timestamp = self.now()
        samples, clipped = self.bench.read(n_samples)
        meta = CaptureMeta(config=self.bench.rx_config, timestamp=timestamp, n_samples=int(samples.size),
                           overload=clipped > 0, clipped_samples=int(clipped))
        if self.bench.last_tx_index is not None:
            meta.extra["tx_sample_index"] = int(self.bench.last_tx_index)
        return Capture(samples, meta)


def open_sim(uri: str, rest: str, bench: SimBench | None = None, seed: int | None = None, **opts) -> SimRadio:
    """Open a simulated SDR for ``sim:`` or ``sim:<name>``.

    ``bench``: the simulated rig to drive (default: SimConfig(), empty paths,
    Thru DUT); ``seed``: seed of that default bench.
    """
    if opts:
        raise DeviceError(f"{uri}: unknown sim option(s): {', '.join(sorted(opts))}; known: bench, seed")
    name = (rest or "").strip()
    if not _NAME_RE.match(name):
        raise DeviceError(f"{uri}: sim: URIs take no parameters, only an optional name "
                          f"(letters, digits, '_', '.', '-'), e.g. 'sim:' or 'sim:bench1'; got {rest!r}")
    if bench is None:
        config = SimConfig() if seed is None else SimConfig(seed=seed)
        bench = SimBench(config, Path([]), Thru(), Path([]))
    elif seed is not None:
        raise DeviceError(f"{uri}: give either a bench or a seed, not both (the bench has its own seed)")
    if not isinstance(bench, SimBench):
        raise DeviceError(f"{uri}: bench must be a SimBench, got {type(bench).__name__}")
    return SimRadio(uri, bench, name)
