"""The emulated Pluto's sample timeline, seen by clients nobody here wrote (libiio's
iio_readdev and iio_writedev) and by pyadi-iio: contiguous RX buffers, streamed TX
played back to back, underflow and overflow where a Pluto has them, the AGC in
sample time, low rates, RSSI.

The streaming runs are short (1.5 s of samples at 1 MS/s: 91 boundaries) so CI
stays bounded; ``bench/pluto_stream_check.py --seconds 10`` is the long run."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from pathlib import Path as FsPath

import numpy as np
import pytest

import adi  # noqa: F401 - a project dependency

sys.path.insert(0, str(FsPath(__file__).resolve().parents[1] / "bench"))

import pluto_stream_check as check  # noqa: E402

from devices.sim.pluto_emulator import REG_DMA_STATUS, RX_OVERFLOW_BIT, TX_UNDERFLOW_BIT, serve  # noqa: E402

TOOLS = pytest.mark.skipif(shutil.which("iio_readdev") is None or shutil.which("iio_writedev") is None,
                           reason="libiio-utils (iio_readdev, iio_writedev) not installed")
RATE = 1_000_000
BUFFER = 16384


@pytest.fixture
def emulated():
    started = []

    def start(**opts):
        bench = check.make_bench()
        server, port = serve(bench, **opts)
        started.append(server)
        return bench, server.emulator, port

    yield start
    for s in started:
        s.stop()


@TOOLS
def test_iio_readdev_sees_a_cyclic_tone_without_a_discontinuity(emulated):
    _, emu, port = emulated()
    check.configure(emu, RATE)
    check.dds_tone(emu, round(RATE * 0.0371))
    y = check.readdev(port, int(1.5 * RATE), BUFFER, timeout_s=120)
    bad, bounds = check.discontinuities(y, BUFFER)
    assert bounds >= 90 and bad == 0


@TOOLS
def test_iio_readdev_sees_no_discontinuity_with_an_lo_offset(emulated):
    _, emu, port = emulated()
    check.configure(emu, RATE)
    with emu.lock:
        emu._set_lo(1, str(check.F0 + 200_000))  # the tone lands 200 kHz up
    check.dds_tone(emu, round(RATE * 0.0371))
    y = check.readdev(port, RATE // 2, 8192, timeout_s=120)
    bad, bounds = check.discontinuities(y, 8192)
    assert bounds >= 60 and bad == 0


@TOOLS
def test_streamed_tx_plays_back_to_back_then_underflows(emulated):
    _, emu, port = emulated()
    check.configure(emu, RATE)
    stop = threading.Event()
    # 32k-sample TX buffers: the 4 queued ahead give the feeding client (a thread of this busy process, a pipe,
    # iio_writedev) 131 ms of its own time, as a Pluto's DMA would; its own stall is an underflow, not the
    # emulator's, which is what this checks
    th = threading.Thread(target=check.stream_tx, args=(port, RATE, RATE * 0.0371, 3.0, 32768, stop), daemon=True)
    th.start()
    deadline = time.monotonic() + 10
    while not emu.tx_queue and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)  # iio_writedev's start-up (its first pushes may come late, as on a Pluto)
    with emu.lock:
        emu.tx_regs.values[REG_DMA_STATUS] = 0
    y = check.readdev(port, RATE, BUFFER, timeout_s=120)
    with emu.lock:
        streaming_status = emu.tx_regs.values[REG_DMA_STATUS]
    assert check.duty(y) > 0.99
    assert not streaming_status & TX_UNDERFLOW_BIT  # lockstep: the emulator's slowness starves nothing
    stop.set()
    th.join(timeout=60)
    assert not th.is_alive()


def test_an_empty_stream_queue_is_an_underflow(emulated):
    _, emu, port = emulated()
    sdr = adi.Pluto(f"ip:127.0.0.1:{port}")
    try:
        sdr.sample_rate = RATE
        sdr.tx_cyclic_buffer = False
        txdac = sdr._txdac
        txdac.reg_write(REG_DMA_STATUS, 0x7)
        sdr.tx(np.full(8192, 1000 * 16 + 0j))
        sdr.tx(np.full(8192, 1000 * 16 + 0j))  # queued behind the first: no gap
        assert len(emu.tx_queue) == 2 and emu.tx_queue[1][0] == emu.tx_queue[0][0] + 8192
        assert not txdac.reg_read(REG_DMA_STATUS) & TX_UNDERFLOW_BIT
        time.sleep(0.05)  # 16384 samples = 16 ms: played out
        assert txdac.reg_read(REG_DMA_STATUS) & TX_UNDERFLOW_BIT
    finally:
        sdr.tx_destroy_buffer()
        del sdr


def test_paced_clock_overflows_a_slow_reader_and_lockstep_does_not_for_a_slow_emulator(emulated):
    for clock, want in (("paced", True), ("lockstep", False)):
        bench, emu, port = emulated(clock=clock)
        real_read = bench.read

        def slow_read(n, real_read=real_read):  # the emulator computes at a tenth of the sample rate
            time.sleep(10 * n / RATE)
            return real_read(n)

        bench.read = slow_read
        sdr = adi.Pluto(f"ip:127.0.0.1:{port}")
        try:
            sdr.sample_rate = RATE
            sdr.rx_buffer_size = 1 << 15  # 4 blocks: 131 ms of the client's own time (robust on a loaded CI)
            sdr._rxadc.reg_write(REG_DMA_STATUS, 0x7)
            for _ in range(3):
                sdr.rx()
            assert bool(sdr._rxadc.reg_read(REG_DMA_STATUS) & RX_OVERFLOW_BIT) is want, clock
        finally:
            sdr.rx_destroy_buffer()
            del sdr


def test_paced_reader_that_keeps_up_does_not_overflow_and_waits_for_samples(emulated):
    _, emu, port = emulated(clock="paced")
    sdr = adi.Pluto(f"ip:127.0.0.1:{port}")
    try:
        sdr.sample_rate = RATE
        sdr.rx_buffer_size = 1 << 15
        sdr._rxadc.reg_write(REG_DMA_STATUS, 0x7)
        t0 = time.monotonic()
        for _ in range(8):
            sdr.rx()
        elapsed = time.monotonic() - t0
        assert elapsed > 7 * (1 << 15) / RATE  # samples come at the sample rate, not faster
        assert not sdr._rxadc.reg_read(REG_DMA_STATUS) & RX_OVERFLOW_BIT
    finally:
        sdr.rx_destroy_buffer()
        del sdr


def test_slow_agc_moves_by_sample_time_not_by_reads(emulated):
    _, emu, port = emulated()
    steps = {}
    check.configure(emu, RATE)
    for n in (1024, 16384):
        with emu.lock:
            emu.gain_mode = "slow_attack"
            emu.rx_gain_db = 71
            emu._apply_rx()
            emu._agc(+30.0, n / emu.rx_dma_hz)  # a block 42 dB above the target
            steps[n] = 71 - emu.rx_gain_db
    assert steps[1024] == 2  # one 1 ms update
    assert steps[16384] == 2 * 16  # sixteen


def test_rssi_and_low_rates(emulated):
    bench, emu, port = emulated()
    sdr = adi.Pluto(f"ip:127.0.0.1:{port}")
    try:
        for fs in (521_000, 3_000_000):
            sdr.sample_rate = fs
            sdr.rx_lo = sdr.tx_lo = check.F0
            sdr.gain_control_mode_chan0 = "manual"
            sdr.rx_hardwaregain_chan0 = 10
            sdr.tx_hardwaregain_chan0 = 0
            n = 4096
            f = fs * 37 / n
            sdr.tx_cyclic_buffer = True
            sdr.tx(np.rint(0.5 * 2047 * np.exp(2j * np.pi * f * np.arange(n) / fs)) * 16)
            sdr.rx_buffer_size = 1 << 14
            y = sdr.rx()
            sdr.rx_destroy_buffer()
            sdr.tx_destroy_buffer()
            spec = np.abs(np.fft.fft(y * np.hanning(y.size)))
            assert abs(np.fft.fftfreq(y.size, 1 / fs)[np.argmax(spec)] - f) < fs / y.size
            p_dbfs = 10 * np.log10(np.mean(np.abs(y / 2048) ** 2))
            rssi = float(sdr._get_iio_attr_str("voltage0", "rssi", False).split()[0])
            assert rssi == pytest.approx(10 - p_dbfs, abs=0.2)
        # the FPGA's x8 stage: the DMA at an eighth of the AD9361's rate
        sdr.sample_rate = 30_720_000
        for dev in (sdr._rxadc, sdr._txdac):
            dev.find_channel("voltage0", dev is sdr._txdac).attrs["sampling_frequency"].value = "3840000"
        assert bench.rx_config.sample_rate_hz == 3_840_000
    finally:
        sdr.rx_destroy_buffer()
        sdr.tx_destroy_buffer()
        del sdr
