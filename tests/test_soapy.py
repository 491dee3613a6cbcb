"""SoapySDR driver: real bindings with the null device, and the stream logic against a scripted fake."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest

from conftest import required

from devices import soapy
from devices.radio import CapabilityError, DeviceError, DeviceLost, DeviceTimeout, StreamConfig
from devices.soapy import (CF32, CORRUPTION, CS16, END_BURST, HAS_TIME, NOT_SUPPORTED, OVERFLOW,
                           SOAPY_SDR_RX, SOAPY_SDR_TX, STREAM_ERROR, TIME_ERROR, TIMEOUT, UNDERFLOW,
                           SoapyRadio, open_soapy, read_contiguous)

try:
    import SoapySDR
except ImportError as e:  # CI installs it (scripts/system-deps.sh); a bare checkout may not
    SoapySDR = None
    _why = f"SoapySDR bindings not importable ({e}); run scripts/system-deps.sh {sys.executable}"
needs_soapy = required(_why if SoapySDR is None else None)

FS = 1e6


# ----- a scripted fake of SoapySDR.Device ----------------------------------------------

class Res:
    """Like SoapySDR.StreamResult."""

    def __init__(self, ret, flags=0, timeNs=0):
        self.ret, self.flags, self.timeNs = ret, flags, timeNs


class FRange:
    def __init__(self, lo, hi, step=0.0):
        self.lo, self.hi, self.st = lo, hi, step

    def minimum(self):
        return self.lo

    def maximum(self):
        return self.hi

    def step(self):
        return self.st


def source(k0, n):
    """The fake's RX signal: sample k of the device stream (distinct for every k)."""
    k = np.arange(k0, k0 + n)
    return (0.5 * np.exp(2j * np.pi * 0.01234 * k) * (1 + (k % 7) / 100)).astype(np.complex64)


class FakeDevice:
    """Scripted device.

    RX script items: ``("data", k)`` delivers the next k source samples,
    ``("drop", g)`` loses g samples in the device (no return), ``("put", array)``
    delivers the given samples, an int is returned as readStream's code.
    When the script is exhausted readStream returns TIMEOUT and advances
    ``now`` by the timeout (a fake clock for the timeout tests).
    """

    def __init__(self, rx=(), n_rx=1, n_tx=1, timestamps=True, formats=(CS16, CF32),
                 native=(CS16, 2048.0), status=(), write=None, cs16_scale=2048.0):
        self.rx = list(rx)
        self.n = {SOAPY_SDR_RX: n_rx, SOAPY_SDR_TX: n_tx}
        self.timestamps = timestamps
        self.formats = list(formats)
        self.native = native
        self.cs16_scale = cs16_scale  # ints per unit the fake delivers on a CS16 stream
        self.status = list(status)
        self.write_script = list(write or [])
        self.counter = 0  # device-side sample index of the next RX sample
        self.now = 0.0
        self.calls: list[tuple] = []
        self.written: list[tuple[np.ndarray, int]] = []
        self.settings: dict = {}
        self.lock = threading.Lock()
        self.closed = False

    # capabilities
    def getNumChannels(self, d):
        return self.n[d]

    def getFrequencyRange(self, d, ch):
        return [FRange(70e6, 3e9), FRange(3.3e9, 6e9)]

    def getSampleRateRange(self, d, ch):
        return [FRange(1e5, 61.44e6)]

    def listSampleRates(self, d, ch):
        return []

    def getGainRange(self, d, ch):
        return FRange(0.0, 73.0 if d == SOAPY_SDR_RX else 89.75, 0.25)

    def getBandwidthRange(self, d, ch):
        return [FRange(1.5e6, 56e6)]

    def listBandwidths(self, d, ch):
        return []

    def getStreamFormats(self, d, ch):
        return self.formats

    def getNativeStreamFormat(self, d, ch):
        if self.native is None:
            raise TypeError("missing 1 required positional argument: 'fullScale'")  # the 0.8 binding
        return self.native

    def getHardwareInfo(self):
        return {"serial": "F4KE01", "fw": "1.2"}

    def getDriverKey(self):
        return "fake"

    def getHardwareKey(self):
        return "FakeBoard"

    def __getattr__(self, name):  # setX/getX for settings
        if name.startswith("set"):
            return lambda d, ch, v: self.settings.__setitem__((name[3:], d, ch), v)
        if name.startswith("get"):
            return lambda d, ch: self.settings.get((name[3:], d, ch), 0.0)
        raise AttributeError(name)

    # streams
    def setupStream(self, d, fmt, chans):
        self.calls.append(("setup", d, fmt))
        return ("stream", d, fmt)

    def activateStream(self, s):
        self.calls.append(("activate", s[1]))
        return 0

    def deactivateStream(self, s):
        self.calls.append(("deactivate", s[1]))
        return 0

    def closeStream(self, s):
        self.calls.append(("close", s[1]))

    def getStreamMTU(self, s):
        return 100

    def readStream(self, s, buffs, n, timeoutUs=100000):
        buf = buffs[0]
        while self.rx and isinstance(self.rx[0], tuple) and self.rx[0][0] == "drop":
            self.counter += self.rx.pop(0)[1]
        if not self.rx:
            self.now += timeoutUs * 1e-6
            time.sleep(min(timeoutUs * 1e-6, 0.01))
            return Res(TIMEOUT)
        item = self.rx.pop(0)
        if isinstance(item, int):
            return Res(item)
        kind, arg = item
        if kind == "data":
            k = min(arg, n)
            x = source(self.counter, k)
        else:
            x = np.asarray(arg, np.complex64)
            k = min(len(x), n)
            x = x[:k]
        t_ns = round(self.counter * 1e9 / FS)
        if kind == "data" and k < arg:  # the rest stays in the device for the next read
            self.rx.insert(0, ("data", arg - k))
        if buf.dtype == np.int16:
            buf[:k, 0] = np.round(x.real * self.cs16_scale)
            buf[:k, 1] = np.round(x.imag * self.cs16_scale)
        else:
            buf[:k] = x
        self.counter += k
        return Res(k, HAS_TIME if self.timestamps else 0, t_ns if self.timestamps else 0)

    def writeStream(self, s, buffs, n, flags=0, timeNs=0, timeoutUs=100000):
        time.sleep(0.0005)
        with self.lock:
            if self.write_script:
                code = self.write_script.pop(0)
                if code <= 0:
                    return Res(code)
            self.written.append((np.array(buffs[0][:n]), flags))
        return Res(n)

    def readStreamStatus(self, s, timeoutUs=100000):
        with self.lock:
            if self.status:
                return Res(*self.status.pop(0))
        time.sleep(min(timeoutUs * 1e-6, 0.002))
        return Res(TIMEOUT)

    def close(self):
        self.closed = True


