"""The pluto: driver (pyadi-iio) against the emulated PlutoSDR, compared with the sim: driver on the same rig."""

from __future__ import annotations

import gc
import time

import numpy as np
import pytest

import adi  # noqa: E402,F401 - a project dependency: missing, the module must fail, not skip

from devices.pluto import from_rx_codes, iio_uri_from, open_pluto, to_tx_codes  # noqa: E402
from devices.radio import CapabilityError, DeviceError, StreamConfig  # noqa: E402
from devices.sim import Attenuator, Path, SimBench, SimConfig, Thru  # noqa: E402
from devices.sim.driver import open_sim  # noqa: E402
from devices.sim.pluto_emulator import serve  # noqa: E402

LOSS_DB = 10.0 + 3.0 + 20.0
FS = 7_680_000.0
#: multi-block captures: blocks long enough that no pause of a loaded machine overflows the DMA
SLOW_FS = 1_000_000.0
F0 = 1.2e9


def make_bench(seed: int = 11) -> SimBench:
    return SimBench(SimConfig(seed=seed), Path([Attenuator(10.0)]), Thru(loss_db=3.0), Path([Attenuator(20.0)]))


@pytest.fixture
def emulated():
    bench = make_bench()
    server, port = serve(bench)
    radios = []

    def opener(**opts):
        opts.setdefault("settle_s", 0.0)
        r = open_pluto(f"pluto:ip:127.0.0.1:{port}", f"ip:127.0.0.1:{port}", **opts)
        radios.append(r)
        return r

    yield bench, server, opener
    for r in radios:
        r.close()
    radios.clear()
    gc.collect()
    server.stop()


def cw(n: int = 7680, f_hz: float = 0.75e6, amplitude: float = 1.0) -> np.ndarray:
    return (amplitude * np.exp(2j * np.pi * f_hz * np.arange(n) / FS)).astype(np.complex64)


def power_dbfs(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.abs(x.astype(np.complex128)) ** 2)))


def test_uri_forms():
    assert iio_uri_from("ip:192.168.2.1") == "ip:192.168.2.1"
    assert iio_uri_from("ip:127.0.0.1:30555") == "ip:127.0.0.1:30555"
    assert iio_uri_from("usb:1.2.5") == "usb:1.2.5"
    assert iio_uri_from("192.168.2.1") == "ip:192.168.2.1"
    assert iio_uri_from("") == ""
    with pytest.raises(DeviceError):
        iio_uri_from("ip 1.2.3.4/x")
    with pytest.raises(DeviceError, match="unknown pluto option"):
        open_pluto("pluto:ip:127.0.0.1", "ip:127.0.0.1", bogus=1)


def test_unreachable_device_is_a_device_error():
    with pytest.raises(DeviceError, match="cannot open PlutoSDR"):
        open_pluto("pluto:ip:127.0.0.1:9", "ip:127.0.0.1:9")


def test_sample_scaling_round_trips_12_bit_codes():
    x = np.array([1.0 + 0j, -1.0 - 1.0j, 0.5 - 0.25j, 1e-4j], dtype=np.complex64)
    codes = to_tx_codes(x)
    assert np.array_equal(codes, np.array([2047 * 16, -2048 * 16 - 2048 * 16j, 1024 * 16 - 512 * 16j, 0]))
    back, clipped = from_rx_codes(codes / 16)
    assert np.allclose(back, [2047 / 2048, -1 - 1j, 0.5 - 0.25j, 0])
    assert clipped == 2


