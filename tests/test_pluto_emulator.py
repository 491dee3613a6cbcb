"""The emulated PlutoSDR (IIOD server) against unmodified clients: pyadi-iio and libiio's tools.

Truth comes from the bench model: a full-scale complex CW at TX gain g reaches the
RX at tx.full_scale_dbm + g - (path and DUT losses), which reads
P - (rx.full_scale_dbm - rx_gain) dBFS.
"""

from __future__ import annotations

import gc
import shutil
import socket
import subprocess
import time

import numpy as np
import pytest

from conftest import required

import adi  # noqa: E402 - a project dependency: missing, the module must fail, not skip

from devices.sim import Attenuator, Path, SimBench, SimConfig, Thru  # noqa: E402
from devices.sim.pluto_emulator import (REG_DMA_STATUS, RX_OVERFLOW_BIT, TX_UNDERFLOW_BIT, clock_chain,  # noqa: E402
                                        parse_fir_config, rfpll_actual_hz, serve)

TX_LOSS_DB, DUT_LOSS_DB, RX_LOSS_DB = 10.0, 5.0, 20.0
TOTAL_LOSS_DB = TX_LOSS_DB + DUT_LOSS_DB + RX_LOSS_DB
FS = 7_680_000
F0 = 1_000_000_000


def make_bench(seed: int = 3) -> SimBench:
    return SimBench(SimConfig(seed=seed), Path([Attenuator(TX_LOSS_DB)]), Thru(loss_db=DUT_LOSS_DB),
                    Path([Attenuator(RX_LOSS_DB)]))


@pytest.fixture
def rig():
    bench = make_bench()
    server, port = serve(bench)
    held = []
    yield bench, server, port, held
    # libiio 0.x must release buffers while the server still answers
    for sdr in held:
        try:
            sdr.rx_destroy_buffer()
            sdr.tx_destroy_buffer()
        except Exception:  # noqa: BLE001
            pass
    held.clear()
    gc.collect()
    server.stop()


def pluto(rig) -> "adi.Pluto":
    sdr = adi.Pluto(f"ip:127.0.0.1:{rig[2]}")
    rig[3].append(sdr)
    return sdr


def setup_cw(sdr, tx_gain_db: float, rx_gain_db: int, f_tone_hz: float, amplitude: float = 2047 / 2048,
             n: int = 7680, tx_lo: int = F0, rx_lo: int = F0):
    sdr.sample_rate = FS
    sdr.rx_lo, sdr.tx_lo = rx_lo, tx_lo
    sdr.gain_control_mode_chan0 = "manual"
    sdr.rx_hardwaregain_chan0 = rx_gain_db
    sdr.tx_hardwaregain_chan0 = tx_gain_db
    t = np.arange(n)
    codes = np.rint(amplitude * 2048 * np.exp(2j * np.pi * f_tone_hz * t / FS)) * 16  # 12 MSBs of int16
    sdr.tx_cyclic_buffer = True
    sdr.tx(codes)


def tone(y: np.ndarray, fs: float) -> tuple[float, float]:
    """(frequency of the strongest bin, power of that tone in dBFS) from 12-bit codes."""
    x = y / 2048.0
    w = np.hanning(x.size)
    spec = np.fft.fft(x * w)
    k = int(np.argmax(np.abs(spec)))
    band = np.abs(spec[max(k - 4, 0):k + 5]) ** 2
    p = band.sum() / (x.size * np.sum(w ** 2))
    return float(np.fft.fftfreq(x.size, 1 / fs)[k]), float(10 * np.log10(p))


def test_cw_through_emulator_arrives_at_model_frequency_and_power(rig):
    bench = rig[0]
    sdr = pluto(rig)
    setup_cw(sdr, tx_gain_db=-6.0, rx_gain_db=12, f_tone_hz=1.5e6)
    sdr.rx_buffer_size = 1 << 16
    f, p = tone(sdr.rx(), FS)
    cfg = bench.config
    expected = cfg.tx.full_scale_dbm - 6.0 + 20 * np.log10(2047 / 2048) - TOTAL_LOSS_DB - (cfg.rx.full_scale_dbm - 12)
    assert abs(f - 1.5e6) < FS / (1 << 16)
    assert p == pytest.approx(expected, abs=0.1)


