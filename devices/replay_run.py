"""A saved run replayed as a radio: ``replay:RUN_DIR`` (or ``replay:RUN_DIR/captures``).

The run's SigMF recordings (``harness run --save-captures``) are served in
place of the live radio, so that ``harness run PLAN --rig <replay rig>`` runs
the plan through the whole rig path (tuning, levels, autorange, bypass, TX
checks) on what was recorded. A capture is served when the harness asks for
what was recorded, in the order it was recorded: the next unserved recording
whose LO, rate and length match the RX setting and the request. Anything else
is refused (:class:`ReplayMismatch`) naming the request and the recording it
differs from.

Nothing is transmitted: TX settings and waveforms are only recorded
(:attr:`RunReplayRadio.tx_log`) and checked, when a capture is served,
against the recording's TX setting (off, or on at its frequency, TX gain and
digital RMS level), as is the DUT bypass. TX gains snap to the recorded ones
(the largest recorded gain not above the one asked; the range reaches 10 dB
above the highest so that a level asked beyond it is refused at the capture,
naming the recording): the replay stands for a radio whose gain steps are
those the recordings show.

A replayed radio has nothing to settle (:attr:`RunReplayRadio.settles` is
False): the recordings are what was captured after settling. Its hardware
clock reads the recorded times, so timed transmissions and timestamps come
out as recorded. This module reads the harness's namespaced SigMF fields as
plain JSON and imports nothing from ``harness``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from devices.radio import Capabilities, CapabilityError, Capture, CaptureMeta, DeviceError, Radio, Range, StreamConfig
from devices.replay import Recording, read_recording, uri_path

NS = "harness"
#: a TX setting and a recording's agree within these (dB): they are the same computation, floats aside
TX_TOLERANCE_DB = 1e-6


class ReplayMismatch(DeviceError):
    """The harness asked the replay for a capture (or a TX setting) that was not recorded."""


@dataclass
class _Saved:
    recording: Recording
    meta: dict  # harness:record
    tx: dict | None  # harness:tx

    @property
    def n(self) -> int:
        return int(self.recording.samples.size)

    def describe(self) -> str:
        m = self.meta
        tx = "TX off" if not self.tx else (f"TX at {self.tx['freq_hz'] / 1e6:.6g} MHz gain {self.tx['tx_gain_db']:g} dB "
                                           f"{self.tx['digital_rms_dbfs']:.2f} dBFS")
        return (f"{self.recording.path.name} ({m.get('label')!r}: LO {self.recording.freq_hz / 1e6:.6g} MHz, "
                f"{self.recording.sample_rate_hz / 1e6:.6g} MS/s, {self.n} samples, {tx}"
                f"{', DUT bypassed' if m.get('dut_bypassed') else ''})")


def _folder(path: Path) -> Path:
    if (path / "captures").is_dir():
        return path / "captures"
    return path


def load_saved(path: str | Path) -> list[_Saved]:
    """The run's recordings in the order they were taken (file names: step, capture index)."""
    folder = _folder(Path(path))
    if not folder.is_dir():
        raise DeviceError(f"{path}: no such run directory or folder of recordings")
    files = sorted(p for p in folder.glob("*.sigmf-meta") if not p.name.startswith("."))
    if not files:
        raise DeviceError(f"{folder}: no SigMF recordings (run the plan with --save-captures)")
    out = []
    for f in files:
        rec = read_recording(f)  # checked: metadata, length, checksum
        meta = rec.global_info.get(f"{NS}:record")
        if not isinstance(meta, dict):
            raise DeviceError(f"{f}: not a capture record of the harness (no {NS}:record)")
        out.append(_Saved(rec, meta, rec.global_info.get(f"{NS}:tx")))
    return out


