"""The fast paths compute what the plain numpy / scipy expressions they replaced compute: bit for bit where
they only fuse passes, to rounding where they change the arithmetic (single-precision FFT frames, series
for sines and cosines), and with the same statistics where they draw differently (table phase noise)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import signal

from devices.paths import Attenuator, Cable, Path, _gaussian_table, fir_frames, noise_draw, rapp_gain
from devices.sim.bench import SimBench, SimConfig
from devices.sim.dut import Thru
from devices.sim.kernels import (rapp_chain, rapp_span, rx_port, rx_port_span, tx_samples, tx_span, wiener_phase,
                                 wiener_phasor, wiener_table, wiener_walk)
from harness.capture import StimulusRef, _generate
from harness.dsp.obw import ccdf
from harness.dsp.spectrum import psd
from harness.stimulus import parse_stimulus


def _noise(rng, n):
    return (rng.standard_normal(n) + 1j * rng.standard_normal(n)) * 0.3


@pytest.mark.parametrize("n, nperseg", [(16384, 4096), (131072, 65536), (100001, 8192), (5000, 8192)])
def test_psd_is_welch(n, nperseg):
    rng = np.random.default_rng(n)
    x = _noise(rng, n) + np.exp(2j * np.pi * 0.1 * np.arange(n))
    f, p = signal.welch(x, fs=15.36e6, window="blackmanharris", nperseg=min(nperseg, n), noverlap=min(nperseg, n) // 2,
                        return_onesided=False, scaling="density", detrend=False)
    order = np.argsort(f)
    s = psd(x, 15.36e6, nperseg)
    assert s.freqs_hz.tobytes() == f[order].tobytes()
    assert s.psd_mw_hz.tobytes() == p[order].tobytes()


def test_psd_keeps_only_what_cannot_change():
    rng = np.random.default_rng(1)
    x = _noise(rng, 32768)
    x.setflags(write=False)
    a, b = psd(x, 1e6), psd(x, 1e6)
    assert a is not b and np.array_equal(a.psd_mw_hz, b.psd_mw_hz)
    with pytest.raises(ValueError):
        a.psd_mw_hz[0] = 0.0  # shared with the cache: read-only
    y = x.copy()  # writeable: never served from the cache
    y[:100] = 0
    assert not np.array_equal(psd(y, 1e6).psd_mw_hz, a.psd_mw_hz)
    z = _noise(rng, 32768)
    z.setflags(write=False)
    assert not np.array_equal(psd(z, 1e6).psd_mw_hz, a.psd_mw_hz)


def test_ccdf_counts_are_numpy_histogram():
    rng = np.random.default_rng(2)
    x = _noise(rng, 200_000)
    x[:20] = 0  # below the first edge
    x[20:30] = np.sqrt(np.mean(np.abs(x) ** 2))  # near the first edge (the mean)
    r = ccdf(x)
    p = np.abs(x) ** 2
    counts, _ = np.histogram(p, bins=np.append(np.mean(p) * 10 ** (r.thresholds_db / 10), np.inf))
    assert np.array_equal(np.cumsum(counts[::-1])[::-1] / p.size, r.probability)


def _quantise(v, bits):
    scale = float(1 << (bits - 1))
    q = np.rint(v * scale)
    clipped = (q > scale - 1) | (q < -scale)
    np.clip(q, -scale, scale - 1, out=q)
    return q / scale, clipped


def test_tx_digital_is_the_numpy_chain():
    bench = SimBench(SimConfig(seed=3), None, Thru(), None)
    tx = bench.config.tx
    rng = np.random.default_rng(3)
    x = (_noise(rng, 50_000) * 2).astype(np.complex64)  # clips too
    x[:10] = 0
    xx = x.astype(np.complex128)
    gi, gq = 10 ** (-tx.iq_gain_imbalance_db / 40), 10 ** (tx.iq_gain_imbalance_db / 40)
    c = math.cos(math.radians(tx.iq_phase_imbalance_deg) / 2)
    s = math.sin(math.radians(tx.iq_phase_imbalance_deg) / 2)
    lo = 10 ** (tx.lo_leakage_dbfs / 20) * complex(math.cos(bench._lo_phase), math.sin(bench._lo_phase))
    iq, _ = _quantise(gi * (c * xx.real + s * xx.imag) + lo.real, tx.bits)
    qq, _ = _quantise(gq * (c * xx.imag + s * xx.real) + lo.imag, tx.bits)
    assert bench.tx_digital(x).tobytes() == (iq + 1j * qq).tobytes()


def _table_noise(draw, n):
    start, rot, conj = draw
    out = _gaussian_table()[start:start + n].astype(np.complex128)
    out *= rot
    return np.conj(out) if conj else out


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5, 6, 7])
def test_port_kernels_are_the_numpy_steps(seed):
    rng = np.random.default_rng(seed)
    n = 30_000
    draw = noise_draw(rng, n, 1e-3)
    # RX port: + noise, * gain, 12-bit ADC with clipping
    y = _noise(rng, n) * 3
    g = 0.7
    v = (y + _table_noise(draw, n)) * g
    i, ci = _quantise(v.real, 12)
    q, cq = _quantise(v.imag, 12)
    want = np.empty(n, dtype=np.complex64)
    want.real, want.imag = i, q
    got, clipped = rx_port(y, _gaussian_table(), *draw, g, 12)
    assert got.tobytes() == want.tobytes() and clipped == np.count_nonzero(ci | cq)
    # TX samples: cyclic waveform from a sample on, scaled, + noise
    wave = _noise(rng, 4096)
    first = int(rng.integers(0, 4096))
    x = np.tile(wave, -(-(first + n) // 4096))[first:first + n]
    x *= 0.3
    x += _table_noise(draw, n)
    assert tx_samples(wave, first, n, 0.3, _gaussian_table(), *draw).tobytes() == x.tobytes()
    # Wiener phase: phase + cumsum(steps), then the anchored phasor
    steps = rng.standard_normal(n) * 1e-4
    z, last = wiener_walk(steps, 0.25, 0.02, 4096)
    phi = 0.25 + np.cumsum(steps)
    assert z.tobytes() == wiener_phasor(phi, steps, 0.02, 4096).tobytes() and last == phi[-1]


@pytest.mark.parametrize("stimulus", [{"type": "lte", "bandwidth": 5e6, "power": -10},
                                      {"type": "two_tone", "power_per_tone": -10, "spacing": 1e6},
                                      {"type": "cw", "power": -10, "offset": 1e6}])
def test_a_stimulus_at_another_level_is_the_one_generated_there(stimulus):
    key = "power_per_tone" if "power_per_tone" in stimulus else "power"
    for level in (-10.0, -3.25, 7.5):
        spec = parse_stimulus({**stimulus, key: level}, "stimulus")
        w = _generate(StimulusRef.of(spec, 15.36e6, 4))
        fresh = spec.generate(15.36e6, 4)
        assert w.samples.tobytes() == fresh.samples.tobytes()
        assert (w.power_dbm, w.tones_hz, w.bandwidth_hz, w.center_offset_hz) == \
            (fresh.power_dbm, fresh.tones_hz, fresh.bandwidth_hz, fresh.center_offset_hz)


def test_wiener_table_is_the_walk_on_table_steps():
    """Phase noise: steps sqrt(2) sigma Re/Im(table) (the first spanning a gap), the anchored phasor, times x."""
    rng = np.random.default_rng(11)
    n, sigma, start = 50_000, 1.3e-4, 12345
    table = _gaussian_table()
    for imag in (False, True):
        x = _noise(rng, n)
        part = table[start:start + n].imag if imag else table[start:start + n].real
        steps = math.sqrt(2) * sigma * part.astype(np.float64)
        steps[0] *= 7.0
        phi = 0.4 + np.cumsum(steps)
        want = x * np.exp(1j * phi)
        got = x.copy()
        last = wiener_table(got, table, start, imag, sigma, 7.0, 0.4, 0.02, 4096)
        assert np.max(np.abs(got - want)) < 1e-9 and abs(last - phi[-1]) < 1e-9
    # the steps' statistics are those of fresh Gaussian draws: unit variance, white
    s = math.sqrt(2) * table.real.astype(np.float64)
    assert abs(np.var(s) - 1) < 5e-3 and abs(np.mean(s[1:] * s[:-1])) < 5e-3


def test_bench_phase_noise_has_its_wiener_variance():
    """The TX phase's increments over a lag grow as N0 * lag / fs, N0 from L(f) (a quiet, noiseless carrier)."""
    from devices.sim.bench import TxPortModel
    fs = 1e6
    tx = TxPortModel(noise_density_dbfs_hz=-300.0, lo_leakage_dbfs=-300.0, iq_gain_imbalance_db=0.0,
                     iq_phase_imbalance_deg=0.0, phase_noise_dbc_hz=-60.0, bits=24)
    bench = SimBench(SimConfig(seed=5, tx=tx), None, Thru(), None)
    from devices.radio import StreamConfig
    bench.set_tx(StreamConfig(1e9, fs, 0.0))
    bench.start_tx(np.full(1024, 0.5, dtype=np.complex64), cyclic=True)
    x = bench._tx_block(0, 1 << 18, fs)
    phi = np.unwrap(np.angle(x))
    n0 = tx.phase_noise_rad2_per_s()
    for lag in (1, 100, 1000):
        d = phi[lag:] - phi[:-lag]
        assert np.var(d) == pytest.approx(n0 * lag / fs, rel=0.1)


