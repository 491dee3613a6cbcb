"""Physics of the simulated bench (devices/sim) against the model parameters.

Levels are measured here with plain numpy (mean power, a Blackman-Harris
FFT), independently of the harness' measurement code.
"""

import math

import numpy as np
import pytest
from scipy import signal

from devices import DeviceError, StreamConfig, open_radio
from devices import ad9361_filters as af
from devices.radio import CapabilityError
from devices.sim import (Amplifier, Attenuator, Cable, Path, RappAmplifier, RxPortModel, SimBench, SimConfig,
                         Thru, TxPortModel)
from devices.sim.driver import SimRadio

KT0_DBM_HZ = 10 * math.log10(1.380649e-23 * 290.0 * 1e3)  # -173.98 dBm/Hz
FS = 1e6


def make_bench(dut=None, tx_path=(), rx_path=(), seed=0, tx=None, rx=None) -> SimBench:
    cfg = SimConfig(seed=seed, tx=tx or TxPortModel(), rx=rx or RxPortModel())
    return SimBench(cfg, Path(list(tx_path)), dut or Thru(), Path(list(rx_path)))


def configure(bench, tx_gain_db=0.0, rx_gain_db=0.0, f_hz=1e9, fs_hz=FS, f_rx_hz=None):
    tx = bench.set_tx(StreamConfig(f_hz, fs_hz, tx_gain_db))
    rx = bench.set_rx(StreamConfig(f_rx_hz or f_hz, fs_hz, rx_gain_db))
    return tx, rx


def tone(n, k, amp=1.0):
    return (amp * np.exp(2j * np.pi * k * np.arange(n) / n)).astype(np.complex64)


def rx_dbm(y, bench) -> float:
    """Mean power of RX samples referred to the RX port input (dBm)."""
    fs_dbm = bench.config.rx.full_scale_dbm - bench.rx_config.gain_db
    return 10 * math.log10(np.mean(np.abs(y.astype(np.complex128)) ** 2)) + fs_dbm


def line_dbm(y, bench, k: int, half_width: int = 6) -> float:
    """Power (dBm at the RX port) of a spectral line at FFT bin ``k`` of the capture (Blackman-Harris)."""
    n = y.size
    w = signal.get_window("blackmanharris", n)
    spec = np.abs(np.fft.fft(y.astype(np.complex128) * w)) ** 2 / (n * np.sum(w ** 2))
    p = np.sum(spec[np.arange(k - half_width, k + half_width + 1) % n])
    return 10 * math.log10(p) + bench.config.rx.full_scale_dbm - bench.rx_config.gain_db


def rx_gain_for(bench, level_dbm, headroom_db=12.0):
    """An RX gain putting ``level_dbm`` ``headroom_db`` below full scale."""
    return bench.capabilities.rx_gain_range_db.clip(bench.config.rx.full_scale_dbm - (level_dbm + headroom_db))


# ----------------------------------------------------------------- levels
@pytest.mark.parametrize("tx_gain", [0.0, -20.1, -45.3])
def test_full_scale_cw_power_through_paths(tx_gain):
    tx_path = [Attenuator(20.0), Cable(3.0, delay_s=20e-9)]
    rx_path = [Attenuator(10.0)]
    bench = make_bench(Thru(loss_db=2.0), tx_path, rx_path)
    tx, _ = configure(bench, tx_gain)
    assert tx.gain_db == round(tx_gain * 4) / 4  # 0.25 dB steps
    expect = 5.0 + tx.gain_db - 35.0
    configure(bench, tx.gain_db, rx_gain_for(bench, expect))
    bench.start_tx(tone(4096, 300), cyclic=True)
    y, clipped = bench.read(65536)
    assert clipped == 0
    assert rx_dbm(y, bench) == pytest.approx(expect, abs=0.02)
    assert bench.tx_path.gain_db_at(1e9) + bench.rx_path.gain_db_at(1e9) == pytest.approx(-33.0)


@pytest.mark.parametrize("fs_hz", [1e6, 20e6])
def test_noise_floor_with_tx_off(fs_hz):
    bench = make_bench()
    configure(bench, 0.0, 71.0, fs_hz=fs_hz)
    expect = KT0_DBM_HZ + 6.0 + 10 * math.log10(fs_hz)
    y, clipped = bench.read(1 << 17)
    assert clipped == 0
    assert rx_dbm(y, bench) == pytest.approx(expect, abs=0.1)
    # stopping a transmitter leaves the same floor (the TX port emits nothing)
    bench.start_tx(tone(1024, 10), cyclic=True)
    bench.stop_tx()
    y, _ = bench.read(1 << 17)
    assert rx_dbm(y, bench) == pytest.approx(expect, abs=0.1)


