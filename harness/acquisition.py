"""Acquisition: drive the rig through a step's declared captures and collect their records.

The only code that plays and captures for a plan step. It runs exactly the
declared :class:`~harness.capture.Acquisition` list, in order: tune where the
LO or rate changes, play the stimulus at its level (or stop the
transmitter; a capture that ``requires`` timing is played at a commanded
hardware time, or captured with the rig's reference channel as a second
record), let the DUT settle (captured and discarded: on hardware it takes
that long, and a simulated DUT lives through the same samples), then take
the capture that becomes a record. An adaptive sweep may stop before its
optional captures; it can never take one it did not declare.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from harness.capture import Acquisition, CaptureRecord
from harness.rig import Rig

#: settle captures are taken in chunks of at most this many samples
SETTLE_CHUNK = 1 << 20


@dataclass
class StepContext:
    """What an acquisition gets: the open rig and a progress callback."""

    rig: Rig
    progress: Callable[[int, int], None] = lambda done, total: None


def settle(rig: Rig, seconds: float, sample_rate_hz: float) -> None:
    """Let ``seconds`` of signal pass before measuring (ALC, AGC, thermal) by capturing and discarding it."""
    if getattr(rig.radio, "settles", True) is False:
        return  # a replayed run: its recordings were captured after settling; nothing passes in between
    remaining = int(round(seconds * sample_rate_hz))
    while remaining > 0:
        chunk = min(remaining, SETTLE_CHUNK)
        rig.settle(chunk)  # auto-ranged and checked as a capture; on a remote rig discarded on the server
        remaining -= chunk


def acquire(ctx: StepContext, acquisitions: list[Acquisition],
            done: Callable[[list[CaptureRecord]], bool] | None = None) -> list[CaptureRecord]:
    """Take ``acquisitions`` in order and return their records; the transmitter is off afterwards.

    ``done(records)`` is asked after each capture whose successor is optional;
    True ends the acquisition there. A capture declared ``thru`` is taken with the DUT bypassed (the
    transmitter stopped while switching); the bypass is as it was found afterwards.
    """
    rig = ctx.rig
    records: list[CaptureRecord] = []
    tuned: tuple[float, float, float] | None = None
    bypassed = rig.dut_bypassed  # a thru step's runner has bypassed the DUT already
    try:
        for i, a in enumerate(acquisitions):
            if a.thru != rig.dut_bypassed:  # a thru capture within a DUT step (an input reference): switch cold
                rig.stop()
                rig.bypass_dut(a.thru)
            if tuned != (a.freq_hz, a.sample_rate_hz, a.span_hz):
                rig.tune(a.freq_hz, a.sample_rate_hz, a.span_hz)
                tuned = (a.freq_hz, a.sample_rate_hz, a.span_hz)
            timed = "timing" in a.requires
            if a.stimulus is None:
                rig.stop()
            else:
                rig.play(a.stimulus.waveform(), a.power_dbm, **({"timed": True} if timed else {}))
            settle(rig, a.settle_s, a.sample_rate_hz)
            if timed and rig.timing_method() == "reference_channel":
                # the DUT output and, on the same clock, its input through the rig's splitter: two records
                records.extend(rig.capture_with_reference(a.n_samples, label=a.label))
            else:
                records.append(rig.capture(a.n_samples, label=a.label))
            ctx.progress(i + 1, len(acquisitions))
            nxt = acquisitions[i + 1] if i + 1 < len(acquisitions) else None
            if nxt is not None and nxt.optional and done is not None and done(records):
                break
    finally:
        rig.stop()
        if rig.dut_bypassed != bypassed:
            rig.bypass_dut(bypassed)
    return records


def run_measurement(ctx: StepContext, mtype: Any, params: Any, acquisitions: list[Acquisition]):
    """Acquire a step's declared captures, then analyse them: (records, StepData)."""
    done = None if mtype.done is None else (lambda recs: mtype.done(recs, params))
    records = acquire(ctx, acquisitions, done)
    return records, mtype.analyse(records, params)