def fake_radio(dev, **opts) -> SoapyRadio:
    r = SoapyRadio("soapy:driver=fake", {"driver": "fake"}, device=dev, **opts)
    r.configure_rx(StreamConfig(freq_hz=2.14e9, sample_rate_hz=FS, gain_db=20.0))
    return r


def read(dev, n, **kw):
    buf = np.zeros(n, np.complex64)
    kw.setdefault("clock", lambda: dev.now)
    res = read_contiguous(dev, "s", buf, FS, kw.pop("timeout_s", 1.0), **kw)
    return buf, res


# ----- real bindings: the null device ---------------------------------------------------

@needs_soapy
def test_constants_match_the_bindings():
    for name in ("TIMEOUT", "STREAM_ERROR", "CORRUPTION", "OVERFLOW", "NOT_SUPPORTED", "TIME_ERROR",
                 "UNDERFLOW", "END_BURST", "HAS_TIME", "END_ABRUPT", "ONE_PACKET", "MORE_FRAGMENTS",
                 "TX", "RX", "CF32", "CS16"):
        mine = getattr(soapy, name if name not in ("TX", "RX") else f"SOAPY_SDR_{name}")
        assert mine == getattr(SoapySDR, f"SOAPY_SDR_{name}"), name


@needs_soapy
def test_null_device_opens_and_reports_no_channels():
    with open_soapy("soapy:driver=null,type=null", "driver=null,type=null") as r:
        caps = r.capabilities
        assert caps.driver == "soapy/null"
        assert (caps.rx_channels, caps.tx_channels) == (0, 0)
        assert caps.tune_range_hz.high == 0.0 and caps.sample_rate_range_hz.high == 0.0
        with pytest.raises(CapabilityError, match=r"no RX channel \(getNumChannels\(SOAPY_SDR_RX\) = 0\)"):
            r.configure_rx(StreamConfig(freq_hz=1e9, sample_rate_hz=1e6, gain_db=0))
        with pytest.raises(CapabilityError, match="no TX channel.*needs a transmitter"):
            r.configure_tx(StreamConfig(freq_hz=1e9, sample_rate_hz=1e6, gain_db=0))
        with pytest.raises(DeviceError, match="configure_tx"):
            r.transmit(np.zeros(8, np.complex64))
    assert r._dev.__closed__  # the SoapySDR device was unmade
    with pytest.raises(DeviceError, match="closed"):
        r.configure_rx(StreamConfig(freq_hz=1e9, sample_rate_hz=1e6, gain_db=0))