def test_cascaded_noise_floor_with_amplifier_dut():
    """Friis: N = kT0 fs (F_dut G / L + F_rx) with the DUT's and the receiver's noise figures."""
    bench = make_bench(RappAmplifier(gain_db=20.0, saturation_power_dbm=30.0, noise_figure_db=5.0),
                       rx_path=[Attenuator(10.0)])
    configure(bench, 0.0, 60.0)
    y, _ = bench.read(1 << 17)
    f_lin = lambda nf: 10 ** (nf / 10)  # noqa: E731
    # the DUT's noise passes the RX analog filter (default bandwidth 0.8 fs); the RX port's own is white
    f = np.linspace(-FS / 2, FS / 2, 20001)
    passed = float(np.mean(10 ** (-af.attenuation_db(f, af.corner_hz(0.8 * FS, tx=False)) / 10)))
    expect = KT0_DBM_HZ + 10 * math.log10(FS) + 10 * math.log10(f_lin(5.0) * 10 ** (10 / 10) * passed + f_lin(6.0))
    assert rx_dbm(y, bench) == pytest.approx(expect, abs=0.1)


def test_path_amplifier_p1db_and_noise():
    """The bench amplifier compresses 1 dB at its stated output P1dB (found by root-finding)."""
    from scipy.optimize import brentq
    amp = Amplifier(gain_db=15.0, output_p1db_dbm=20.0)
    rng = np.random.default_rng(0)

    def gain_drop_db(p_in_dbm):
        x = math.sqrt(10 ** (p_in_dbm / 10)) * np.exp(1j * np.linspace(0, 3, 16))
        return 20 * math.log10(np.mean(np.abs(amp.apply(x, 1e9, FS, rng))) / np.mean(np.abs(x))) - 15.0

    p1_in = brentq(lambda p: gain_drop_db(p) + 1.0, -30.0, 30.0, xtol=1e-9)
    assert p1_in + 15.0 - 1.0 == pytest.approx(20.0, abs=1e-6)
    assert amp.gain_db_at(2e9) == 15.0
    noisy = Amplifier(gain_db=15.0, noise_figure_db=4.0)
    y = noisy.apply(np.zeros(1 << 17), 1e9, FS, rng)
    assert 10 * math.log10(np.mean(np.abs(y) ** 2)) == pytest.approx(KT0_DBM_HZ + 4 + 60 + 15, abs=0.05)


def test_adc_clipping_is_counted():
    bench = make_bench(rx_path=[Attenuator(15.0)])  # CW at -10 dBm at the RX port
    configure(bench, 0.0, 10.0)  # full scale -20 dBm: 10 dB overdriven
    bench.start_tx(tone(4096, 100), cyclic=True)
    n = 16384
    y, clipped = bench.read(n)
    assert clipped > 0.9 * n
    assert np.max(np.abs(y.real)) == pytest.approx(1.0, abs=1e-3)
    configure(bench, 0.0, -3.0)  # full scale -7 dBm: |x| = 0.71
    _, clipped = bench.read(n)
    assert clipped == 0


def test_lo_leakage_and_iq_image_levels():
    tx_model = TxPortModel(iq_gain_imbalance_db=0.4, iq_phase_imbalance_deg=2.0, lo_leakage_dbfs=-45.0)
    bench = make_bench(rx_path=[Attenuator(40.0)], tx=tx_model)
    tx, _ = configure(bench, -6.0)
    amp = 0.5
    n_wave, k_wave, n = 8192, 1001, 65536
    configure(bench, -6.0, rx_gain_for(bench, 5.0 - 6.0 - 40.0 + 20 * math.log10(amp)))
    bench.start_tx(tone(n_wave, k_wave, amp), cyclic=True)
    y, clipped = bench.read(n)
    assert clipped == 0
    k = k_wave * n // n_wave
    # textbook image rejection of a quadrature modulator with amplitude ratio g and phase error phi
    g, phi = 10 ** (0.4 / 20), math.radians(2.0)
    irr_db = 10 * math.log10((1 - 2 * g * math.cos(phi) + g * g) / (1 + 2 * g * math.cos(phi) + g * g))
    carrier = 5.0 + tx.gain_db - 40.0 + 20 * math.log10(amp)
    assert line_dbm(y, bench, k) == pytest.approx(carrier, abs=0.05)
    assert line_dbm(y, bench, -k) - line_dbm(y, bench, k) == pytest.approx(irr_db, abs=0.2)
    assert line_dbm(y, bench, 0) == pytest.approx(5.0 + tx.gain_db - 40.0 - 45.0, abs=0.2)


