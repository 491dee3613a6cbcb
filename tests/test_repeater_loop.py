"""The repeater's compiled feedback loop against the same loop written out directly, one sample at a time.

The compiled loop runs the feedback FIR as a partitioned FFT convolution in
single precision; the reference here is the textbook recursion in double
precision (a dot product with the feedback taps per sample, the output stage
from the amplifier's am_am / am_pm_rad, the ALC updated per block as the
model's docstring states, the frequency error as a continuous carrier). The
two agree to within rounding: 1e-5 of the output's RMS (-100 dB), where the
single-precision history rounds near -140 dB; a wrong tap, delay, block or
carrier phase shows as an error of order 1.
"""

import math

import numpy as np
import pytest

from devices.sim.repeater import Repeater

FS = 30.72e6
LOW, HIGH = 2137.6e6, 2142.6e6
FC = 0.5 * (LOW + HIGH)
SIZES = (1, 700, 1500, 63, 1736)  # consecutive calls: history and partial chunks at every boundary


def reference(rep: Repeater, x: np.ndarray) -> np.ndarray:
    """Direct loop: y[t] = PA(g_alc (c_fwd v[t - m_fwd] + c_fwd g_fb sum_k h_f[k] y[t - m_loop - k])) * LO(t)."""
    d = rep._make_design(FC, FS)
    v = np.convolve(x, d.h_x)[:x.size]  # the channel filter on the (noiseless) input, zero history
    wx = np.concatenate((np.zeros(d.m_fwd), v))[:x.size] * d.c_fwd
    kfb = d.c_fwd * d.g_fb
    pa = rep._pa
    alc = rep.rated_output_power_dbm is not None
    # ALC blocks: at most tau/64 (at least 32 samples, at most 4096), at most the loop latency with feedback
    block = 4096
    if alc:
        block = int(max(32, min(block, rep.alc_time_constant_s * FS / 64)))
        tau_i = (1 - math.sqrt(1 - 4 / 8)) / (2 / 8) * rep.alc_time_constant_s * FS
        tau_d = tau_i / 8
        rated_mw = 10 ** (rep.rated_output_power_dbm / 10)
    if d.h_f is not None:
        block = min(block, d.m_loop)
    taps = 0 if d.h_f is None else d.h_f.size
    y = np.zeros(x.size, dtype=np.complex128)
    alc_db, det_mw = 0.0, 0.0
    start = 0
    for size in SIZES:  # blocks restart with each call, as the model's do
        end = min(start + size, x.size)
        for b0 in range(start, end, block):
            b1 = min(b0 + block, end)
            g = 10 ** (alc_db / 20) if alc else 1.0
            for t in range(b0, b1):
                w = wx[t]
                if taps:
                    k = np.arange(taps)
                    idx = t - d.m_loop - k
                    ok = idx >= 0
                    w += kfb * np.dot(d.h_f[ok], y[idx[ok]])
                w *= g
                r = abs(w)
                out = (w / r if r else 0.0) * pa.am_am(r) * np.exp(1j * pa.am_pm_rad(r))
                y[t] = out * np.exp(2j * np.pi * ((d.shift_hz / FS * t) % 1.0))
            if alc:
                m = b1 - b0
                det_mw += min(1.0, m / tau_d) * (np.mean(np.abs(y[b0:b1]) ** 2) - det_mw)
                err_db = 10 * math.log10(max(det_mw, 1e-30) / rated_mw)
                alc_db = min(0.0, alc_db - min(0.5, m / tau_i) * err_db)
        start = end
    return y


CASES = {
    "stable 20 dB margin, ALC, frequency error": dict(isolation_db=100.0, freq_error_ppm=0.05),
    "3 dB margin, no ALC": dict(isolation_db=83.0, rated_output_power_dbm=None),
    "unstable, Rapp p = 1 with AM/PM, ALC": dict(isolation_db=77.0, smoothness=1.0, am_pm_alpha_deg=8.0,
                                                 am_pm_beta=0.3, output_saturation_power_dbm=45.0),
    "short latency (3 samples)": dict(isolation_db=90.0, delay_s=0.1e-6, feedback_delay_s=5e-9),
    "ALC without feedback, p = 3": dict(smoothness=3.0),
}