def test_capabilities_come_from_the_available_attributes(emulated):
    bench, _, opener = emulated
    caps = opener().capabilities
    assert (caps.tune_range_hz.low, caps.tune_range_hz.high) == (325e6, 3.8e9)
    assert (caps.tx_gain_range_db.low, caps.tx_gain_range_db.high, caps.tx_gain_range_db.step) == (-89.75, 0.0, 0.25)
    assert (caps.rx_gain_range_db.low, caps.rx_gain_range_db.high, caps.rx_gain_range_db.step) == (-3, 71, 1)
    assert caps.rf_bandwidth_range_hz.high == 56e6 and caps.sample_rate_range_hz.high == 61.44e6  # a v0.32 Pluto reports [200000 1 56000000]
    assert caps.tx_rf_bandwidth_range_hz.high == 40e6  # [200000 1 40000000] on TX
    # a Pluto states no absolute levels (the rig declares them, calibration measures them), and the
    # driver knows the AD936x filters' flat part
    assert caps.tx_full_scale_dbm is None and caps.rx_full_scale_dbm is None
    assert caps.flat_span_hz(tx=False) == pytest.approx(20.95e6, abs=0.01e6)
    assert caps.serial == bench.capabilities.serial


def test_cw_reads_the_same_dbfs_as_the_sim_driver_and_the_model(emulated):
    _, _, opener = emulated
    results = []
    for radio in (opener(), open_sim("sim:", "", bench=make_bench())):
        tx = radio.configure_tx(StreamConfig(F0, FS, -4.25))
        rx = radio.configure_rx(StreamConfig(F0, FS, 14.0))
        radio.transmit(cw())
        cap = radio.capture(1 << 16)
        radio.stop_tx()
        assert cap.meta.ok, cap.meta.faults()
        results.append((power_dbfs(cap.samples), tx, rx, cap))
    (p_pluto, tx, rx, cap), (p_sim, *_rest) = results
    cfg = make_bench().config
    truth = cfg.tx.full_scale_dbm + tx.gain_db - LOSS_DB - (cfg.rx.full_scale_dbm - rx.gain_db)
    assert tx.gain_db == -4.25 and rx.gain_db == 14.0
    assert abs(tx.freq_hz - F0) < 3 and rx.sample_rate_hz == FS
    assert p_pluto == pytest.approx(p_sim, abs=0.02)
    assert p_pluto == pytest.approx(truth, abs=0.05)
    spec = np.abs(np.fft.fft(cap.samples))
    assert np.fft.fftfreq(cap.samples.size, 1 / FS)[np.argmax(spec)] == pytest.approx(0.75e6, abs=FS / cap.samples.size)


def test_stop_tx_and_close_destroy_the_tx_buffer(emulated):
    bench, server, opener = emulated
    radio = opener()
    radio.configure_tx(StreamConfig(F0, FS, -10.0))
    radio.configure_rx(StreamConfig(F0, FS, 0.0))
    radio.transmit(cw())
    assert bench.transmitting and radio.transmitting
    radio.stop_tx()
    assert not bench.transmitting and server.emulator.dma_owner is None
    assert server.emulator.lo_powerdown[1]
    radio.transmit(cw())
    assert bench.transmitting
    radio.close()
    assert not bench.transmitting
    with pytest.raises(DeviceError):
        radio.capture(16)


def test_overflow_is_reported_then_cleared(emulated):
    _, server, opener = emulated
    radio = opener()
    radio.configure_rx(StreamConfig(F0, FS, 0.0))
    server.emulator.inject_rx_overflow()
    first = radio.capture(4096)
    assert first.meta.overflow and "RX overflow" in first.meta.faults()
    second = radio.capture(4096)
    assert not second.meta.overflow


def test_slow_multi_block_capture_overflows():
    # Blocks of 64 samples at 61.44 MS/s last 1 us each: no Python client keeps up.
    bench = make_bench()
    server, port = serve(bench)
    try:
        radio = open_pluto("pluto:", f"ip:127.0.0.1:{port}", settle_s=0.0, max_buffer_samples=64)
        radio.configure_rx(StreamConfig(F0, 61.44e6, 0.0))
        cap = radio.capture(64 * 20)
        assert cap.meta.extra["blocks"] == 20 and cap.samples.size == 1280
        assert cap.meta.overflow
        radio.close()
    finally:
        gc.collect()
        server.stop()


