"""Deadlines on every device call: a hung device is reported lost, signals still land, reconnecting is verified."""

from __future__ import annotations

import errno
import os
import signal
import threading
import time

import numpy as np
import pytest

from conftest import RIGS
from remote_helpers import end_process, free_port, start_emulator
from devices import (Capabilities, Capture, CaptureMeta, Deadlines, DeviceError, DeviceGone, DeviceLost, DeviceTimeout,
                     Radio, Range, StreamConfig, open_radio, stop_all_transmitters)
from devices.radio import _ACTIVE_TX, GONE_ERRNOS, device_gone

FS = 1e6
FAST = Deadlines(configure_s=0.5, transmit_s=0.5, stop_s=0.5, close_s=0.5, reconnect_s=1.0,
                 capture_margin_s=0.5, capture_factor=2.0)


class FakeRadio(Radio):
    """Hooks that record their thread and hang (until released, at most 60 s) when told to."""

    scheme = "fake"

    def __init__(self, hang=(), raise_in=None, slow=None):
        super().__init__("fake:bench-7")
        self.deadlines = FAST
        self.hang = set(hang)
        self.raise_in = raise_in or {}
        self.slow = slow or {}
        self.release = threading.Event()
        self.calls: list[tuple[str, str]] = []
        self.tx_on = False

    @property
    def capabilities(self) -> Capabilities:
        r = Range(0.0, 6e9)
        return Capabilities("fake", r, Range(1e5, 1e8), r, Range(-90, 0), Range(0, 70))

    def _hook(self, what: str) -> None:
        self.calls.append((what, threading.current_thread().name))
        if what in self.raise_in:
            raise self.raise_in[what]
        if what in self.slow:
            time.sleep(self.slow[what])
        if what in self.hang:
            self.release.wait(60)

    def _configure_tx(self, config):
        self._hook("configure_tx")
        return config

    def _configure_rx(self, config):
        self._hook("configure_rx")
        return config

    def _transmit(self, samples, cyclic):
        self._hook("transmit")
        self.tx_on = True

    def _stop_tx(self):
        self._hook("stop_tx")
        self.tx_on = False

    def _close(self):
        self._hook("close")

    def _capture(self, n_samples, timeout_s):
        self._hook("capture")
        return Capture(np.zeros(n_samples, np.complex64), CaptureMeta(self.rx_config, self.now(), n_samples))