@pytest.mark.parametrize("name", list(CASES))
def test_compiled_loop_equals_the_direct_recursion(name):
    rep = Repeater(passband_low_hz=LOW, passband_high_hz=HIGH, noise_figure_db=None, **CASES[name])
    n = sum(SIZES)
    t = np.arange(n)
    rng = np.random.default_rng(5)
    # two in-band tones near rated input plus a weak out-of-band one, driving the output stage
    x = 10 ** (-40 / 20) * (np.exp(2j * np.pi * (0.7e6 * t / FS + rng.random()))
                            + 0.5 * np.exp(2j * np.pi * (-1.9e6 * t / FS + rng.random()))
                            + 0.01 * np.exp(2j * np.pi * 6e6 * t / FS))
    parts, i = [], 0
    for size in SIZES:
        parts.append(rep.process(x[i:i + size], FC, FS, np.random.default_rng(0)))
        i += size
    got = np.concatenate(parts)
    want = reference(rep, x)
    rms = math.sqrt(np.mean(np.abs(want) ** 2))
    assert rms > 1.0  # a real output (tens of dBm), not a silent loop
    assert np.max(np.abs(got - want)) < 1e-5 * rms


@pytest.mark.parametrize("name", ["stable 20 dB margin, ALC, frequency error", "ALC without feedback, p = 3"])
def test_a_long_block_in_steps_is_one_loop_call(monkeypatch, name):
    """A long block runs the loop in steps on one core while the input filter's next chunk is prepared on the
    other: bit for bit what the input, then one loop call over the whole block gives (state carried in from a
    previous block, input noise on)."""
    from devices.sim import repeater as rmod

    def run(pipeline_chunks):
        monkeypatch.setattr(rmod, "_PIPELINE_CHUNKS", pipeline_chunks)
        rep = Repeater(passband_low_hz=LOW, passband_high_hz=HIGH, **CASES[name])
        rng = np.random.default_rng(7)
        out = []
        for n in (3000, 500_000, 70_001, 300_000):
            t = np.arange(n)
            x = 10 ** (-40 / 20) * np.exp(2j * np.pi * (0.7e6 * t / FS + rng.random())) + 1e-6 * rng.standard_normal(n)
            out.append(rep.process(x.astype(np.complex64), FC, FS, rng))
        return out

    steps, whole = run(2), run(1 << 30)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(steps, whole))
    assert np.sqrt(np.mean(np.abs(steps[1]) ** 2)) > 1.0  # a real output


def test_the_path_after_runs_beside_the_loop():
    """process(..., after=path) gives what path.apply gives on the repeater's output, bit for bit, and leaves
    the repeater in the same state (the next block's output the same too)."""
    from devices.paths import Amplifier, Attenuator, Cable, Path

    linear = Path([Attenuator(60.4), Cable(1.2, slope_db_per_ghz=0.5, ref_freq_hz=2e9, delay_s=4e-9)])
    amplified = Path([Amplifier(20.0, output_p1db_dbm=30.0, noise_figure_db=5.0), Attenuator(3.0)])
    for path in (linear, amplified):
        a = Repeater(passband_low_hz=LOW, passband_high_hz=HIGH, **CASES["stable 20 dB margin, ALC, frequency error"])
        b = Repeater(passband_low_hz=LOW, passband_high_hz=HIGH, **CASES["stable 20 dB margin, ALC, frequency error"])
        ra, rb = np.random.default_rng(3), np.random.default_rng(3)
        for n in (400_000, 5000, 300_000):
            t = np.arange(n)
            x = (10 ** (-40 / 20) * np.exp(2j * np.pi * 0.7e6 * t / FS)).astype(np.complex64)
            got = a.process(x, FC, FS, ra, after=path)
            want = path.apply(b.process(x, FC, FS, rb), FC, FS, rb, single=True)
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
