"""Repeater DUT model: measured through process() against the model's design truth.

The measurements here (CW correlation, cross-correlation, phase slope,
multitone response, spectra) are written in the test, independent of the
harness' DSP.
"""

import math

import numpy as np
import pytest

from devices.radio import StreamConfig
from devices.sim import Attenuator, Path, SimBench, SimConfig
from devices.sim.dut import DUT_MODELS
from devices.sim.paths import KT0_DBM_HZ
from devices.sim.repeater import Repeater, UplinkRepeater

FS = 30.72e6
LOW, HIGH = 2137.6e6, 2142.6e6  # one UTRA band 1 DL channel
FC = 0.5 * (LOW + HIGH)


def repeater(**kw) -> Repeater:
    base = dict(passband_low_hz=LOW, passband_high_hz=HIGH, noise_figure_db=None, rated_output_power_dbm=None)
    return Repeater(**{**base, **kw})


def cw(f_bb_hz: float, n: int, power_dbm: float, start: int = 0) -> np.ndarray:
    t = np.arange(start, start + n)
    return math.sqrt(10 ** (power_dbm / 10)) * np.exp(2j * np.pi * f_bb_hz * t / FS)


def tone_gain_db(rep: Repeater, freq_hz: float, n: int = 8192, settle: int = 2048) -> float:
    """Gain at ``freq_hz``: correlate the steady-state output with the input CW."""
    rep.reset()
    x = cw(freq_hz - FC, n, -70.0)
    y = rep.process(x, FC, FS, np.random.default_rng(1))
    a = np.vdot(x[settle:], y[settle:]) / np.vdot(x[settle:], x[settle:])
    return 20 * math.log10(abs(a))


def power_dbm(x) -> float:
    return 10 * math.log10(np.mean(np.abs(x) ** 2))


# ----- filter and gain ------------------------------------------------------------
OOB_OFFSETS_HZ = [0.2e6, 0.5e6, 1e6, 3e6, 5e6, 7e6, 10e6, 12e6]


def test_in_band_and_out_of_band_gain_match_the_filter_design():
    rep = repeater(gain_db=80.0, stopband_rejection_db=60.0, transition_hz=0.2e6)
    truth = rep.truth(FC, FS)
    assert truth["gain_db"] == pytest.approx(80.0, abs=1e-6)
    # In band: flat to the Kaiser ripple; measured equals gain_at.
    for f in np.linspace(LOW, HIGH, 9):
        g = tone_gain_db(rep, f)
        assert g == pytest.approx(rep.gain_at(f, FC, FS), abs=0.01)
        assert abs(g - 80.0) < 0.05
    # Out of band, both sides: measured equals gain_at, and the design meets its
    # rejection beyond the skirt (and 36.106 Table 8.1-1 for an 80 dB repeater).
    limits = [(0.2e6, 1e6, 60.0), (1e6, 5e6, 45.0), (5e6, 10e6, 45.0), (10e6, 1e9, 35.0)]
    for off in OOB_OFFSETS_HZ:
        for f in (HIGH + off, LOW - off):
            g = tone_gain_db(rep, f)
            assert g == pytest.approx(rep.gain_at(f, FC, FS), abs=0.05), (off, f)
            assert g <= 80.0 - 60.0 + 0.5
            limit = next(lim for lo, hi, lim in limits if lo <= off < hi)
            assert g <= limit
    # The skirt: half way through it, the gain has fallen, but not to the stop band.
    assert 80.0 - 60.0 < rep.gain_at(HIGH + 0.1e6, FC, FS) < 80.0 - 3.0


def test_wide_filter_fails_the_close_out_of_band_limit():
    rep = repeater(gain_db=80.0, stopband_rejection_db=40.0, transition_hz=2e6)
    g = tone_gain_db(rep, HIGH + 0.5e6)
    assert g == pytest.approx(rep.gain_at(HIGH + 0.5e6, FC, FS), abs=0.05)
    assert g > 60.0  # above the 0.2-1 MHz limit
    assert tone_gain_db(rep, HIGH + 3e6) <= 80.0 - 40.0 + 0.5