@pytest.fixture(autouse=True)
def ctrl_c_raises():
    """SIGINT raises KeyboardInterrupt here whatever the parent did (a process started in the background by a
    shell, or by some runners, inherits SIGINT ignored)."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


@pytest.fixture
def fakes():
    made = []

    def make(**kw):
        r = FakeRadio(**kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.release.set()  # the abandoned threads end
        r.close()
        _ACTIVE_TX.discard(r)


def ready(r: Radio, transmit: bool = True) -> Radio:
    r.configure_tx(StreamConfig(1e9, FS, -10))
    r.configure_rx(StreamConfig(1e9, FS, 30))
    if transmit:
        r.transmit(np.full(100, 0.5, np.complex64))
    return r


def test_hooks_run_in_order_on_the_radios_own_thread(fakes):
    r = ready(fakes())
    r.capture(100)
    r.stop_tx()
    names = [c[0] for c in r.calls]
    assert names == ["configure_tx", "configure_rx", "transmit", "capture", "stop_tx"]
    threads = {c[1] for c in r.calls}
    assert len(threads) == 1 and threading.current_thread().name not in threads
    assert r.tx_confirmed_off and r.lost is None


def test_hook_exception_reaches_the_caller_unchanged(fakes):
    err = DeviceError("synthesizer unlocked")
    r = ready(fakes(raise_in={"capture": err}))
    with pytest.raises(DeviceError) as e:
        r.capture(100)
    assert e.value is err
    assert r.lost is None
    r.configure_rx(StreamConfig(1e9, FS, 20))  # still usable


def test_hung_capture_times_out_and_the_radio_is_lost(fakes):
    r = ready(fakes(hang={"capture", "stop_tx", "close"}))
    deadline = FAST.capture_s(1000, FS)
    t0 = time.monotonic()
    with pytest.raises(DeviceTimeout) as e:
        r.capture(1000)
    waited = time.monotonic() - t0
    assert deadline - 0.01 <= waited <= deadline + 0.5, waited
    msg = str(e.value)
    assert "fake:bench-7" in msg and "capture" in msg and f"{deadline:.3g} s" in msg
    assert r.lost == msg

    # every later call fails at once, naming the capture timeout
    for call in (lambda: r.capture(10), lambda: r.configure_rx(StreamConfig(1e9, FS, 20)),
                 lambda: r.configure_tx(StreamConfig(1e9, FS, -20)),
                 lambda: r.transmit(np.full(10, 0.1, np.complex64))):
        t0 = time.monotonic()
        with pytest.raises(DeviceLost, match="capture did not complete within"):
            call()
        assert time.monotonic() - t0 < 0.1
    assert isinstance(DeviceLost("x"), DeviceError) and isinstance(DeviceTimeout("x"), DeviceError)

    # stop_tx still tries once, on its own thread, and says the transmitter is not known to be off
    t0 = time.monotonic()
    assert r.stop_tx() is False
    assert time.monotonic() - t0 <= FAST.stop_s + 0.3
    assert r.tx_confirmed_off is False and not r.transmitting
    assert r in set(_ACTIVE_TX)  # the exit hook tries again
    assert [c[0] for c in r.calls].count("stop_tx") == 1

    # the exit safety net is bounded too
    t0 = time.monotonic()
    stop_all_transmitters()
    assert time.monotonic() - t0 <= FAST.stop_s + 0.3
    assert [c[0] for c in r.calls].count("stop_tx") == 1  # the first attempt is still in flight: no second one

    # a driver without a reconnect hook says so; the radio stays lost
    with pytest.raises(DeviceError, match="cannot reconnect") as e:
        r.reconnect()
    assert not isinstance(e.value, DeviceLost)
    assert r.lost is not None

    t0 = time.monotonic()
    r.close()  # bounded (one more wait for the stop in flight, then the release), quiet: the loss was reported
    assert time.monotonic() - t0 <= FAST.stop_s + FAST.close_s + 0.3
    assert [c[0] for c in r.calls][-1] == "close"  # tried, on a thread of its own


def test_a_stop_that_completes_on_a_lost_radio_is_confirmed(fakes):
    r = ready(fakes(hang={"capture"}))
    with pytest.raises(DeviceTimeout):
        r.capture(1000)
    assert r.stop_tx() is True and r.tx_confirmed_off and not r.tx_on
    assert r not in set(_ACTIVE_TX)
    stop_threads = {c[1] for c in r.calls if c[0] == "stop_tx"}
    capture_threads = {c[1] for c in r.calls if c[0] == "capture"}
    assert stop_threads.isdisjoint(capture_threads)  # not queued behind the stuck call
    with pytest.raises(DeviceLost):  # confirmed off, still lost
        r.capture(10)


def _driver_error(what: str, code: int) -> DeviceError:
    """What the pluto driver raises for libiio's OSError: a DeviceError with the OSError as its cause."""
    try:
        try:
            raise OSError(code, os.strerror(code))
        except OSError as e:
            raise DeviceError(f"fake:bench-7: {what} failed: {e}") from e
    except DeviceError as d:
        return d