def test_lo_offset_moves_the_tone(rig):
    sdr = pluto(rig)
    setup_cw(sdr, 0.0, 0, f_tone_hz=0.5e6, tx_lo=F0 + 1_000_000)
    sdr.rx_buffer_size = 1 << 15
    f, _ = tone(sdr.rx(), FS)
    assert abs(f - 1.5e6) < FS / (1 << 15)


def test_attribute_semantics_follow_the_ad9361_driver(rig):
    emu = rig[1].emulator
    sdr = pluto(rig)
    # LO: Pluto as shipped (AD9363) 325 MHz - 3.8 GHz, on the fractional-N grid
    with pytest.raises(OSError):
        sdr.rx_lo = int(300e6)
    sdr.rx_lo = 915_000_001
    assert abs(sdr.rx_lo - 915_000_001) <= 3
    assert sdr.rx_lo == rfpll_actual_hz(915_000_001)
    # TX attenuation: 0.25 dB register steps, 0..89.75 dB
    sdr.tx_hardwaregain_chan0 = -10.3
    assert sdr.tx_hardwaregain_chan0 == pytest.approx(-10.25)
    with pytest.raises(OSError):
        sdr.tx_hardwaregain_chan0 = -90.0
    with pytest.raises(OSError):
        sdr.tx_hardwaregain_chan0 = 1.0
    # RX gain: refused under AGC, integer dB in manual
    sdr.gain_control_mode_chan0 = "slow_attack"
    with pytest.raises(OSError):
        sdr._set_iio_attr_float("voltage0", "hardwaregain", False, 10.0)
    sdr.gain_control_mode_chan0 = "manual"
    sdr.rx_hardwaregain_chan0 = 33
    assert sdr.rx_hardwaregain_chan0 == 33
    with pytest.raises(OSError):
        sdr.rx_hardwaregain_chan0 = 72
    # RF bandwidth: clamped to the driver's range (a v0.32 Pluto reports [200000 1 56000000])
    sdr.rx_rf_bandwidth = 60_000_000
    assert sdr.rx_rf_bandwidth == 56_000_000
    # Low rates need the decimating FIR; pyadi's setter loads it (reading tx_path_rates)
    sdr._set_iio_attr("out", "voltage_filter_fir_en", False, 0)
    with pytest.raises(OSError):
        sdr._set_iio_attr("voltage0", "sampling_frequency", False, 1_000_000)
    sdr.sample_rate = 1_000_000
    assert sdr.sample_rate == 1_000_000
    assert sdr._get_iio_attr("out", "voltage_filter_fir_en", False) == 1
    rates = dict(kv.split(":") for kv in sdr._get_iio_dev_attr_str("tx_path_rates").split())
    assert int(rates["TXSAMP"]) == 1_000_000 and int(rates["TF"]) == 4_000_000  # FIR interpolates by 4
    assert 715e6 <= int(rates["BBPLL"]) <= 1430e6
    assert emu.bench.rx_config.sample_rate_hz == 1e6 and emu.bench.tx_config.sample_rate_hz == 1e6
    # enumerations
    with pytest.raises(OSError):
        sdr.gain_control_mode_chan0 = "turbo"
    sdr._set_iio_dev_attr_str("calib_mode", "tx_quad")  # one-shot: the mode stays
    assert sdr._get_iio_dev_attr_str("calib_mode") == "auto"
    sdr._set_iio_dev_attr_str("ensm_mode", "alert")
    assert sdr._get_iio_dev_attr_str("ensm_mode") == "alert"