def test_tx_underflow_after_a_one_shot_burst(emulated):
    _, _, opener = emulated
    radio = opener()
    radio.configure_tx(StreamConfig(F0, FS, 0.0))
    radio.configure_rx(StreamConfig(F0, FS, 0.0))
    radio.transmit(cw(768), cyclic=False)
    time.sleep(0.02)  # 0.1 ms of samples have long played out
    cap = radio.capture(1024)
    assert cap.meta.extra["tx_underflow"]


def test_adc_clipping_is_flagged(emulated):
    _, _, opener = emulated
    radio = opener()
    radio.configure_tx(StreamConfig(F0, FS, 0.0))
    radio.configure_rx(StreamConfig(F0, FS, 40.0))
    radio.transmit(cw())
    cap = radio.capture(8192)
    assert cap.meta.overload and cap.meta.clipped_samples > 4000


def test_rate_is_shared_and_out_of_range_settings_refused(emulated):
    _, _, opener = emulated
    radio = opener()
    radio.configure_rx(StreamConfig(F0, FS, 0.0))
    tx = radio.configure_tx(StreamConfig(F0, 1e6, 0.0))
    assert tx.sample_rate_hz == 1e6 and radio.rx_config.sample_rate_hz == 1e6
    with pytest.raises(CapabilityError):
        radio.configure_rx(StreamConfig(5e9, FS, 0.0))
    with pytest.raises(CapabilityError):
        radio.configure_tx(StreamConfig(F0, FS, 3.0))


def test_buffer_codes_convert_as_libiio_and_pyadi_would():
    """The driver's one-pass conversion of the buffer's int16 (le:S12/16>>0) against pyadi-iio's path
    (libiio sign-extends bit 11, pyadi builds complex, from_rx_codes scales): equal, clipped counts too,
    for sign-extended codes (the HDL's) and for bare 12-bit codes."""
    from devices.pluto import codes_to_samples

    rng = np.random.default_rng(4)
    codes = rng.integers(-2047, 2047, size=(5000, 2)).astype(np.int16)  # off the rails but for:
    codes[[3, 70, 71]] = [[2047, 0], [-5, -2048], [2047, -2048]]  # three samples at a rail
    for raw in (codes, codes & 0x0FFF):  # sign-extended, and the 12 bits alone
        ext = ((raw.astype(np.int32) & 0xFFF) ^ 0x800) - 0x800  # sign extension from bit 11, written here
        want, want_clipped = from_rx_codes(ext[:, 0] + 1j * ext[:, 1])
        got = np.empty(raw.shape[0], dtype=np.complex64)
        clipped = codes_to_samples(raw, got)
        assert np.array_equal(got, want) and clipped == want_clipped == 3


def _in_digital_loopback(server, r, wave, take):
    """``take(120_000)`` with the emulator's digital loopback on (RX = the DAC's codes) while ``wave`` plays
    cyclically; loopback and TX off again afterwards, whatever happens."""
    r.configure_tx(StreamConfig(F0, SLOW_FS, -10.0))
    r.configure_rx(StreamConfig(F0, SLOW_FS, 10.0))
    r.transmit(wave)
    with server.emulator.lock:
        server.emulator._set_loopback("1")
    try:
        return take(120_000)
    finally:
        with server.emulator.lock:
            server.emulator._set_loopback("0")
        r.stop_tx()


def test_capture_reads_the_buffer_as_sent_in_one_and_several_blocks(emulated):
    """Digital loopback (RX = the DAC's codes): a capture is the cyclic stimulus's codes / 2048 exactly,
    contiguous across blocks when it spans several RX buffers' worth (blocks of 50 ms at 1 MS/s: the DMA's
    4 blocks outlast a loaded machine's pauses, so no overflow drops samples)."""
    bench, server, opener = emulated
    wave = cw(4096, f_hz=FS * 37 / 4096, amplitude=0.7) * np.exp(1j * np.linspace(0, 3, 4096)).astype(np.complex64)
    codes = to_tx_codes(wave) / 16
    for max_block in (1 << 20, 50_000):
        r = opener(max_buffer_samples=max_block)
        cap = _in_digital_loopback(server, r, wave, r.capture)
        assert cap.meta.extra["blocks"] == (1 if max_block > 120_000 else 3) and not cap.meta.overflow
        y = cap.samples
        # where in the period the capture starts: a slow tone's 12-bit codes can repeat a pair of samples at two
        # places of the period, so the start is the one place whose next 64 codes all match
        period = (codes / 2048).astype(np.complex64)
        ks = [k for k in range(period.size) if np.array_equal(np.roll(period, -k)[:64], y[:64])]
        assert len(ks) == 1, ks
        k = ks[0]
        want = (np.tile(codes, 31)[k:k + y.size] / 2048).astype(np.complex64)
        assert np.array_equal(y, want)