def test_fir_frames_is_the_convolution():
    rng = np.random.default_rng(12)
    h = _noise(rng, 557)
    x = _noise(rng, 70_001)
    hs = np.zeros(8192, dtype=np.complex128)
    hs[:h.size] = h
    got = fir_frames(x, np.fft.fft(hs).astype(np.complex64), h.size, h.size - 1)
    want = np.convolve(x, h)[:x.size]
    assert np.max(np.abs(got - want)) < 3e-6 * np.max(np.abs(want))
    # an offset shifts the input: y[t] = sum_k h[k] x[t + taps - 1 - offset - k]
    got = fir_frames(x, np.fft.fft(hs).astype(np.complex64), h.size, h.size - 1 + 40)
    assert np.max(np.abs(got[40:] - want[:-40])) < 3e-6 * np.max(np.abs(want))
    assert np.max(np.abs(got[:40])) < 3e-6 * np.max(np.abs(want))  # zeros before the block


def test_path_fir_is_the_elements_response_in_band():
    """A run of linear elements: their exact joint response (loss slope, delay, carrier phase) below 0.45 fs."""
    fs, fc, n = 30.72e6, 2.14e9, 1 << 15
    rng = np.random.default_rng(13)
    elems = [Cable(3.0, slope_db_per_ghz=4.0, delay_s=123.4e-9), Attenuator(6.0, delay_s=0.7e-9)]
    x = np.zeros(n, dtype=np.complex128)
    x[1024:-1024] = _noise(rng, n - 2048)
    y = Path(elems).apply(x, fc, fs, rng)
    f = np.fft.fftfreq(n, 1 / fs)
    h = np.ones(n, dtype=np.complex128)
    for e in elems:
        h *= e.response(fc + f)
    err = np.fft.fft(y - np.fft.ifft(np.fft.fft(x) * h))
    inband = np.abs(f) < 0.45 * fs
    assert np.mean(np.abs(err[inband]) ** 2) < 1e-11 * np.mean(np.abs(np.fft.fft(x)[inband]) ** 2)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_rapp_kernel_is_the_model(p):
    rng = np.random.default_rng(14)
    x = _noise(rng, 20_000) * 3
    x[:5] = [0, 1e-300, 1e30, 1e160, 1e300]
    k, g, alpha, beta = 1.7, 3.0, 0.2, 0.5
    u = k * np.abs(x)
    got = rapp_chain(x, g, k, p, alpha, beta)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        want = g * x * rapp_gain(u, p) * np.exp(1j * alpha * u ** 2 / (1 + beta * u ** 2))
    ok = np.isfinite(want)
    assert np.all(np.abs(got[ok] - want[ok]) <= 1e-13 * np.abs(want[ok]) + 1e-300)


