"""The ``sim:`` driver: a :class:`~devices.radio.Radio` in front of a :class:`SimBench`, built from a rig's options.

``sim:`` or ``sim:<name>`` opens a simulated SDR. The bench is built from the
options a rig file's sections give (``open_radio("sim:", sim=SimConfig(...),
dut=<DUT model>, tx_path=Path(...), rx_path=Path(...), reference_path=Path(...), seed=N)``; the types
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
OPTIONS = ("bench", "sim", "dut", "tx_path", "rx_path", "reference_path", "seed", "emulate")


class SimRadio(Radio):
    """Simulated SDR: every call is translated to the bench."""

    scheme = "sim"
    #: the bench's clock moves only with reads, so a start at its "now" precedes every read to come
    timed_start_lead_s = 0.0

    def __init__(self, uri: str, bench: SimBench, name: str = ""):
        super().__init__(uri)
        self.bench = bench
        self.name = name

    @property
    def capabilities(self) -> Capabilities:
        # one sample clock for TX and RX, read as hardware time (as a USRP's); two receivers on that clock
        return dataclasses.replace(self.bench.capabilities, timing=("hardware_time", "coherent_rx"))

    def _ns(self, index: int) -> int:
        """Hardware time (ns) of the bench's clock index at the current rate."""
        return int(round(index * 1e9 / self.bench.rx_config.sample_rate_hz))

    def _hardware_time_ns(self) -> int:
        if self.bench.rx_config is None:
            raise DeviceError(f"{self.uri}: configure_rx() before reading the hardware time")
        return self._ns(self.bench.next_rx_index())

    def _transmit_at(self, samples: np.ndarray, cyclic: bool, time_ns: int) -> None:
        # a timed start lands on the sample tick nearest the commanded time, as on a USRP
        fs = self.bench.tx_config.sample_rate_hz
        self.bench.start_tx(samples, cyclic, at_index=int(round(time_ns * 1e-9 * fs)))

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

    def _probe(self) -> None:
        # the bench's description, read as a board's status is: nothing set, nothing sent
        self.bench.capabilities  # noqa: B018

    def _reconnect(self) -> None:
        pass  # the bench cannot stall; nothing to re-open

    def _capture(self, n_samples: int, timeout_s: float) -> Capture:
        timestamp = self.now()
        samples, clipped = self.bench.read(n_samples)
        meta = CaptureMeta(config=self.bench.rx_config, timestamp=timestamp, n_samples=int(samples.size),
                           overload=clipped > 0, clipped_samples=int(clipped),
                           time_ns=self._ns(self.bench.last_rx_index))
        return Capture(samples, meta)

    def _capture_channels(self, n_samples: int, channels: tuple[int, ...], gains_db: tuple[float, ...],
                          timeout_s: float) -> list[Capture]:
        if sorted(channels) != [0, 1]:
            raise DeviceError(f"{self.uri}: the simulated board captures RX channels 0 and 1 together, "
                              f"not {list(channels)}")
        timestamp = self.now()
        g = dict(zip(channels, gains_db))
        rx = self.bench.rx_config
        if g[0] != rx.gain_db:
            rx = self.bench.set_rx(rx.with_(gain_db=g[0]))
        ref_gain = self.capabilities.rx_gain_range_db.clip(g[1])
        parts = self.bench.read_channels(n_samples, ref_gain)
        t_ns = self._ns(self.bench.last_rx_index)
        out = {}
        for ch, (samples, clipped), cfg in zip((0, 1), parts, (rx, rx.with_(channel=1, gain_db=ref_gain))):
            out[ch] = Capture(samples, CaptureMeta(config=cfg, timestamp=timestamp, n_samples=int(samples.size),
                                                   overload=clipped > 0, clipped_samples=int(clipped), time_ns=t_ns))
        return [out[c] for c in channels]


def build_bench(sim: SimConfig | None = None, dut: Any = None, tx_path: Path | None = None,
                rx_path: Path | None = None, seed: int | None = None,
                reference_path: Path | None = None) -> SimBench:
    """The simulated bench a rig describes.

    ``sim``: the radio's physics (default SimConfig()); ``dut``: a DUT model
    (default a lossless Thru); ``tx_path``/``rx_path``: the physical paths
    (default empty); ``reference_path``: a splitter at the DUT input feeding RX
    channel 1 (default none); ``seed``: overrides ``sim.seed``.
    """
    if sim is None:
        sim = SimConfig() if seed is None else SimConfig(seed=seed)
    return SimBench(sim, tx_path, Thru() if dut is None else dut, rx_path, seed=seed, reference_path=reference_path)


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