def test_phase_noise_level():
    """L(f) of a CW matches phase_noise_dbc_hz at its offset, falling 20 dB/decade."""
    bench = make_bench(rx_path=[Attenuator(30.0)])
    configure(bench, 0.0, rx_gain_for(bench, -25.0, 3.0))
    bench.start_tx(np.full(1024, 0.7, np.complex64), cyclic=True)
    y, _ = bench.read(1 << 18)
    f, p = signal.welch(y.astype(np.complex128), FS, window="blackmanharris", nperseg=8192,
                        return_onesided=False, detrend=False)
    total = np.mean(np.abs(y.astype(np.complex128)) ** 2)

    def l_dbc_hz(f0):
        sel = (np.abs(np.abs(f) - f0) <= 0.1 * f0)
        return 10 * math.log10(np.mean(p[sel] * (f[sel] / f0) ** 2) / total)  # 1/f^2 referred to f0

    assert l_dbc_hz(10e3) == pytest.approx(-100.0, abs=1.0)
    assert l_dbc_hz(40e3) == pytest.approx(-100.0 - 20 * math.log10(4), abs=1.0)


# ------------------------------------------------------ frequency and time
def test_cable_loss_depends_on_frequency():
    cable = Cable(loss_db=3.0, slope_db_per_ghz=2.0, ref_freq_hz=1e9)
    bench = make_bench(tx_path=[cable, Attenuator(20.0)])
    for f_hz, loss in ((0.5e9, 2.0), (2.5e9, 6.0)):
        configure(bench, -10.0, rx_gain_for(bench, -27.0), f_hz=f_hz)
        bench.start_tx(tone(4096, 100), cyclic=True)  # CW 24 kHz above the carrier
        y, clipped = bench.read(65536)
        assert clipped == 0
        assert rx_dbm(y, bench) == pytest.approx(5.0 - 10.0 - 20.0 - loss, abs=0.02)
        assert bench.tx_path.gain_db_at(f_hz) == pytest.approx(-20.0 - loss)


def test_cable_delay_phase():
    """A cable delays by tau: each tone's phase turns by -2 pi (fc + f) tau (same-seed benches compared)."""
    tau, fs, fc, n = 1.2345e-6, 10e6, 1.8e9, 16384
    tx_model = TxPortModel(phase_noise_dbc_hz=None)
    ks = np.arange(-7, 8) * 97
    rng = np.random.default_rng(5)
    wave = sum(np.exp(2j * np.pi * (k * np.arange(n) / n + rng.uniform())) for k in ks) / ks.size
    out = []
    for path in ([], [Cable(0.0, delay_s=tau)]):
        bench = make_bench(tx_path=path, tx=tx_model, seed=11)
        configure(bench, -20.0, -3.0, f_hz=fc, fs_hz=fs)
        bench.start_tx(wave.astype(np.complex64), cyclic=True)
        y, clipped = bench.read(n)
        assert clipped == 0
        out.append(np.fft.fft(y.astype(np.complex128)))
    ratio = out[1][ks % n] / out[0][ks % n]
    expect = np.exp(-2j * np.pi * (fc + ks * fs / n) * tau)
    np.testing.assert_allclose(ratio, expect, atol=2e-3)


def test_frequency_offset_moves_and_loses_signals():
    bench = make_bench(rx_path=[Attenuator(30.0)])
    n = 65536
    k = n // 20  # +50 kHz in the TX baseband
    configure(bench, -5.0, 15.0, f_hz=1e9 + 150e3, f_rx_hz=1e9)
    bench.start_tx(tone(n, k, 0.9), cyclic=True)
    y, _ = bench.read(n)
    level = 5.0 - 5.0 - 30.0 + 20 * math.log10(0.9)
    shift = int(150e3 / FS * n)
    assert line_dbm(y, bench, k + shift) == pytest.approx(level, abs=0.05)
    assert line_dbm(y, bench, shift) == pytest.approx(5.0 - 5.0 - 30.0 - 50.0, abs=0.3)  # LO leakage
    # a tone pushed beyond +fs/2 is gone, not aliased to the other band edge
    configure(bench, -5.0, 15.0, f_hz=1e9 + 400e3, f_rx_hz=1e9)
    k2 = n // 5  # +200 kHz -> +600 kHz
    y, _ = bench.read(n)
    alias = k2 + int(400e3 / FS * n) - n
    assert line_dbm(y, bench, alias) < level - 80
    rx_skirt_db = af.attenuation_db(400e3, af.corner_hz(0.8 * FS, tx=False))  # the RX filter at +400 kHz
    assert line_dbm(y, bench, int(400e3 / FS * n)) == pytest.approx(level - 50.0 - 20 * math.log10(0.9) - rx_skirt_db,
                                                                    abs=0.3)