@needs_soapy
def test_null_device_native_format_through_the_c_api():
    # SoapySDR's default Device::getNativeStreamFormat: CS16 with full scale 2^15.
    dev = SoapySDR.Device("driver=null,type=null")
    assert soapy.native_stream_format(dev, SOAPY_SDR_RX, 0) == ("CS16", 32768.0)
    dev.close()


@needs_soapy
def test_null_device_streams_are_not_supported():
    # The real binding signatures of readStream/writeStream/readStreamStatus, on the null device.
    dev = SoapySDR.Device("driver=null,type=null")
    rx = dev.setupStream(SOAPY_SDR_RX, CF32, [0])
    with pytest.raises(DeviceError, match=r"NOT_SUPPORTED \(-5\).*does not stream"):
        read_contiguous(dev, rx, np.zeros(64, np.complex64), FS, 1.0)
    faults, lock = [], threading.Lock()
    tx = dev.setupStream(SOAPY_SDR_TX, CF32, [0])
    w = soapy.TxWorker(dev, tx, np.zeros(10, np.complex64), False, FS, 1024, faults, lock)
    w.start()
    assert w.done.wait(5)
    assert w.error == "writeStream failed with NOT_SUPPORTED (-5)"
    assert [(f["error"], f["fatal"]) for f in faults] == [("NOT_SUPPORTED", True)]
    dev.close()


@needs_soapy
def test_unknown_soapy_device_is_a_device_error():
    with pytest.raises(DeviceError, match="could not open"):
        open_soapy("soapy:driver=nosuchdriver", "driver=nosuchdriver")


def test_missing_bindings_say_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "SoapySDR", None)
    with pytest.raises(DeviceError, match=r"python3-soapysdr.*scripts/system-deps.sh"):
        open_soapy("soapy:driver=lime", "driver=lime")


def test_parse_args():
    assert soapy.parse_args("driver=uhd, serial=31A ,type=b200") == {"driver": "uhd", "serial": "31A",
                                                                     "type": "b200"}
    with pytest.raises(DeviceError, match="key=value"):
        soapy.parse_args("driver=uhd,bogus")


# ----- capabilities from a fake ---------------------------------------------------------

def test_capabilities_come_from_the_device():
    r = SoapyRadio("soapy:driver=fake", {}, device=FakeDevice(n_rx=2, n_tx=1))
    c = r.capabilities
    assert (c.rx_channels, c.tx_channels, c.serial) == (2, 1, "F4KE01")
    assert (c.tune_range_hz.low, c.tune_range_hz.high) == (70e6, 6e9)
    assert (c.rx_gain_range_db.high, c.tx_gain_range_db.high) == (73.0, 89.75)
    assert "FakeBoard" in c.description
    # 3.1 GHz is inside the span but in the gap between the two tuning segments
    with pytest.raises(CapabilityError, match="70..3000, 3300..6000 MHz"):
        r.configure_tx(StreamConfig(freq_hz=3.1e9, sample_rate_hz=FS, gain_db=0))
    with pytest.raises(CapabilityError, match="TX channel 1 does not exist"):
        r.configure_tx(StreamConfig(freq_hz=1e9, sample_rate_hz=FS, gain_db=0, channel=1))
    got = r.configure_rx(StreamConfig(freq_hz=1e9, sample_rate_hz=FS, gain_db=10, channel=1))
    assert (got.freq_hz, got.sample_rate_hz, got.gain_db, got.channel) == (1e9, FS, 10.0, 1)


def test_device_without_tx_refuses_tx_plan():
    r = SoapyRadio("soapy:driver=rtl", {}, device=FakeDevice(n_tx=0))
    with pytest.raises(CapabilityError, match="no TX channel"):
        r.configure_tx(StreamConfig(freq_hz=1e9, sample_rate_hz=FS, gain_db=0))