# ----- ALC ---------------------------------------------------------------------------
def test_alc_holds_rated_power_and_settles_with_its_time_constant():
    tau = 0.2e-3
    rep = repeater(gain_db=80.0, rated_output_power_dbm=37.0, alc_time_constant_s=tau,
                   output_saturation_power_dbm=55.0)
    n = int(round(12 * tau * FS))
    win = 256
    for extra_db in (0.0, 10.0):
        rep.reset()
        y = rep.process(cw(0.3e6, n, 37.0 - 80.0 + extra_db), FC, FS, np.random.default_rng(0))
        assert power_dbm(y[-n // 4:]) == pytest.approx(37.0, abs=0.5 if extra_db else 0.1)
    # A 6 dB step from the settled state: the excess decays as exp(-t/tau).
    y = rep.process(cw(0.3e6, n, 37.0 - 80.0 + 16.0), FC, FS, np.random.default_rng(0))
    lag = 1024  # the step reaches the output after the filter and delay
    p = np.array([power_dbm(y[i:i + win]) for i in range(lag, n - win, win)]) - 37.0
    t = (np.arange(p.size) + 0.5) * win / FS
    assert 5.0 < p[0] < 6.05
    sel = (p < 3.0) & (p > 0.2)
    slope = np.polyfit(t[sel], np.log(p[sel]), 1)[0]
    assert -1 / slope == pytest.approx(tau, rel=0.1)
    assert abs(p[-1]) < 0.1


# ----- delay and frequency ---------------------------------------------------------------
def test_cross_correlation_delay_matches_the_design_delay():
    rep = repeater(delay_s=2.3456e-6)
    truth = rep.truth(FC, FS)
    assert truth["delay_s"] == pytest.approx(rep.filter_length_s / 2 + 2.3456e-6, abs=1e-11)
    # Band-limited cyclic noise inside the flat pass band (+-2 MHz).
    n = 16384
    rng = np.random.default_rng(5)
    spec = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    spec[np.abs(np.fft.fftfreq(n, 1 / FS)) > 2e6] = 0
    x = np.fft.ifft(spec)
    x *= math.sqrt(1e-7 / np.mean(np.abs(x) ** 2))
    y = rep.process(np.tile(x, 3), FC, FS, rng)[2 * n:]  # cyclic steady state
    # Circular cross-correlation, peak refined on a 1/256-sample grid by direct DFT sums.
    c = np.fft.fft(y) * np.conj(np.fft.fft(x))
    k0 = int(np.argmax(np.abs(np.fft.ifft(c))))
    k = np.fft.fftfreq(n, 1 / n)
    grid = k0 + np.linspace(-0.5, 0.5, 257)
    r = np.abs(np.exp(2j * np.pi * np.outer(grid, k) / n) @ c)
    delay_s = grid[np.argmax(r)] / FS
    assert delay_s == pytest.approx(truth["delay_s"], abs=1e-9)


def test_frequency_error_is_a_continuous_phase_slope():
    ppm = 0.05
    rep = repeater(freq_error_ppm=ppm)
    n, settle, f_bb = 65536, 2048, 0.4e6
    rng = np.random.default_rng(0)
    x = cw(f_bb, 2 * n, -70.0)
    # Two calls: the output phase must run on across the boundary.
    y = np.concatenate([rep.process(x[:n], FC, FS, rng), rep.process(x[n:], FC, FS, rng)])
    ph = np.unwrap(np.angle(y[settle:] * np.conj(x[settle:])))
    t = np.arange(settle, 2 * n) / FS
    fit = np.polyfit(t, ph, 1)
    assert fit[0] / (2 * np.pi) == pytest.approx(ppm * 1e-6 * FC, abs=0.05)
    assert np.max(np.abs(ph - np.polyval(fit, t))) < 1e-3
    assert rep.truth()["freq_error_hz"] == pytest.approx(ppm * 1e-6 * FC)


def test_state_carries_across_calls():
    """Chunked processing equals one call: filter, delay line and feedback keep their state."""
    x = cw(0.7e6, 20000, -65.0) + cw(-1.3e6, 20000, -68.0)
    for kw in (dict(), dict(isolation_db=84.0, feedback_delay_s=70e-9)):
        whole = repeater(**kw).process(x, FC, FS, np.random.default_rng(0))
        rep = repeater(**kw)
        parts, i = [], 0
        for size in (1, 777, 5000, 3333, 10889):
            parts.append(rep.process(x[i:i + size], FC, FS, np.random.default_rng(0)))
            i += size
        # the input filter runs in single precision (rounding ~1e-7 of full scale); lost state would be O(1)
        assert np.allclose(np.concatenate(parts), whole, rtol=0, atol=1e-6 * np.max(np.abs(whole)))


# ----- feedback --------------------------------------------------------------------------
def multitone_response_db(rep: Repeater, spacing_hz: float = 10e3, half_bw_hz: float = 2.45e6,
                          periods: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Small-signal gain (dB) at tones spaced ``spacing_hz`` across the band, from the steady state."""
    period = int(round(FS / spacing_hz))
    k = np.arange(-int(half_bw_hz / spacing_hz), int(half_bw_hz / spacing_hz) + 1)
    rng = np.random.default_rng(3)
    spec = np.zeros(period, dtype=np.complex128)
    spec[k % period] = np.exp(2j * np.pi * rng.random(k.size))
    x = np.fft.ifft(spec)
    x *= math.sqrt(10 ** (-75 / 10) / np.mean(np.abs(x) ** 2))
    y = rep.process(np.tile(x, periods), FC, FS, rng)
    ys = np.fft.fft(y[-2 * period:].reshape(2, period).mean(axis=0))
    xs = np.fft.fft(x)
    return FC + k * spacing_hz, 20 * np.log10(np.abs(ys[k % period] / xs[k % period]))


@pytest.mark.parametrize("margin_db", [20.0, 3.0])
def test_feedback_ripple_matches_the_closed_loop_formula(margin_db):
    rep = repeater(gain_db=80.0, isolation_db=80.0 + margin_db, feedback_delay_s=60e-9)
    truth = rep.truth(FC, FS)
    assert truth["isolation_margin_db"] == margin_db and not truth["loop_unstable"]
    f, g = multitone_response_db(rep)
    formula = rep.closed_loop_gain_db(f, FC, FS)
    assert np.max(np.abs(g - formula)) < 0.05
    # Ripple height and period from first principles: 1/(1 -+ |L|), period 1/loop delay.
    lmag = 10 ** (-margin_db / 20)
    ripple = np.max(g) - np.min(g)
    assert ripple == pytest.approx(20 * math.log10((1 + lmag) / (1 - lmag)), abs=0.15)
    peaks = f[1:-1][(g[1:-1] > g[:-2]) & (g[1:-1] >= g[2:])]
    assert np.median(np.diff(peaks)) == pytest.approx(1 / truth["loop_delay_s"], rel=0.12)
    if margin_db >= 20:
        assert ripple < 2.0


def test_stable_loop_does_not_oscillate():
    rep = repeater(gain_db=80.0, isolation_db=100.0, noise_figure_db=6.0, rated_output_power_dbm=37.0)
    rng = np.random.default_rng(0)
    for _ in range(2):
        y = rep.process(np.zeros(32768), FC, FS, rng)
    # Output = input-referred thermal noise through the closed loop, integrated over the band.
    f = FC + np.fft.fftshift(np.fft.fftfreq(4096, 1 / FS))
    n_out_mw = np.sum(10 ** ((KT0_DBM_HZ + 6.0 + rep.closed_loop_gain_db(f, FC, FS)) / 10)) * FS / f.size
    assert power_dbm(y[4096:]) == pytest.approx(10 * math.log10(n_out_mw), abs=0.3)
    assert power_dbm(y[4096:]) < 37.0 - 30.0


def unstable(rated_dbm):
    return repeater(gain_db=80.0, isolation_db=77.0, feedback_delay_s=60e-9, noise_figure_db=6.0,
                    output_saturation_power_dbm=45.0, rated_output_power_dbm=rated_dbm, alc_time_constant_s=1e-3)


def test_unstable_loop_oscillates_from_noise_at_loop_modes():
    psat = 45.0
    rep = unstable(None)
    truth = rep.truth(FC, FS)
    assert truth["loop_unstable"] and truth["max_loop_gain_db"] == pytest.approx(3.0, abs=0.05)
    rng = np.random.default_rng(0)
    n = 16384
    y = np.concatenate([rep.process(np.zeros(n), FC, FS, rng) for _ in range(2)])
    p = np.array([power_dbm(y[i:i + 512]) for i in range(0, y.size, 512)])
    assert p[2] < 0.0  # starts from the noise (about -20 dBm at the output)
    grow = int(np.argmax(p > psat - 3.0))
    assert grow > 4 and np.all(np.diff(p[2:grow]) > 0)  # a steady rise, ~3 dB per loop round trip
    assert psat - 2.0 < np.max(p) <= psat  # limited by the output stage
    y = rep.process(np.zeros(n), FC, FS, rng)
    assert psat - 2.0 < power_dbm(y) <= psat
    # The strongest lines sit where the loop phase is 0 mod 2 pi (and |L| > 1), in the pass band.
    s = np.abs(np.fft.fft(y * np.hanning(n))) ** 2
    f_bb = np.fft.fftfreq(n, 1 / FS)
    peaks = [k for k in np.argsort(s)[::-1][:40] if s[k] >= s[k - 1] and s[k] >= s[(k + 1) % n]][:4]
    assert 10 * np.log10(np.sum(s[peaks]) / np.sum(s)) > -10.0  # a few lines carry the power
    for k in peaks:
        # Parabolic interpolation of the log spectrum around the line.
        a, b, c = np.log(s[k - 1]), np.log(s[k]), np.log(s[(k + 1) % n])
        f_line = FC + f_bb[k] + 0.5 * (a - c) / (a - 2 * b + c) * FS / n
        loop = rep.loop_gain(f_line, FC, FS)
        assert LOW < f_line < HIGH
        assert abs(np.angle(loop)) < 0.1 and abs(loop) > 1.0


def test_alc_limits_an_oscillating_repeater():
    rng, rng2 = np.random.default_rng(0), np.random.default_rng(0)
    free, held = unstable(None), unstable(37.0)
    n = 16384
    p_free = p_held = 0.0
    for i in range(20):
        a, b = free.process(np.zeros(n), FC, FS, rng), held.process(np.zeros(n), FC, FS, rng2)
        if i >= 8:
            p_free += np.mean(np.abs(a) ** 2)
            p_held += np.mean(np.abs(b) ** 2)
    # The ALC pulls the mean output well below the output stage limit (it hunts around rated power).
    assert 10 * math.log10(p_held / p_free) < -2.0
    assert 37.0 - 3.0 < 10 * math.log10(p_held / 12) < 37.0 + 4.0
    assert held._alc_db < -1.0


# ----- bench bypass ---------------------------------------------------------------------
def test_bench_bypass_sends_the_signal_through_the_thru_and_leaves_the_dut_alone():
    rep = Repeater(passband_low_hz=LOW, passband_high_hz=HIGH, noise_figure_db=6.0)
    bench = SimBench(SimConfig(seed=3), Path([Attenuator(10.0)]), rep, Path([Attenuator(20.0)]))
    bench.set_tx(StreamConfig(FC, FS, -20.0))
    bench.set_rx(StreamConfig(FC, FS, 20.0))
    n = 8192
    t = np.arange(n)
    bench.start_tx(np.exp(2j * np.pi * 0.5e6 * t / FS), cyclic=True)
    assert bench.bypass_dut is False
    bench.read(n)  # through the repeater: 80 dB gain drives the receiver into clipping
    _, clipped = bench.read(n)
    assert clipped > 0
    state = (rep._u_hist.copy(), rep._v_hist.copy(), rep._alc_db, rep._lo_cycles)
    bench.bypass_dut = True
    x, clipped = bench.read(n)
    assert clipped == 0
    # Full-scale CW at TX gain -20 dB: 5 - 20 dBm, minus the paths' 30 dB; RX full scale -10 - 20 dBm.
    expected_dbm = SimConfig().tx.full_scale_dbm - 20.0 - 30.0
    measured_dbm = power_dbm(x) + (SimConfig().rx.full_scale_dbm - 20.0)
    assert measured_dbm == pytest.approx(expected_dbm, abs=0.05)
    assert np.array_equal(rep._u_hist, state[0]) and np.array_equal(rep._v_hist, state[1])
    assert (rep._alc_db, rep._lo_cycles) == state[2:]


def test_bench_reads_through_the_repeater_are_settled_and_have_its_gain():
    """The bench's lead-in covers the repeater's memory (settle_s): no transient at the start of a read."""
    rep = Repeater(passband_low_hz=LOW, passband_high_hz=HIGH, noise_figure_db=6.0)
    bench = SimBench(SimConfig(seed=4), Path([Attenuator(10.0)]), rep, Path([Attenuator(60.0)]))
    bench.set_tx(StreamConfig(FC, FS, -60.0))
    bench.set_rx(StreamConfig(FC, FS, 20.0))
    n = 8192
    f_bb = 128 * FS / n  # whole cycles per period: a seamless cyclic CW
    bench.start_tx(np.exp(2j * np.pi * f_bb * np.arange(n) / FS), cyclic=True)
    for _ in range(3):
        x, clipped = bench.read(n)
        assert clipped == 0
        head, rest = power_dbm(x[:512]), power_dbm(x[512:])
        assert head == pytest.approx(rest, abs=0.1)
        expected = SimConfig().tx.full_scale_dbm - 60.0 - 10.0 + rep.gain_at(FC + f_bb, FC, FS) - 60.0
        assert rest + SimConfig().rx.full_scale_dbm - 20.0 == pytest.approx(expected, abs=0.1)


# ----- model plumbing ---------------------------------------------------------------------
def test_registered_downlink_and_uplink_models():
    assert DUT_MODELS["repeater"] is Repeater and DUT_MODELS["repeater_uplink"] is UplinkRepeater
    dl = Repeater(passband_low_hz=2137.6e6, passband_high_hz=2142.6e6)
    ul = UplinkRepeater(passband_low_hz=1947.6e6, passband_high_hz=1952.6e6)
    assert (dl.link, ul.link) == ("downlink", "uplink")
    assert ul.gain_db > dl.gain_db and ul.rated_output_power_dbm < dl.rated_output_power_dbm
    assert ul.noise_figure_db < dl.noise_figure_db


@pytest.mark.parametrize("bad, match", [
    (dict(passband_high_hz=2137.0e6), "passband"),
    (dict(transition_hz=0.0), "transition_hz"),
    (dict(stopband_rejection_db=10.0), "stopband_rejection_db"),
    (dict(delay_s=-1e-6), "delay_s"),
    (dict(alc_time_constant_s=0.0), "alc_time_constant_s"),
    (dict(smoothness=0.1), "smoothness"),
    (dict(isolation_db=float("nan")), "isolation_db"),
])
def test_invalid_parameters_are_rejected(bad, match):
    with pytest.raises(ValueError, match=match):
        repeater(**bad)


def test_loop_without_latency_and_band_outside_the_simulation_are_rejected():
    rep = repeater(delay_s=0.0, feedback_delay_s=10e-9, isolation_db=90.0)
    with pytest.raises(ValueError, match="latency"):
        rep.process(np.zeros(16), FC, FS, np.random.default_rng(0))
    with pytest.raises(ValueError, match="does not fit"):
        repeater().process(np.zeros(16), FC + 20e6, FS, np.random.default_rng(0))