class RunReplayRadio(Radio):
    """Serves a saved run's recordings when the harness asks for what was recorded; never transmits."""

    scheme = "replay"
    #: the recordings are what was captured after settling: there is nothing to let pass before them
    settles = False
    timed_start_lead_s = 0.0

    def __init__(self, uri: str, saved: list[_Saved]):
        super().__init__(uri)
        self.saved = saved
        self.served = [False] * len(saved)
        self._last: int | None = None  # the recording served last, re-served after an RX gain change only
        self._regain = False
        self.bypassed = False
        #: every TX call, in order: ("configure", StreamConfig) / ("transmit", rms_dbfs) / ("stop", None)
        self.tx_log: list[tuple[str, object]] = []
        self._tx_rms_dbfs: float | None = None
        self.captures_refused = 0
        recs = [s.recording for s in saved]
        f = [r.freq_hz for r in recs]
        fs = [r.sample_rate_hz for r in recs]
        self._rx_gains = sorted({float(s.meta.get("rx_gain_db")) for s in saved if s.meta.get("rx_gain_db") is not None})
        self._tx_gains = sorted({float(s.tx["tx_gain_db"]) for s in saved if s.tx})
        timed = any(s.tx and s.tx.get("start_time_ns") is not None for s in saved)
        self._caps = Capabilities(
            driver="replay", tune_range_hz=Range(min(f), max(f)), sample_rate_range_hz=Range(min(fs), max(fs)),
            rf_bandwidth_range_hz=Range(0.0, max(fs)),
            tx_gain_range_db=Range(self._tx_gains[0], self._tx_gains[-1] + 10.0) if self._tx_gains else Range(0.0, 0.0),
            rx_gain_range_db=Range(self._rx_gains[0], self._rx_gains[-1]) if self._rx_gains else Range(0.0, 0.0),
            tx_channels=1, rx_channels=1, description=f"replay of the {len(saved)} recordings in {uri}",
            timing=("hardware_time",) if timed else ())

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    # ----- TX: recorded, never sent
    def _configure_tx(self, config: StreamConfig) -> StreamConfig:
        below = [g for g in self._tx_gains if g <= config.gain_db + 1e-9]
        if not below:
            raise ReplayMismatch(f"{self.uri}: TX gain {config.gain_db:g} dB is below every recorded TX gain")
        actual = StreamConfig(freq_hz=config.freq_hz, sample_rate_hz=config.sample_rate_hz, gain_db=below[-1],
                              rf_bandwidth_hz=config.rf_bandwidth_hz, channel=config.channel)
        self.tx_log.append(("configure", actual))
        self._last = None  # a TX change: no longer the same capture
        return actual

    def _transmit(self, samples: np.ndarray, cyclic: bool) -> None:
        rms = float(np.sqrt(np.mean(np.abs(samples.astype(np.complex128)) ** 2)))
        self._tx_rms_dbfs = 20 * np.log10(max(rms, 1e-30))
        self.tx_log.append(("transmit", self._tx_rms_dbfs))
        self._last = None  # a TX change: no longer the same capture

    def _transmit_at(self, samples: np.ndarray, cyclic: bool, time_ns: int) -> None:
        self._transmit(samples, cyclic)

    def _stop_tx(self) -> None:
        self._tx_rms_dbfs = None
        self.tx_log.append(("stop", None))
        self._last = None  # a TX change: no longer the same capture

    def _hardware_time_ns(self) -> int:
        # the clock reads the next timed transmission's recorded start (the lead is 0): times come out as recorded
        for k, s in enumerate(self.saved):
            if not self.served[k] and s.tx and s.tx.get("start_time_ns") is not None:
                return int(s.tx["start_time_ns"])
        raise ReplayMismatch(f"{self.uri}: a timed transmission was asked for and no recording left has one")

    def set_dut_bypass(self, on: bool) -> None:
        self.bypassed, self._last = bool(on), None

    # ----- RX: the recordings, in order
    def _configure_rx(self, config: StreamConfig) -> StreamConfig:
        old = self._rx_config
        self._regain = self._regain or (old is not None and self._last is not None and old.freq_hz == config.freq_hz
                                        and old.sample_rate_hz == config.sample_rate_hz
                                        and old.gain_db != config.gain_db)
        return config

    def _tx_problem(self, s: _Saved) -> str | None:
        on = self.transmitting and self._tx_rms_dbfs is not None
        if not s.tx:
            return "the transmitter is on; the recording was taken with it off" if on else None
        if not on:
            return "the transmitter is off; the recording was taken with it on"
        cfg = self.tx_config
        if abs(cfg.freq_hz - float(s.tx["freq_hz"])) > 1.0:
            return f"TX at {cfg.freq_hz / 1e6:.6g} MHz"
        if abs(cfg.gain_db - float(s.tx["tx_gain_db"])) > TX_TOLERANCE_DB:
            return f"TX gain {cfg.gain_db:g} dB"
        if abs(self._tx_rms_dbfs - float(s.tx["digital_rms_dbfs"])) > 1e-3:
            return f"TX digital level {self._tx_rms_dbfs:.3f} dBFS"
        return None

    def _mismatch(self, s: _Saved, n_samples: int) -> str | None:
        """How the radio's state and this request differ from recording ``s`` (None: it is that capture)."""
        cfg = self._rx_config
        why = []
        if abs(s.recording.freq_hz - cfg.freq_hz) > 1.0:
            why.append(f"LO {cfg.freq_hz / 1e6:.6g} MHz")
        if abs(s.recording.sample_rate_hz - cfg.sample_rate_hz) > 1e-6 * cfg.sample_rate_hz:
            why.append(f"rate {cfg.sample_rate_hz / 1e6:.6g} MS/s")
        if s.n != n_samples:
            why.append(f"{n_samples} samples")
        if why:
            return f"the capture asked for ({', '.join(why)}) was not recorded"
        problem = self._tx_problem(s)
        if problem is None and bool(s.meta.get("dut_bypassed")) != self.bypassed:
            problem = "the DUT is bypassed" if self.bypassed else "the DUT is in place"
        return problem

    def _capture(self, n_samples: int, timeout_s: float) -> Capture:
        cfg = self._rx_config
        if self._regain and self._last is not None and self._mismatch(self.saved[self._last], n_samples) is None:
            k = self._last  # the harness changed only the RX gain (autorange): the same capture again
        else:
            left = [j for j, s in enumerate(self.saved) if not self.served[j]]
            if not left:
                raise ReplayMismatch(f"{self.uri}: a capture of {n_samples} samples at LO {cfg.freq_hz / 1e6:.6g} "
                                     f"MHz was asked for after all {len(self.saved)} recordings were served")
            # the first recording not yet served that is this capture, in the order they were taken
            k = next((j for j in left if self._mismatch(self.saved[j], n_samples) is None), None)
            if k is None:
                self.captures_refused += 1
                same = next((j for j in left if self.saved[j].n == n_samples
                             and abs(self.saved[j].recording.freq_hz - cfg.freq_hz) <= 1.0), left[0])
                s = self.saved[same]
                raise ReplayMismatch(f"{self.uri}: {self._mismatch(s, n_samples)}; the next recording is "
                                     f"{s.describe()}")
        s = self.saved[k]
        self.served[k], self._last, self._regain = True, k, False
        m = s.meta
        gain = float(m["rx_gain_db"]) if m.get("rx_gain_db") is not None else cfg.gain_db
        bw = float(m["rf_bandwidth_hz"]) if m.get("rf_bandwidth_hz") is not None else cfg.rf_bandwidth_hz
        served = StreamConfig(freq_hz=s.recording.freq_hz, sample_rate_hz=s.recording.sample_rate_hz, gain_db=gain,
                              rf_bandwidth_hz=bw, channel=cfg.channel)
        extra = dict(m.get("extra") or {})
        meta = CaptureMeta(config=served, timestamp=m.get("timestamp_s") if m.get("timestamp_s") is not None
                           else self.now(), n_samples=n_samples,
                           time_ns=None if m.get("rx_time_ns") is None else int(m["rx_time_ns"]),
                           overflow=bool(m.get("overflow")), dropped_samples=int(m.get("dropped_samples") or 0),
                           overload=bool(m.get("overload")), clipped_samples=int(m.get("clipped_samples") or 0),
                           extra=extra)
        return Capture(samples=s.recording.samples.copy(), meta=meta)

    def _capture_channels(self, n_samples, channels, gains_db, timeout_s):
        raise CapabilityError(f"{self.uri}: a replay serves one channel's recordings")

    @property
    def unserved(self) -> list[str]:
        """The recordings not served (yet)."""
        return [s.recording.path.name for k, s in enumerate(self.saved) if not self.served[k]]


def open_run_replay(uri: str, rest: str, **options) -> Radio:
    """``replay:RUN_DIR`` (a run directory with saved captures, or its ``captures/`` folder)."""
    return RunReplayRadio(uri, load_saved(uri_path(uri, rest, options,
                                                   "the run directory, e.g. replay:runs/amplifier_lte-SN1")))

__all__ = ["ReplayMismatch", "RunReplayRadio", "load_saved", "open_run_replay"]