# ----- RX: scripted readStream -----------------------------------------------------------

def test_clean_capture_in_chunks_is_the_device_stream():
    dev = FakeDevice(rx=[("data", 300), TIMEOUT, ("data", 250), 0, ("data", 500)])
    r = fake_radio(dev)
    cap = r.capture(1000)
    np.testing.assert_array_equal(cap.samples, source(0, 1000))
    assert cap.meta.ok and cap.meta.extra["rx_restarts"] == 0 and cap.meta.extra["stream_format"] == CF32
    assert cap.meta.extra["hw_time_ns"] == 0
    assert abs(cap.meta.timestamp - time.time()) < 5
    assert dev.calls.count(("activate", SOAPY_SDR_RX)) == dev.calls.count(("deactivate", SOAPY_SDR_RX)) == 1


def test_overflow_restarts_for_a_contiguous_block():
    dev = FakeDevice(rx=[("data", 300), ("drop", 50), OVERFLOW, ("data", 1000)])
    buf, res = read(dev, 600)
    # the block restarted at the first sample after the hole: source sample 350
    np.testing.assert_array_equal(buf, source(350, 600))
    assert not res.overflow and res.restarts == 1 and res.dropped_samples == 0
    assert res.events[0]["event"] == "overflow" and res.events[0]["gap_samples"] == 50
    assert res.hw_time_ns == round(350 * 1e9 / FS)


def test_overflow_after_all_restarts_is_marked_not_stitched():
    dev = FakeDevice(rx=[("data", 200), ("drop", 30), OVERFLOW, ("data", 200), ("drop", 70), OVERFLOW,
                         ("data", 400)])
    r = fake_radio(dev, max_restarts=1)
    cap = r.capture(500)
    m = cap.meta
    assert m.overflow and not m.ok and m.dropped_samples == 70
    assert m.extra["discontinuities"] == [200] and m.extra["rx_restarts"] == 1
    assert "RX overflow" in m.faults()
    # first attempt (0..199) discarded; block = source 230..429 then, after the 70-sample hole, 500..
    np.testing.assert_array_equal(cap.samples[:200], source(230, 200))
    np.testing.assert_array_equal(cap.samples[200:], source(500, 300))


def test_overflow_without_timestamps_marks_dropped_unknown():
    dev = FakeDevice(rx=[("data", 100), ("drop", 10), OVERFLOW, ("data", 100)], timestamps=False)
    buf, res = read(dev, 200, max_restarts=0)
    assert res.overflow and res.dropped_unknown and res.dropped_samples == 0
    assert res.discontinuities == [100]


def test_timestamp_gap_without_an_error_code_is_caught():
    dev = FakeDevice(rx=[("data", 100), ("drop", 25), ("data", 100), ("data", 100)])
    buf, res = read(dev, 200)
    assert res.restarts == 1 and res.events[0] == {**res.events[0], "event": "timestamp_gap",
                                                   "gap_samples": 25}
    np.testing.assert_array_equal(buf, source(125, 200))


def test_corruption_is_a_discontinuity():
    dev = FakeDevice(rx=[("data", 100), ("drop", 5), CORRUPTION, ("data", 100)])
    buf, res = read(dev, 200, max_restarts=0)
    assert res.overflow and res.dropped_samples == 5 and res.events[0]["event"] == "corruption"
    dev = FakeDevice(rx=[CORRUPTION, ("data", 100)])  # before any sample: nothing to mark or restart
    buf, res = read(dev, 100)
    assert not res.overflow and res.restarts == 0 and res.events[0]["at_sample"] == 0


def test_timeout_raises_after_the_overall_timeout():
    dev = FakeDevice(rx=[("data", 100)])
    with pytest.raises(DeviceError, match=r"RX timeout: 100 of 500 samples in 0.3 s"):
        read(dev, 500, timeout_s=0.3)
    assert 0.3 <= dev.now < 0.9  # gave up at the deadline, not before and not much after


@pytest.mark.parametrize("code,name", [(STREAM_ERROR, "STREAM_ERROR"), (NOT_SUPPORTED, "NOT_SUPPORTED"),
                                       (TIME_ERROR, "TIME_ERROR"), (UNDERFLOW, "UNDERFLOW"), (-99, "error -99")])