# ----- parts of a block on several cores -------------------------------------------------------------------------

def _sim_amplifier_bench(seed: int = 1, phase_noise: bool = True):
    """The shipped amplifier rig's simulated bench (paths with a driver amplifier, a Rapp DUT with AM/PM)."""
    import dataclasses
    from pathlib import Path as FsPath

    from devices.radio import StreamConfig
    from devices.sim.driver import build_bench
    from harness.rig import load_rig

    spec = load_rig(FsPath(__file__).resolve().parents[1] / "testplans" / "rigs" / "sim-amplifier.yaml")
    options = {k: v for k, v in spec.radio_options(seed)[1].items() if k != "emulate"}
    if not phase_noise:
        sim = options["sim"]
        options["sim"] = dataclasses.replace(sim, tx=dataclasses.replace(sim.tx, phase_noise_dbc_hz=None))
    bench = build_bench(**options)
    bench.set_tx(StreamConfig(2.14e9, 30.72e6, -20.0))
    bench.set_rx(StreamConfig(2.14e9, 30.72e6, 0.0))
    n = np.arange(4096)
    bench.start_tx((0.5 * np.exp(2j * np.pi * n / 64)).astype(np.complex64), cyclic=True)
    return bench


@pytest.mark.parametrize("n, phase_noise", [(300_000, True), (1 << 20, True), (300_000, False)])
def test_a_block_in_parts_is_the_block_in_one(monkeypatch, n, phase_noise):
    """The bench's samples do not depend on how many cores share a block: parts start at phase-noise anchors
    (the phase before them is the same running sum), FIR chunks are fixed, the other stages act per sample."""
    from devices import workers

    def reads(parts):
        monkeypatch.setattr(workers, "cores", lambda: parts)
        monkeypatch.setattr(workers, "MIN_PART", 1 << 12)
        bench = _sim_amplifier_bench(phase_noise=phase_noise)
        return [bench.read(n)[0] for _ in range(2)]

    one = reads(1)
    for parts in (2, 3):
        for a, b in zip(one, reads(parts)):
            assert a.tobytes() == b.tobytes()