def test_clock_chain_and_fir_rules():
    # pyadi-iio's FIRs: (rate, DEC, taps) all legal; 128 taps need DAC/TXSAMP >= 8
    for rate, dec, taps in ((1_000_000, 4, 128), (20_000_000, 4, 128), (40_000_000, 2, 128),
                            (53_333_333, 2, 96), (61_440_000, 2, 64)):
        c = clock_chain(rate, dec)
        assert c is not None and c["ADC"] <= 640e6 and 715e6 <= c["BBPLL"] <= 1430e6
        assert 16 * (c["DAC"] // c["TXSAMP"]) >= taps
    # highest half-band decimation that fits: x12 at 1 MS/s (after the FIR's x4), x8 at 61.44 MS/s
    assert clock_chain(1_000_000, 4)["ADC"] == 48_000_000
    assert clock_chain(61_440_000, 1)["ADC"] == 491_520_000
    cfg = parse_fir_config("RX 3 GAIN -6 DEC 4\nTX 3 GAIN 0 INT 4\n" + "1,1\n" * 64)
    assert (cfg["rx_dec"], cfg["tx_int"], cfg["taps"]) == (4, 4, 64)


def test_agc_steers_gain_toward_its_target(rig):
    emu = rig[1].emulator
    sdr = pluto(rig)
    setup_cw(sdr, -20.0, 0, 1e6)
    sdr.gain_control_mode_chan0 = "fast_attack"
    sdr.rx_buffer_size = 1 << 14
    sdr.rx()  # the AGC measures this block
    sdr.rx_destroy_buffer()
    g = sdr.rx_hardwaregain_chan0
    cfg = emu.bench.config
    p_in = cfg.tx.full_scale_dbm - 20 + 20 * np.log10(2047 / 2048) - TOTAL_LOSS_DB
    assert g == round(-12.0 - (p_in - cfg.rx.full_scale_dbm))


def test_closing_the_tx_buffer_or_losing_the_client_stops_the_transmitter(rig):
    bench = rig[0]
    sdr = pluto(rig)
    setup_cw(sdr, -10.0, 0, 1e6)
    assert bench.transmitting
    sdr.tx_destroy_buffer()
    deadline = time.monotonic() + 2
    while bench.transmitting and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not bench.transmitting
    # a client that disappears without closing: raw socket, cyclic push, then drop the connection
    s = socket.create_connection(("127.0.0.1", rig[2]))
    f = s.makefile("rb")
    s.sendall(b"OPEN cf-ad9361-dds-core-lpc 4 00000003 CYCLIC\r\n")
    assert f.readline() == b"0\n"
    s.sendall(b"WRITEBUF cf-ad9361-dds-core-lpc 16\r\n")
    assert f.readline() == b"0\n"
    s.sendall(np.full(8, 1000 * 16, dtype="<i2").tobytes())
    assert f.readline() == b"16\n"
    assert bench.transmitting
    f.close()
    s.close()
    deadline = time.monotonic() + 2
    while bench.transmitting and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not bench.transmitting


def test_dma_status_register_reports_overflow_and_underflow(rig):
    emu = rig[1].emulator
    sdr = pluto(rig)
    sdr.sample_rate = FS
    rxadc, txdac = sdr._rxadc, sdr._txdac
    rxadc.reg_write(REG_DMA_STATUS, 0x7)
    assert rxadc.reg_read(REG_DMA_STATUS) == 0
    sdr.rx_buffer_size = 1024
    sdr.rx()
    time.sleep(0.05)  # 4 blocks of 1024 samples last 0.5 ms: the DMA overflows meanwhile
    sdr.rx()
    status = rxadc.reg_read(REG_DMA_STATUS)
    assert status & RX_OVERFLOW_BIT
    rxadc.reg_write(REG_DMA_STATUS, status)  # write 1 to clear
    assert rxadc.reg_read(REG_DMA_STATUS) & RX_OVERFLOW_BIT == 0
    emu.inject_rx_overflow(during_next_read=False)
    assert rxadc.reg_read(REG_DMA_STATUS) & RX_OVERFLOW_BIT
    # a one-shot TX burst of 768 samples (0.1 ms) has played out after 50 ms: underflow
    sdr.tx_cyclic_buffer = False
    sdr.tx(np.full(768, 100 * 16 + 0j))
    time.sleep(0.05)
    assert txdac.reg_read(REG_DMA_STATUS) & TX_UNDERFLOW_BIT


def test_dds_tone_and_digital_loopback(rig):
    sdr = pluto(rig)
    sdr.sample_rate = FS
    sdr.rx_lo = sdr.tx_lo = F0
    sdr.gain_control_mode_chan0 = "manual"
    sdr.rx_hardwaregain_chan0 = 20
    sdr.tx_hardwaregain_chan0 = 0.0
    sdr.dds_single_tone(-2_000_000, 0.5)
    sdr.rx_buffer_size = 1 << 15
    f, p = tone(sdr.rx(), FS)
    sdr.rx_destroy_buffer()
    cfg = rig[0].config
    assert abs(f + 2e6) < FS / (1 << 15)
    assert p == pytest.approx(cfg.tx.full_scale_dbm + 20 * np.log10(0.5) - TOTAL_LOSS_DB - (cfg.rx.full_scale_dbm - 20),
                              abs=0.15)
    # digital loopback: RX returns exactly the 12-bit codes the DMA plays
    sdr.disable_dds()
    sdr.loopback = 1
    sdr.tx_cyclic_buffer = True
    codes = (np.arange(256) - 128) * 16 + 1j * ((np.arange(256) * 7 % 4096) - 2048) * 16
    sdr.tx(codes)
    sdr.rx_buffer_size = 1024
    y = sdr.rx()
    period = codes / 16
    start = int(np.flatnonzero(period == y[0])[0])
    assert np.array_equal(y, np.resize(np.roll(period, -start), 1024))
    with pytest.raises(OSError):
        sdr.loopback = 2


def test_several_clients_at_once(rig):
    a, b = pluto(rig), pluto(rig)
    a.sample_rate = FS
    a.rx_buffer_size = b.rx_buffer_size = 4096
    ya, yb = a.rx(), b.rx()
    assert ya.size == yb.size == 4096
    b.rx_lo = 2_000_000_000
    assert abs(a.rx_lo - 2_000_000_000) <= 3  # shared device state


def raw_request(port: int, payload: bytes, lines: int = 1) -> list[bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        f = s.makefile("rb")
        s.sendall(payload)
        return [f.readline() for _ in range(lines)]


def test_malformed_requests_get_errno_replies_not_a_crash(rig):
    port = rig[2]
    assert raw_request(port, b"FROBNICATE\r\n") == [b"-22\n"]
    assert raw_request(port, b"READ nodevice frequency\r\n") == [b"-19\n"]
    assert raw_request(port, b"READ ad9361-phy nosuchattr\r\n") == [b"-2\n"]
    assert raw_request(port, b"READ ad9361-phy OUTPUT altvoltage9 frequency\r\n") == [b"-6\n"]
    assert raw_request(port, b"OPEN cf-ad9361-lpc 10 zzzzzzzz\r\n") == [b"-22\n"]
    assert raw_request(port, b"OPEN cf-ad9361-lpc 10 00000000\r\n") == [b"-22\n"]
    assert raw_request(port, b"READBUF cf-ad9361-lpc 400\r\n") == [b"-9\n"]
    assert raw_request(port, b"WRITE ad9361-phy OUTPUT altvoltage0 frequency 3\r\nabc") == [b"-22\n"]
    assert raw_request(port, b"WRITE ad9361-phy rx_path_rates 3\r\n123") == [b"-13\n"]
    assert raw_request(port, b"ZPRINT\r\nBINARY\r\n", 2) == [b"-22\n", b"-22\n"]
    assert raw_request(port, b"\xff\xfe\r\n") == [b"-22\n"]
    # still serving, and several requests on one connection work
    out = raw_request(port, b"VERSION\r\nTIMEOUT 1000\r\nREAD ad9361-phy ensm_mode\r\n", 4)
    assert out[0].startswith(b"0.25.") and out[1] == b"0\n" and out[2:] == [b"3\n", b"fdd\n"]


TOOLS = required("libiio-utils (iio_info) not installed" if shutil.which("iio_info") is None else None)


@TOOLS
def test_iio_info_lists_the_pluto_devices(rig):
    out = subprocess.run(["iio_info", "-u", f"ip:127.0.0.1:{rig[2]}"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    for dev in ("ad9361-phy", "cf-ad9361-lpc", "cf-ad9361-dds-core-lpc"):
        assert dev in out.stdout
    assert "format: le:S12/16>>0" in out.stdout and "format: le:S16/16>>0" in out.stdout
    assert "[325000000 1 3800000000]" in out.stdout


@TOOLS
def test_iio_attr_reads_and_writes(rig):
    uri = f"ip:127.0.0.1:{rig[2]}"
    w = subprocess.run(["iio_attr", "-u", uri, "-c", "ad9361-phy", "altvoltage1", "frequency", "1800000000"],
                       capture_output=True, text=True, timeout=30)
    assert w.returncode == 0, w.stderr
    r = subprocess.run(["iio_attr", "-u", uri, "-c", "ad9361-phy", "altvoltage1", "frequency"],
                       capture_output=True, text=True, timeout=30)
    assert int(r.stdout.strip()) == rfpll_actual_hz(1.8e9)
    assert rig[0].tx_config.freq_hz == rfpll_actual_hz(1.8e9)


@TOOLS
def test_iio_readdev_streams_the_rig(rig):
    bench, server = rig[0], rig[1]
    emu = server.emulator
    with emu.lock:  # configure through the model: a strong CW at +1 MHz
        emu._set_rate(str(FS))
        emu._set_lo(0, str(F0))
        emu._set_lo(1, str(F0))
        emu.gain_mode = "manual"
        emu._set_rx_gain("10")
        emu._set_tx_gain("0")
        emu._dds_attr(0, "frequency", "1000000")
        emu._dds_attr(0, "phase", "90000")
        emu._dds_attr(0, "scale", "0.5")
        emu._dds_attr(2, "frequency", "1000000")
        emu._dds_attr(2, "scale", "0.5")
        emu._dds_attr(0, "raw", "1")
    assert bench.transmitting
    n = 8192
    out = subprocess.run(["iio_readdev", "-u", f"ip:127.0.0.1:{rig[2]}", "-b", "4096", "-s", str(n), "cf-ad9361-lpc"],
                         capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout) == 4 * n
    iq = np.frombuffer(out.stdout, dtype="<i2").reshape(-1, 2)
    y = (iq[:4096, 0] + 1j * iq[:4096, 1]).astype(np.complex128)
    f, p = tone(y, FS)
    cfg = bench.config
    assert abs(f - 1e6) < FS / 4096
    assert p == pytest.approx(cfg.tx.full_scale_dbm - 6.0206 - TOTAL_LOSS_DB - (cfg.rx.full_scale_dbm - 10), abs=0.2)


def test_a_cyclic_source_given_to_the_bench_as_its_period_reads_as_the_window_around_each_block():
    """A cyclic DMA buffer or the DDS reaches the bench as one period rotated to the block (not the codes
    tiled around it): the DAC chain is memoryless, so the RX codes are the window's exactly, for blocks
    that start a buffer and for blocks that continue one (read with an overlap and rotated)."""
    from devices.sim.pluto_emulator import PlutoEmulator

    def blocks(source: str, window_only: bool) -> list[bytes]:
        emu = PlutoEmulator(make_bench(seed=7))
        with emu.lock:
            emu._set_rate(str(FS))
            emu._set_lo(0, str(F0))
            emu._set_lo(1, str(F0 + 150_000))  # an LO offset: continued blocks are rotated
            emu._set_choice("gain_mode", ("manual",), "manual")
            emu._set_rx_gain("20")
            emu._set_tx_gain("0")
        dds = emu.context.find_device("cf-ad9361-dds-core-lpc")
        if source == "dma":
            t = np.arange(3000)
            z = 0.6 * np.exp(2j * np.pi * 0.0123 * t) + 0.3 * np.exp(2j * np.pi * 0.31 * t)
            codes = np.stack([np.rint(z.real * 2047), np.rint(z.imag * 2047)], axis=1).astype("<i2") * 16
            dds.open_buffer(3000, [c for c in dds.channels if c.scan][:2], True).write(codes.tobytes())
        else:
            with emu.lock:
                for i, f in ((0, "250000"), (2, "250000")):
                    emu._dds_attr(i, "frequency", f)
                    emu._dds_attr(i, "scale", "0.4")
        emu.tx_origin = 777  # (set from the wall clock at the push)
        if window_only:
            emu._tx_period = lambda a, length: (None, 0)
        adc = emu.context.find_device("cf-ad9361-lpc")
        rx = adc.open_buffer(70000, [c for c in adc.channels if c.scan][:2], False)  # > the DDS's 65536
        rx.pos = 123_456
        periods = []
        if not window_only:
            real = emu._tx_period
            emu._tx_period = lambda a, length: periods.append(real(a, length)[0] is not None) or real(a, length)
        out = [bytes(memoryview(rx.read(70000)).cast("B")) for _ in range(3)]
        assert periods == ([] if window_only else [True] * 3)
        return out

    for source in ("dma", "dds"):
        got, want = blocks(source, False), blocks(source, True)
        assert np.std(np.frombuffer(got[0], "<i2")) > 100  # the tone is there
        assert got == want, source