def test_fatal_rx_codes_raise_and_deactivate(code, name):
    dev = FakeDevice(rx=[("data", 50), code, ("data", 100)])
    r = fake_radio(dev)
    with pytest.raises(DeviceError, match=rf"{name} \({code}\) after 50 of 100"):
        r.capture(100)
    assert dev.calls.count(("activate", SOAPY_SDR_RX)) == dev.calls.count(("deactivate", SOAPY_SDR_RX))
    r.close()
    assert ("close", SOAPY_SDR_RX) in dev.calls and dev.closed


@pytest.mark.parametrize("native,thr", [((CS16, 2048.0), 2047 / 2048), (("CS8", 128.0), 127 / 128),
                                        ((CS16, 32768.0), 2047 / 2048), (None, 0.99)])
def test_clipping_flagged_at_the_largest_native_code(native, thr):
    # the largest native code is clipping, one code below it is not
    lsb = 1 / native[1] if native else 0.001
    x = np.full(100, 0.25 + 0.25j, np.complex64)
    x[[3, 40]] = thr
    x[50] = -1j
    x[70] = 1j * thr
    x[60] = thr - lsb
    dev = FakeDevice(rx=[("put", x)], native=native)
    cap = fake_radio(dev).capture(100)
    assert cap.meta.overload and cap.meta.clipped_samples == 4
    assert cap.meta.extra["clip_threshold"] == pytest.approx(thr, abs=1e-5)
    assert "ADC overload (4 clipped samples)" in cap.meta.faults()
    dev = FakeDevice(rx=[("put", x[60:61].repeat(10))], native=native)
    cap = fake_radio(dev).capture(10)
    assert not cap.meta.overload and cap.meta.clipped_samples == 0 and cap.meta.ok


@pytest.mark.parametrize("native,full", [((CS16, 2048.0), 2048.0), (("CS8", 128.0), 32768.0)])
def test_cs16_stream_scaled_by_native_full_scale(native, full):
    # CS16 is in native scale only when it is the native format; otherwise full 16-bit width
    dev = FakeDevice(rx=[("data", 256)], formats=[CS16], native=native, cs16_scale=full)
    cap = fake_radio(dev).capture(256)
    assert cap.meta.extra["stream_format"] == CS16 and cap.samples.dtype == np.complex64
    ref = source(0, 256)
    expect = (np.round(ref.real * full) + 1j * np.round(ref.imag * full)) / full
    np.testing.assert_allclose(cap.samples, expect, atol=1e-7)
    assert np.max(np.abs(cap.samples - ref)) <= 0.5 / full * np.sqrt(2) + 1e-7


# ----- TX ----------------------------------------------------------------------------------

def tx_radio(dev, **opts):
    r = fake_radio(dev, **opts)
    r.configure_tx(StreamConfig(freq_hz=2.14e9, sample_rate_hz=FS, gain_db=10.0))
    return r


def wait_for(cond, timeout_s=3.0):
    end = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(0.005)
    return True


def test_cyclic_tx_repeats_the_waveform_and_stops():
    dev = FakeDevice()
    r = tx_radio(dev)
    wave = source(0, 37) * 0.9
    r.transmit(wave, cyclic=True)
    assert wait_for(lambda: len(dev.written) > 20)
    r.stop_tx()
    assert not r.transmitting and r._tx_worker is None
    data = [w for w, f in dev.written]
    flags = [f for w, f in dev.written]
    assert flags[-1] == END_BURST and not np.any(data[-1]) and not any(flags[:-1])
    sent = np.concatenate(data[:-1])
    assert len(sent) >= 20 * 100
    np.testing.assert_array_equal(sent, np.resize(wave, len(sent)))  # seamless repetition
    assert dev.calls[-2:] == [("deactivate", SOAPY_SDR_TX), ("close", SOAPY_SDR_TX)]
    n = len(dev.written)
    time.sleep(0.05)
    assert len(dev.written) == n  # nothing written after stop


def test_burst_tx_sends_the_waveform_once_with_end_burst():
    dev = FakeDevice(status=[(0, END_BURST)])
    r = tx_radio(dev)
    wave = source(0, 250) * 0.9
    r.transmit(wave, cyclic=False)
    assert r.wait_tx(3)
    assert r._tx_worker.burst_acked
    np.testing.assert_array_equal(np.concatenate([w for w, f in dev.written]), wave)
    assert [f for w, f in dev.written] == [0, 0, END_BURST]
    r.close()
    assert ("close", SOAPY_SDR_TX) in dev.calls and dev.closed