def test_capture_codes_are_the_buffer_codes_in_one_and_several_blocks(emulated):
    """Digital loopback, as above: ``capture_codes`` hands out the cyclic stimulus's 12-bit codes themselves
    (scale 2^-11), contiguous across blocks, and its samples are what ``capture`` returns for them."""
    bench, server, opener = emulated
    wave = cw(4096, f_hz=FS * 37 / 4096, amplitude=0.7) * np.exp(1j * np.linspace(0, 3, 4096)).astype(np.complex64)
    codes = (to_tx_codes(wave) / 16).astype(np.complex64)
    period = np.stack([codes.real, codes.imag], axis=1).astype(np.int16)
    for max_block in (1 << 20, 50_000):
        r = opener(max_buffer_samples=max_block)
        assert r.native_codes
        got = _in_digital_loopback(server, r, wave, r.capture_codes)
        assert got.scale == 2.0 ** -11 and got.codes.dtype == np.int16 and got.codes.shape == (240_000,)
        assert got.meta.extra["blocks"] == (1 if max_block > 120_000 else 3) and not got.meta.overflow
        iq = got.codes.reshape(-1, 2)
        ks = [k for k in range(period.shape[0]) if np.array_equal(np.roll(period, -k, axis=0)[:64], iq[:64])]
        assert len(ks) == 1, ks
        assert np.array_equal(iq, np.tile(period, (31, 1))[ks[0]:ks[0] + 120_000])
        assert np.array_equal(got.samples, (np.tile(codes, 31)[ks[0]:ks[0] + 120_000] / 2048).astype(np.complex64))


def test_two_receiver_capture_reads_each_receivers_columns():
    """2r2t (four RX channels in a buffer sample): digital loopback feeds RX1 only, so receiver 0 is the
    stimulus's codes exactly and receiver 1 exactly zero, in one and several blocks (of 50 ms, as above)."""
    bench = make_bench()
    server, port = serve(bench, mode="2r2t")
    radio = None
    try:
        for max_block in (1 << 20, 50_000):
            radio = open_pluto("pluto:", f"ip:127.0.0.1:{port}", settle_s=0.0, max_buffer_samples=max_block)
            assert radio.capabilities.rx_channels == 2
            wave = cw(2048, f_hz=FS * 11 / 2048, amplitude=0.6)
            codes = to_tx_codes(wave) / 16
            radio.configure_tx(StreamConfig(F0, SLOW_FS, -10.0))
            radio.configure_rx(StreamConfig(F0, SLOW_FS, 10.0))
            radio.transmit(wave)
            with server.emulator.lock:
                server.emulator._set_loopback("1")
            rx1, rx2 = radio.capture_channels(120_000, (0, 1), (10.0, 20.0))
            assert rx1.meta.extra["blocks"] == (1 if max_block > 120_000 else 3) and not rx1.meta.overflow
            k = int(np.flatnonzero(np.isclose(codes / 2048, rx1.samples[0])
                                   & np.isclose(np.roll(codes, -1) / 2048, rx1.samples[1]))[0])
            assert np.array_equal(rx1.samples, (np.tile(codes, 60)[k:k + 120_000] / 2048).astype(np.complex64))
            assert rx2.samples.size == 120_000 and not np.any(rx2.samples)
            radio.close()
            radio = None
    finally:
        if radio is not None:
            radio.close()
        gc.collect()
        server.stop()