def test_a_connection_reset_loses_the_radio_at_once(fakes):
    """The device's connection breaks (an iiod killed: ECONNRESET under the driver's DeviceError): no deadline
    is missed, yet the radio is lost, as after a missed one."""
    err = _driver_error("capture", errno.ECONNRESET)
    r = ready(fakes(raise_in={"capture": err}))
    with pytest.raises(DeviceLost) as e:
        r.capture(100)
    msg = str(e.value)
    assert msg.startswith("device lost: fake:bench-7: capture failed, the device is gone (ECONNRESET: ")
    assert e.value.__cause__ is err  # the driver's error, and libiio's under it, kept for the log
    assert r.lost == msg[len("device lost: "):msg.index("; reconnect()")]
    n_calls = len(r.calls)
    for call in (lambda: r.capture(10), lambda: r.configure_rx(StreamConfig(1e9, FS, 20))):
        with pytest.raises(DeviceLost, match="capture failed, the device is gone \\(ECONNRESET"):
            call()
    assert len(r.calls) == n_calls  # refused at once: nothing more asked of the device
    # the stop is still tried once (here it goes through), then the transmitter is confirmed off
    assert r.stop_tx() is True and r.tx_confirmed_off and not r.tx_on
    assert [c[0] for c in r.calls].count("stop_tx") == 1
    with pytest.raises(DeviceError, match="cannot reconnect"):
        r.reconnect()
    assert r.lost.endswith("(ECONNRESET: Connection reset by peer)")  # the first cause is kept


def test_a_stop_that_finds_the_device_gone_loses_the_radio(fakes):
    err = _driver_error("stopping the transmitter", errno.EPIPE)
    r = ready(fakes(raise_in={"stop_tx": err}))
    with pytest.raises(DeviceLost, match="stop_tx failed, the device is gone \\(EPIPE: Broken pipe\\)"):
        r.stop_tx()
    assert not r.tx_confirmed_off and r in set(_ACTIVE_TX)  # not known to be off: the exit hook tries again
    assert r.stop_tx() is False  # one more try, on its own thread: it fails as the device is gone


@pytest.mark.parametrize("code", [errno.EINVAL, errno.EIO, errno.ENOENT, errno.ETIMEDOUT])
def test_an_ordinary_device_error_does_not_lose_the_radio(fakes, code):
    """A value refused (EINVAL), one request failing (EIO): the caller's error, the radio still usable."""
    err = _driver_error("configure_rx", code)
    r = ready(fakes(), transmit=False)
    r.raise_in["configure_rx"] = err
    with pytest.raises(DeviceError) as e:
        r.configure_rx(StreamConfig(1e9, FS, 20))
    assert e.value is err and not isinstance(e.value, DeviceLost)
    assert r.lost is None and device_gone(err) is None
    r.raise_in.clear()
    assert r.configure_rx(StreamConfig(1e9, FS, 20)).gain_db == 20 and r.capture(100).samples.size == 100