def test_tx_underflow_reported_in_faults_and_next_capture():
    dev = FakeDevice(rx=[("data", 100), ("data", 100)], status=[(UNDERFLOW,)])
    r = tx_radio(dev)
    r.transmit(source(0, 64) * 0.5)
    assert wait_for(lambda: r.tx_faults())
    f = r.tx_faults()
    assert [(x["error"], x["code"], x["where"], x["fatal"]) for x in f] == [
        ("UNDERFLOW", UNDERFLOW, "readStreamStatus", False)]
    cap = r.capture(100)
    assert [x["error"] for x in cap.meta.extra["tx_faults"]] == ["UNDERFLOW"]
    assert r.capture(100).meta.extra["tx_faults"] == []  # reported once
    assert r.transmitting  # an underflow does not stop the playback
    r.close()


def test_fatal_tx_error_stops_writer_and_fails_next_capture():
    dev = FakeDevice(rx=[("data", 100)], write=[1, 1, STREAM_ERROR])
    r = tx_radio(dev)
    r.transmit(source(0, 64) * 0.5)
    assert r.wait_tx(3)
    assert [(x["error"], x["fatal"]) for x in r.tx_faults()] == [("STREAM_ERROR", True)]
    with pytest.raises(DeviceError, match="transmitter failed.*STREAM_ERROR"):
        r.capture(100)
    r.stop_tx()
    assert dev.calls.count(("close", SOAPY_SDR_TX)) == 1
    assert r.capture(100).meta.n_samples == 100


def test_tx_write_underflow_and_time_error_recorded_playback_continues():
    dev = FakeDevice(write=[UNDERFLOW, TIME_ERROR])
    r = tx_radio(dev)
    r.transmit(source(0, 64) * 0.5)
    assert wait_for(lambda: len(dev.written) > 5)
    r.stop_tx()
    assert [(x["error"], x["where"], x["fatal"]) for x in r.tx_faults()] == [
        ("UNDERFLOW", "writeStream", False), ("TIME_ERROR", "writeStream", False)]


def test_tx_stopped_on_close_and_on_exceptions():
    dev = FakeDevice()
    with pytest.raises(RuntimeError, match="boom"):
        with tx_radio(dev) as r:
            r.transmit(source(0, 64) * 0.5)
            worker = r._tx_worker
            raise RuntimeError("boom")
    assert not r.transmitting and worker.done.is_set() and worker.stop_event.is_set()
    assert ("deactivate", SOAPY_SDR_TX) in dev.calls and ("close", SOAPY_SDR_TX) in dev.calls
    assert dev.closed

    # activateStream failing inside transmit(): the base class stops TX, the stream is closed
    dev = FakeDevice()
    r = tx_radio(dev)
    dev.activateStream = lambda s: -2 if s[1] == SOAPY_SDR_TX else 0
    with pytest.raises(DeviceError, match=r"activateStream\(TX\) failed with STREAM_ERROR"):
        r.transmit(source(0, 64) * 0.5)
    assert not r.transmitting and ("close", SOAPY_SDR_TX) in dev.calls
    r.close()


def test_tx_over_full_scale_refused_before_streaming():
    dev = FakeDevice()
    r = tx_radio(dev)
    with pytest.raises(DeviceError, match="full scale"):
        r.transmit(np.full(10, 1.5, np.complex64))
    assert ("setup", SOAPY_SDR_TX, CF32) not in dev.calls


# ----- the liveness probe (Radio.probe -> _probe: RX channel 0's frequency) --------------------------------