def test_rapp_span_is_noise_then_the_model_then_a_gain():
    rng = np.random.default_rng(21)
    n = 40_000
    table = _gaussian_table()
    x = _noise(rng, n) * 3
    draw = noise_draw(rng, n, 0.2)
    k, g, alpha, beta, post = 1.7, 3.0, 0.2, 0.5, 10 ** (-6.2 / 20)
    for p in (1.0, 2.0, 3.0):
        for a in (0.0, alpha):
            for xin in (x, x.astype(np.complex64)):
                vin = xin.astype(np.complex128) + _table_noise(draw, n)
                u_in = k * np.abs(vin)
                want_in = post * (g * vin * rapp_gain(u_in, p) * np.exp(1j * a * u_in ** 2 / (1 + beta * u_in ** 2)))
                y = np.empty(n, dtype=np.complex128)
                rapp_span(xin, y, 0, 17_000, table, *draw, True, g, k, p, a, beta, post)  # two parts
                rapp_span(xin, y, 17_000, n, table, *draw, True, g, k, p, a, beta, post)
                assert np.max(np.abs(y - want_in) / np.abs(want_in)) < 1e-13


def test_tx_span_is_the_waveform_noise_and_wiener_phase():
    """One pass: cyclic waveform, scaled, + table noise, times exp(j phi) of the table's Wiener walk; and its
    parts (each from the running phase before it) give the whole."""
    rng = np.random.default_rng(22)
    n, w, sigma, first_scale = 50_000, 4096, 2e-4, 3.0
    table = _gaussian_table()
    wave = _noise(rng, w)
    first = 1234
    draw = noise_draw(rng, n, 1e-3)
    pstart, imag = 777_777, True
    base = np.tile(wave, -(-(first + n) // w))[first:first + n] * 0.3 + _table_noise(draw, n)
    steps = math.sqrt(2) * sigma * table[pstart:pstart + n].imag.astype(np.float64)
    steps[0] *= first_scale
    phi = 0.7 + np.cumsum(steps)
    want = base * np.exp(1j * phi)
    whole = np.empty(n, dtype=np.complex128)
    last = tx_span(whole, wave, first, 0, n, 0.3, table, *draw, True, pstart, imag, sigma, first_scale, 0.7, 0.02, 4096)
    assert np.max(np.abs(whole - want)) < 1e-12 and abs(last - phi[-1]) < 1e-12
    parts = np.empty(n, dtype=np.complex128)
    for lo, hi in ((0, 8192), (8192, 40960), (40960, n)):
        ph = wiener_phase(table, pstart, imag, sigma, first_scale, 0.7, lo) if lo else 0.7
        end = tx_span(parts, wave, first, lo, hi, 0.3, table, *draw, True, pstart, imag, sigma, first_scale, ph,
                      0.02, 4096)
    assert parts.tobytes() == whole.tobytes() and end == last
    # into complex64 (for the TX filter's FIR, which rounds to it first): numpy's rounding of the whole
    single = np.empty(n, dtype=np.complex64)
    tx_span(single, wave, first, 0, n, 0.3, table, *draw, True, pstart, imag, sigma, first_scale, 0.7, 0.02, 4096)
    assert single.tobytes() == whole.astype(np.complex64).tobytes()
    # the phasor is exact where the walk strays beyond the series' reach from its anchor, too
    big = np.empty(n, dtype=np.complex128)
    tx_span(big, wave, first, 0, n, 0.3, table, *draw, True, pstart, imag, 0.01, first_scale, 0.7, 0.02, 4096)
    steps = math.sqrt(2) * 0.01 * table[pstart:pstart + n].imag.astype(np.float64)
    steps[0] *= first_scale
    assert np.max(np.abs(big - base * np.exp(1j * (0.7 + np.cumsum(steps))))) < 1e-11


def test_rx_port_in_parts_is_rx_port():
    rng = np.random.default_rng(23)
    n = 30_000
    draw = noise_draw(rng, n, 1e-3)
    y = _noise(rng, n) * 3
    want, clipped = rx_port(y, _gaussian_table(), *draw, 0.7, 12)
    for yin in (y, y.astype(np.complex64)):
        out = np.empty(n, dtype=np.complex64)
        c1 = rx_port_span(yin, 0, 10_000, _gaussian_table(), *draw, 0.7, 12, out)[1]
        c2 = rx_port_span(yin, 10_000, n, _gaussian_table(), *draw, 0.7, 12, out)[1]
        ref = rx_port(yin.astype(np.complex128), _gaussian_table(), *draw, 0.7, 12)
        assert out.tobytes() == ref[0].tobytes() and c1 + c2 == ref[1]
    assert clipped > 0


def test_path_amplifier_takes_the_flat_gain_after_it():
    """A flat run after a path amplifier rides in its pass: the same as the amplifier, then the gain."""
    from devices.paths import Amplifier
    fs, fc = 30.72e6, 2.14e9
    amp = Amplifier(30.3, output_p1db_dbm=40.0, noise_figure_db=4.0)
    x = _noise(np.random.default_rng(24), 100_000) * 0.05
    fused = Path([amp, Attenuator(6.2), Attenuator(0.5)]).apply(x, fc, fs, np.random.default_rng(5))
    y = amp.apply(x, fc, fs, np.random.default_rng(5))
    plain = y * 10 ** (-6.7 / 20)
    assert np.max(np.abs(fused - plain)) <= 1e-15 * np.max(np.abs(plain))


def test_workers_run_every_part_and_raise():
    from devices import workers
    seen = []
    assert workers.run(lambda lo, hi: seen.append((lo, hi)) or hi - lo, [(0, 5), (5, 9), (9, 20)]) == [5, 4, 11]
    assert sorted(seen) == [(0, 5), (5, 9), (9, 20)]

    def boom(lo, hi):
        if lo:
            raise ValueError("part failed")
        return 0

    with pytest.raises(ValueError, match="part failed"):
        workers.run(boom, [(0, 5), (5, 9)])
    parts = workers.spans(1 << 20, align=4096)
    assert len(parts) == min(workers.cores(), 16) and parts[0][0] == 0 and parts[-1][1] == 1 << 20
    assert all(a[1] == b[0] and b[0] % 4096 == 0 for a, b in zip(parts, parts[1:]))
    assert workers.spans(1000) == [(0, 1000)]  # a short block: one part


def test_benches_read_at_once_from_several_threads():
    """The emulator and the rig server drive benches from several threads: concurrent reads give what the same
    reads one after the other give."""
    import threading
    n = 200_000
    got = {}

    def run(seed):
        bench = _sim_amplifier_bench(seed)
        got[seed] = [bench.read(n)[0] for _ in range(2)]

    for seed in (1, 2, 3):
        run(seed)
    serial = [got.pop(seed) for seed in (1, 2, 3)]

    threads = [threading.Thread(target=run, args=(seed,)) for seed in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for seed, want in zip((1, 2, 3), serial):
        assert all(a.tobytes() == b.tobytes() for a, b in zip(got[seed], want))


def _sim_repeater_bench(seed: int = 1):
    """The shipped UTRA repeater rig's simulated bench (feedback loop, ALC, frequency error), a CW in its channel."""
    from pathlib import Path as FsPath

    from devices.radio import StreamConfig
    from devices.sim.driver import build_bench
    from harness.rig import load_rig

    spec = load_rig(FsPath(__file__).resolve().parents[1] / "testplans" / "rigs" / "sim-repeater-utra.yaml")
    bench = build_bench(**{k: v for k, v in spec.radio_options(seed)[1].items() if k != "emulate"})
    bench.set_tx(StreamConfig(2140.1e6, 30.72e6, -27.0))
    bench.set_rx(StreamConfig(2140.1e6, 30.72e6, 0.0))
    n = np.arange(4096)
    bench.start_tx((0.5 * np.exp(2j * np.pi * n / 64)).astype(np.complex64), cyclic=True)
    return bench


def test_repeater_benches_read_at_once_from_several_threads(monkeypatch):
    """The repeater's loop runs beside its input and RX filters on the pool: repeater benches read from several
    threads at once (more of them than the pool has threads) give what the same reads one after the other give,
    and so does a bench read from a pool thread (where nothing runs beside the loop)."""
    import threading

    from devices import workers

    n = 400_000
    got = {}

    def run(seed):
        bench = _sim_repeater_bench(seed)
        got[seed] = [bench.read(n)[0] for _ in range(2)]

    seeds = (1, 2, 3)
    for seed in seeds:
        run(seed)
    serial = [got.pop(seed) for seed in seeds]
    threads = [threading.Thread(target=run, args=(seed,)) for seed in seeds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for seed, want in zip(seeds, serial):
        assert all(a.tobytes() == b.tobytes() for a, b in zip(got[seed], want))
    monkeypatch.setattr(workers, "in_pool", lambda: True)
    run(1)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(got[1], serial[0]))
