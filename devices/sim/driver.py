"""The ``sim:`` driver: a :class:`~devices.radio.Radio` in front of a :class:`SimBench`, built from a rig's options.

``sim:`` or ``sim:<name>`` opens a simulated SDR. The bench is built from the
options a rig file's sections give (``open_radio("sim:", sim=SimConfig(...),
dut=<DUT model>, tx_path=Path(...), rx_path=Path(...), seed=N)``; the types
of ``sim`` and ``dut`` are :data:`OPTION_TYPES`), or passed ready made
(``bench=SimBench(...)``). Without either, a default bench (AD9361-like
ports, empty paths, a Thru as DUT) is built.

``emulate="pluto"`` serves the bench as an emulated PlutoSDR on a free port
of 127.0.0.1 and returns the ``pluto:`` driver opened at it
(:mod:`devices.sim.emulated`): the real driver stack on simulated RF.
Closing that radio stops the server.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np

from devices.paths import Path
from devices.radio import Capabilities, Capture, CaptureMeta, DeviceError, Radio, StreamConfig
from devices.sim.bench import SimBench, SimConfig
from devices.sim.dut import Thru
from devices.sim.models import DUT_MODELS

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]*$")

#: the options a rig file gives this driver in sections of its own: ``sim`` (the radio's physics) and
#: ``dut`` (a DUT model, picked by its ``model`` field)
OPTION_TYPES: dict[str, Any] = {"sim": SimConfig, "dut": DUT_MODELS}
#: every option open_sim takes
OPTIONS = ("bench", "sim", "dut", "tx_path", "rx_path", "seed", "emulate")


class SimRadio(Radio):
    """Simulated SDR: every call is translated to the bench."""

    scheme = "sim"

    def __init__(self, uri: str, bench: SimBench, name: str = ""):
        super().__init__(uri)
        self.bench = bench
        self.name = name

    @property
    def capabilities(self) -> Capabilities:
        # the simulated board counts RX and TX samples on one clock, like a timestamped stream
        return dataclasses.replace(self.bench.capabilities, timing="tx_timestamps")

    def set_dut_bypass(self, on: bool) -> None:
        self.bench.bypass_dut = bool(on)

    def _configure_tx(self, config: StreamConfig) -> StreamConfig:
        return self.bench.set_tx(config)

    def _configure_rx(self, config: StreamConfig) -> StreamConfig:
        return self.bench.set_rx(config)

    def _transmit(self, samples: np.ndarray, cyclic: bool) -> None:
        self.bench.start_tx(samples, cyclic)

    def _stop_tx(self) -> None:
        self.bench.stop_tx()

    def _reconnect(self) -> None:
        pass  # the bench cannot stall; nothing to re-open

    def _capture(self, n_samples: int, timeout_s: float) -> Capture:
        timestamp = self.now()
        samples, clipped = self.bench.read(n_samples)
        meta = CaptureMeta(config=self.bench.rx_config, timestamp=timestamp, n_samples=int(samples.size),
                           overload=clipped > 0, clipped_samples=int(clipped))
        if self.bench.last_tx_index is not None:
            meta.extra["tx_sample_index"] = int(self.bench.last_tx_index)
        return Capture(samples, meta)


def build_bench(sim: SimConfig | None = None, dut: Any = None, tx_path: Path | None = None,
                rx_path: Path | None = None, seed: int | None = None) -> SimBench:
    """The simulated bench a rig describes.

    ``sim``: the radio's physics (default SimConfig()); ``dut``: a DUT model
    (default a lossless Thru); ``tx_path``/``rx_path``: the physical paths
    (default empty); ``seed``: overrides ``sim.seed``.
    """
    if sim is None:
        sim = SimConfig() if seed is None else SimConfig(seed=seed)
    return SimBench(sim, tx_path, Thru() if dut is None else dut, rx_path, seed=seed)


def open_sim(uri: str, rest: str, bench: SimBench | None = None, emulate: str | None = None, **opts) -> Radio:
    """Open a simulated SDR for ``sim:`` or ``sim:<name>``.

    ``bench``: the simulated rig to drive; else one is built from ``sim``,
    ``dut``, ``tx_path``, ``rx_path`` and ``seed`` (:func:`build_bench`).
    ``emulate``: serve the bench as this board (``"pluto"``) and return that
    board's driver opened at it instead.
    """
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise DeviceError(f"{uri}: unknown sim option(s): {', '.join(unknown)}; known: {', '.join(OPTIONS)}")
    name = (rest or "").strip()
    if not _NAME_RE.match(name):
        raise DeviceError(f"{uri}: sim: URIs take no parameters, only an optional name "
                          f"(letters, digits, '_', '.', '-'), e.g. 'sim:' or 'sim:bench1'; got {rest!r}")
    if bench is None:
        bench = build_bench(**opts)
    elif any(v is not None for v in opts.values()):
        raise DeviceError(f"{uri}: give either a bench or what to build one from "
                          f"({', '.join(OPTIONS[1:-1])}), not both (the bench has its own seed)")
    if not isinstance(bench, SimBench):
        raise DeviceError(f"{uri}: bench must be a SimBench, got {type(bench).__name__}")
    if emulate is None:
        return SimRadio(uri, bench, name)
    from devices.sim.emulated import open_emulated

    return open_emulated(uri, emulate, bench)