def test_sample_rate_mismatch_is_an_error():
    bench = make_bench()
    bench.set_tx(StreamConfig(1e9, 1e6, 0.0))
    bench.set_rx(StreamConfig(1e9, 2e6, 0.0))
    bench.read(1000)  # not transmitting: fine
    bench.start_tx(tone(100, 1), cyclic=True)
    with pytest.raises(DeviceError, match="sample rates differ"):
        bench.read(1000)


def test_captures_start_at_random_phases_of_the_waveform():
    bench = make_bench(rx_path=[Attenuator(20.0)])
    configure(bench, 0.0, 10.0)
    rng = np.random.default_rng(2)
    w = 4096
    wave = np.exp(2j * np.pi * rng.uniform(size=w)).astype(np.complex64) * 0.7
    bench.start_tx(wave, cyclic=True)
    offsets = []
    for _ in range(4):
        y = bench.read(w)[0].astype(np.complex128)
        corr = np.abs(np.fft.ifft(np.fft.fft(y) * np.conj(np.fft.fft(wave))))
        assert np.max(corr) > 20 * np.median(corr)
        offsets.append(int(np.argmax(corr)))
    assert len(set(offsets)) == len(offsets)


def test_one_shot_burst_plays_once():
    bench = make_bench(rx_path=[Attenuator(20.0)], tx=TxPortModel(lo_leakage_dbfs=-80.0))
    configure(bench, 0.0, 10.0)
    bench.start_tx(np.full(1000, 0.8, np.complex64), cyclic=False)
    y = np.abs(bench.read(8192)[0])
    on = np.flatnonzero(y > 0.1)
    assert on.size == 1000 and on[0] < 1024 and on[-1] - on[0] == 999
    assert np.max(np.abs(bench.read(8192)[0])) < 0.01  # silence afterwards


def test_same_seed_same_samples():
    def run(seed):
        bench = make_bench(RappAmplifier(gain_db=10.0, saturation_power_dbm=10.0), seed=seed)
        configure(bench, -20.0, 20.0)
        bench.start_tx(tone(1000, 7, 0.5), cyclic=True)
        return np.concatenate([bench.read(5000)[0], bench.read(3000)[0]])

    np.testing.assert_array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))


# --------------------------------------------------------- configuration
def test_settings_are_quantised_and_checked():
    bench = make_bench()
    tx = bench.set_tx(StreamConfig(2e9, 5e6, -10.1))
    rx = bench.set_rx(StreamConfig(2e9, 5e6, 10.4))
    assert (tx.gain_db, rx.gain_db) == (-10.0, 10.0)
    assert tx.rf_bandwidth_hz == pytest.approx(4e6)
    with pytest.raises(CapabilityError):
        bench.set_tx(StreamConfig(7e9, 5e6, 0.0))
    with pytest.raises(CapabilityError):
        bench.set_rx(StreamConfig(2e9, 5e6, 80.0))
    with pytest.raises(ValueError, match="bits"):
        TxPortModel(bits=1)
    with pytest.raises(ValueError, match="loss_db"):
        Cable(loss_db=-1.0)
    with pytest.raises(ValueError, match="seed"):
        SimConfig(seed=-1)


def test_sim_driver():
    radio = open_radio("sim:")
    assert isinstance(radio, SimRadio)
    caps = radio.capabilities
    # the physics' port levels are not stated as nominal ones: a rig declares those
    assert (caps.driver, caps.serial, caps.tx_full_scale_dbm, caps.rx_full_scale_dbm) == ("sim", "SIM-0", None, None)
    radio.configure_tx(StreamConfig(1e9, FS, -30.0))
    rx = radio.configure_rx(StreamConfig(1e9, FS, 30.4))
    assert rx.gain_db == 30.0
    radio.transmit(tone(1024, 10), cyclic=True)
    cap = radio.capture(4096)
    assert cap.samples.dtype == np.complex64 and cap.samples.size == 4096
    assert cap.meta.overload and cap.meta.clipped_samples > 0  # -25 dBm into a -40 dBm full scale
    assert cap.meta.config == rx
    radio.close()
    assert not radio.bench.transmitting

    bench = make_bench(seed=7)
    radio = open_radio("sim:bench-1", bench=bench)
    assert radio.bench is bench and radio.name == "bench-1" and radio.capabilities.serial == "SIM-7"
    assert open_radio("sim:", seed=9).capabilities.serial == "SIM-9"
    with pytest.raises(DeviceError, match="no parameters"):
        open_radio("sim:ip=1.2.3.4")
    with pytest.raises(DeviceError, match="unknown sim option"):
        open_radio("sim:", colour="blue")