class ProbedDevice(FakeDevice):
    """The fake with a frequency getter that records its calls, and raises ``fail`` or stalls (until
    ``release``, at most 60 s) when told to."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.freq_reads: list[tuple[int, int]] = []
        self.fail: BaseException | None = None
        self.stall = False
        self.release = threading.Event()

    def getFrequency(self, d, ch):
        self.freq_reads.append((d, ch))
        if self.fail is not None:
            raise self.fail
        if self.stall:
            self.release.wait(60)
        return self.settings.get(("Frequency", d, ch), 0.0)


def probed_radio(**deadlines) -> tuple[ProbedDevice, SoapyRadio]:
    from dataclasses import replace

    dev = ProbedDevice(rx=[("data", 1000)] * 4)
    r = fake_radio(dev)
    r.deadlines = replace(r.deadlines, **deadlines)
    dev.freq_reads.clear()  # those of configure_rx, which reads back what it set
    return dev, r


def test_probe_of_a_healthy_device_reads_rx0_frequency_and_changes_nothing():
    dev, r = probed_radio()
    assert r.probes
    settings, calls, rx = dict(dev.settings), list(dev.calls), r.rx_config
    for _ in range(3):
        assert r.probe() is True
    assert dev.freq_reads == [(SOAPY_SDR_RX, 0)] * 3  # one read each, nothing else asked
    assert dev.settings == settings and dev.calls == calls  # nothing set, no stream set up or started
    assert r.rx_config == rx and dev.settings[("Frequency", SOAPY_SDR_RX, 0)] == 2.14e9
    assert r.lost is None and not r.transmitting and not dev.written
    np.testing.assert_array_equal(r.capture(1000).samples, source(0, 1000))  # and it serves as before
    r.close()


def test_probe_driver_error_is_a_device_error_not_a_loss():
    """What the SoapySDR bindings raise for a driver's failure (RuntimeError, no errno): the probe fails with a
    DeviceError naming the device and the read, but by devices/radio.py's rules that is no loss (only a
    deadline missed or a gone errno is): the radio stays usable."""
    dev, r = probed_radio()
    dev.fail = RuntimeError("getFrequency: remote device not responding")
    with pytest.raises(DeviceError) as e:
        r.probe()
    assert not isinstance(e.value, DeviceLost)
    assert str(e.value) == ("soapy:driver=fake: probe (getFrequency) failed: getFrequency: remote device not "
                            "responding")
    assert isinstance(e.value.__cause__, RuntimeError) and r.lost is None
    dev.fail = None
    assert r.probe() is True
    np.testing.assert_array_equal(r.capture(1000).samples, source(0, 1000))
    r.close()


def test_probe_meeting_a_gone_device_loses_the_radio_at_once():
    """A frequency read failing with a gone errno (ENODEV: unplugged) under the driver's error: the radio is
    lost as by any call, the errno named, no deadline waited for."""
    import errno
    import os

    dev, r = probed_radio(probe_s=30.0)
    dev.fail = OSError(errno.ENODEV, os.strerror(errno.ENODEV))
    t0 = time.monotonic()
    with pytest.raises(DeviceLost) as e:
        r.probe()
    assert time.monotonic() - t0 < 30.0
    assert r.lost == "soapy:driver=fake: probe failed, the device is gone (ENODEV: No such device)"
    assert str(e.value).startswith(f"device lost: {r.lost}")
    reads = len(dev.freq_reads)
    with pytest.raises(DeviceLost, match="probe failed, the device is gone"):
        r.probe()  # refused at once: nothing more asked of the device
    assert len(dev.freq_reads) == reads == 1
    r.close()


def test_probe_of_a_stalled_device_misses_its_deadline_and_loses_the_radio():
    """A frequency read that never returns (a hung driver, a board wedged on its bus): the probe gives up at
    ``Deadlines.probe_s`` with DeviceTimeout, and the radio is lost, as the other drivers' probes are."""
    dev, r = probed_radio(probe_s=0.3)
    dev.stall = True
    try:
        t0 = time.monotonic()
        with pytest.raises(DeviceTimeout) as e:
            r.probe()
        waited = time.monotonic() - t0
        assert 0.3 - 0.01 <= waited <= 0.3 + 0.5, waited
        assert str(e.value) == "soapy:driver=fake: probe did not complete within its 0.3 s deadline"
        assert r.lost == str(e.value) and dev.freq_reads == [(SOAPY_SDR_RX, 0)]
        with pytest.raises(DeviceLost, match="probe did not complete within its 0.3 s deadline"):
            r.capture(100)
    finally:
        dev.release.set()  # the abandoned read returns
        r.close()
    assert dev.closed


@needs_soapy
def test_null_device_probe_answers_through_the_bindings():
    # the real binding's getFrequency signature, on the null device (it answers 0 Hz and changes nothing)
    with open_soapy("soapy:driver=null,type=null", "driver=null,type=null") as r:
        assert r.probes and r.probe() is True and r.lost is None