def test_what_counts_as_gone():
    assert {errno.ECONNRESET, errno.ECONNREFUSED, errno.EPIPE, errno.ENOTCONN, errno.ENODEV, errno.ENXIO,
            errno.ESHUTDOWN} <= GONE_ERRNOS
    assert not {errno.EINVAL, errno.EIO, errno.ETIMEDOUT, errno.EBUSY, errno.EAGAIN} & GONE_ERRNOS
    assert device_gone(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")) == \
        "ECONNREFUSED: Connection refused"
    # as the context of another exception (raised in an except block without "from")
    try:
        try:
            raise OSError(errno.ENODEV, "No such device")
        except OSError:
            raise RuntimeError("refill failed")
    except RuntimeError as e:
        assert device_gone(e) == "ENODEV: No such device"
    # a driver that says the broken connection is not the reason ("from None")
    try:
        try:
            raise OSError(errno.ECONNREFUSED, "Connection refused")
        except OSError:
            raise DeviceError("no such device at that address") from None
    except DeviceError as e:
        assert device_gone(e) is None
    # a driver that knows (no errno to tell it)
    assert device_gone(DeviceError("x")) is None
    assert device_gone(DeviceGone("the SoapySDR device was unplugged")) == "the SoapySDR device was unplugged"


def test_a_driver_raising_device_gone_loses_the_radio(fakes):
    r = fakes(raise_in={"configure_tx": DeviceGone("board unplugged")})
    with pytest.raises(DeviceLost, match="configure_tx failed, the device is gone \\(board unplugged\\)"):
        r.configure_tx(StreamConfig(1e9, FS, -10))
    assert r.lost == "fake:bench-7: configure_tx failed, the device is gone (board unplugged)"


def test_a_hung_stop_times_out_and_is_the_root_cause(fakes):
    r = ready(fakes(hang={"stop_tx"}))
    t0 = time.monotonic()
    with pytest.raises(DeviceTimeout, match="stop_tx did not complete within its 0.5 s deadline"):
        r.stop_tx()
    assert time.monotonic() - t0 <= FAST.stop_s + 0.3
    assert not r.tx_confirmed_off
    with pytest.raises(DeviceLost, match="stop_tx did not complete"):
        r.capture(10)


def test_a_call_queued_behind_an_interrupted_one_gets_its_time_too(fakes):
    """Ctrl-C while a capture runs: the capture finishes on the worker, and the stop after it is not 'late'."""
    r = ready(fakes(slow={"capture": 1.5}))
    r.deadlines = Deadlines(stop_s=0.3, capture_margin_s=3.0, capture_factor=0.0)
    threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        r.capture(100)
    assert r.stop_tx() is True and r.lost is None
    assert [c[0] for c in r.calls][-2:] == ["capture", "stop_tx"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signals_interrupt_a_wait_on_a_hung_hook(fakes, signum):
    class Terminated(Exception):
        pass

    def on_term(sig, frame):
        raise Terminated()

    expected = KeyboardInterrupt if signum == signal.SIGINT else Terminated
    old = signal.signal(signal.SIGTERM, on_term) if signum == signal.SIGTERM else None
    r = ready(fakes(hang={"capture"}), transmit=False)
    r.deadlines = Deadlines(capture_margin_s=20.0)
    sent = []

    def send():
        sent.append(time.monotonic())
        os.kill(os.getpid(), signum)

    timer = threading.Timer(0.3, send)
    try:
        timer.start()
        with pytest.raises(expected):
            r.capture(1000)
        latency = time.monotonic() - sent[0]
    finally:
        timer.cancel()
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    print(f"\n{signal.Signals(signum).name} -> exception in the main thread after {latency * 1e3:.1f} ms")
    assert latency < 1.0
    assert r.lost is None  # an interrupted wait is not a lost device


def _hanging_sim(release: threading.Event):
    r = open_radio("sim:")
    ready(r)
    r.capture(1000)  # the first read builds the models (~0.4 s), before the short deadlines
    r.deadlines = FAST
    real_read = r.bench.read
    state = {"hang": True}

    def read(n):
        if state["hang"]:
            release.wait(60)
        return real_read(n)

    r.bench.read = read
    return r, state


def test_sim_reconnects_once_the_transmitter_is_confirmed_off():
    release = threading.Event()
    r, state = _hanging_sim(release)
    try:
        with pytest.raises(DeviceTimeout):
            r.capture(1000)
        assert r.stop_tx() is True  # the bench stops even though the capture hangs
        state["hang"] = False
        r.reconnect()
        assert r.lost is None and r.tx_confirmed_off and not r.bench.transmitting
        assert r.capture(1000).samples.size == 1000
        r.transmit(np.full(100, 0.5, np.complex64))
        assert r.bench.transmitting
        r.reconnect()  # not lost: nothing to do
        assert r.transmitting
    finally:
        release.set()
        r.close()
    assert not r.bench.transmitting


# ----- a real emulated PlutoSDR (libiio over TCP) in a process of its own, frozen with SIGSTOP

@pytest.fixture
def emulator():
    port = free_port()
    proc = start_emulator(RIGS / "sim-amplifier.yaml", port)
    try:
        yield proc, port
    finally:
        end_process(proc)


def test_frozen_emulated_pluto_is_lost_within_the_deadline_then_reconnects(emulator):
    proc, port = emulator
    r = open_radio(f"pluto:ip:127.0.0.1:{port}", settle_s=0.0)
    try:
        fs, n = 7.68e6, 16384
        r.configure_tx(StreamConfig(2.14e9, fs, -30))
        r.configure_rx(StreamConfig(2.14e9, fs, 20))
        t = np.arange(7680)
        r.transmit((0.5 * np.exp(2j * np.pi * 0.75e6 * t / fs)).astype(np.complex64), cyclic=True)
        assert r.capture(n).samples.size == n

        proc.send_signal(signal.SIGSTOP)
        deadline = r.deadlines.capture_s(n, fs)
        t0 = time.monotonic()
        with pytest.raises(DeviceTimeout, match="capture did not complete"):
            r.capture(n)
        to_timeout = time.monotonic() - t0
        t0 = time.monotonic()
        confirmed = r.stop_tx()
        to_stop = time.monotonic() - t0
        print(f"\nfrozen emulator: DeviceTimeout after {to_timeout:.3f} s (deadline {deadline:.3f} s); "
              f"stop_tx returned {confirmed} after {to_stop:.3f} s (deadline {r.deadlines.stop_s:g} s)")
        assert deadline - 0.01 <= to_timeout <= deadline + 0.5
        assert to_stop <= r.deadlines.stop_s + 0.5
        assert confirmed is False and not r.tx_confirmed_off
        with pytest.raises(DeviceLost, match="capture did not complete"):
            r.configure_rx(StreamConfig(2.14e9, fs, 20))

        proc.send_signal(signal.SIGCONT)
        t0 = time.monotonic()
        r.reconnect()
        print(f"reconnect after SIGCONT took {time.monotonic() - t0:.3f} s")
        assert r.lost is None and r.tx_confirmed_off
        assert r.capture(n).samples.size == n
        r.transmit((0.5 * np.exp(2j * np.pi * 0.75e6 * t / fs)).astype(np.complex64), cyclic=True)
        assert r.capture(n).samples.size == n
        assert r.stop_tx() is True
    finally:
        proc.send_signal(signal.SIGCONT)
        r.close()


def test_killed_emulated_pluto_is_lost_at_once_then_reconnects_to_a_new_one(emulator):
    """The emulator killed (SIGKILL: its socket closes, as an iiod that dies or reboots): libiio's broken pipe
    loses the radio on the next call, well within its deadline, not a device error on every call after it."""
    proc, port = emulator
    r = open_radio(f"pluto:ip:127.0.0.1:{port}", settle_s=0.0)
    again = None
    try:
        fs, n = 7.68e6, 16384
        rx = StreamConfig(2.14e9, fs, 20)
        r.configure_tx(StreamConfig(2.14e9, fs, -30))
        r.configure_rx(rx)
        r.transmit(np.full(7680, 0.5, np.complex64), cyclic=True)
        assert r.capture(n).samples.size == n
        proc.kill()
        proc.wait(timeout=10)
        t0 = time.monotonic()
        with pytest.raises(DeviceLost) as e:
            r.capture(n)
        to_lost = time.monotonic() - t0
        msg = str(e.value)
        assert f"pluto:ip:127.0.0.1:{port}: capture failed, the device is gone (" in msg
        assert any(f"({errno.errorcode[c]}: " in msg for c in GONE_ERRNOS), msg
        assert to_lost < r.deadlines.capture_s(n, fs)
        assert r.stop_tx() is False and not r.tx_confirmed_off  # tried once: nobody answers
        t0 = time.monotonic()
        with pytest.raises(DeviceLost, match="capture failed, the device is gone"):
            r.configure_rx(rx)
        refused = time.monotonic() - t0
        with pytest.raises(DeviceError, match="cannot open PlutoSDR"):
            r.reconnect()  # nothing listens: the radio stays lost
        assert r.lost is not None
        print(f"\nkilled emulator: DeviceLost after {to_lost * 1e3:.1f} ms (capture deadline "
              f"{r.deadlines.capture_s(n, fs):.3g} s), later calls refused in {refused * 1e3:.2f} ms: {msg}")
        again = start_emulator(RIGS / "sim-amplifier.yaml", port)
        r.reconnect()
        assert r.lost is None and r.tx_confirmed_off
        assert r.capture(n).samples.size == n
    finally:
        r.close()
        if again is not None:
            end_process(again)
