"""A rig server whose radio is lost opens it again by itself: a rig at a distant site recovers with nobody there.

The served radio is a Pluto driver talking to an emulated Pluto in a process of its own (``harness emulate
pluto``), so the device is lost as a real one is: frozen (SIGSTOP, its capture misses the radio's deadline),
then resumed (SIGCONT), killed, or replaced by another board (another serial) on the same address. Meanwhile
the server keeps answering: status and describe as usual, control requests at once with an error naming the
device, when it was lost and when it is tried again. Once the device is back (the same one: serial and
firmware as served), the server has its transmitter stopped and serves captures again, without a restart.
"""

from __future__ import annotations

import signal
import subprocess
import time

import numpy as np
import pytest
import yaml

from devices import DeviceError, StreamConfig, open_radio
from devices.zmq import RemoteDeviceLost, ZmqRadio, parse_uri
from harness.remote.server import RigServer, Security
from harness.rig import Rig, load_rig
from tests.conftest import RIGS
from tests.remote_helpers import end_process, free_port, start_emulator, wait_until

BENCH = RIGS / "sim-amplifier.yaml"
RATE = 15.36e6
RX = StreamConfig(2140e6, RATE, 10.0, 0.8 * RATE)
N = 20_000


def _pluto_rig(tmp_path, port: int):
    """The rig file of the Pluto at ``port``: the bench's declared rig, its physics left out."""
    data = yaml.safe_load(BENCH.read_text())
    data = {k: v for k, v in data.items() if k not in ("dut", "sim")}
    data.update(name="distant-pluto", device=f"pluto:ip:127.0.0.1:{port}")
    rig_file = tmp_path / "distant-pluto.yaml"
    rig_file.write_text(yaml.safe_dump(data))
    return rig_file


def _server(tmp_path, port: int, probe_s: float = 5.0) -> RigServer:
    """A rig server on loopback for the Pluto at ``port``."""
    rig = Rig.open(load_rig(_pluto_rig(tmp_path, port)), calibration="optional")
    # waits short enough for a test; the open's deadline as a real server's (its radio's reconnect deadline)
    return RigServer(rig, "tcp://127.0.0.1:*", None, Security(insecure=True), lease_s=3.0, reopen_s=(0.5, 2.0),
                     reopen_deadline_s=3.0, probe_s=probe_s).start()


class _Served:
    """An emulated Pluto (a process of its own) on a free port and a rig server for it, both ended on leaving;
    :meth:`start` starts an emulator on the same port again (``seed`` 1: another board, serial SIM-1)."""

    def __init__(self, tmp_path, probe_s: float = 5.0):
        self.port = free_port()
        self.emulators = [start_emulator(BENCH, self.port, "--seed", "0")]
        self.server: RigServer | None = None
        try:
            self.server = _server(tmp_path, self.port, probe_s=probe_s)
        except BaseException:
            self.__exit__()
            raise
        self.uri = f"zmq://127.0.0.1:{self.server.port}?insecure=1"

    def start(self, seed: int = 0) -> subprocess.Popen:
        self.emulators.append(start_emulator(BENCH, self.port, "--seed", str(seed)))
        return self.emulators[-1]

    def __enter__(self):
        return self, self.server, self.uri, self.emulators[0]

    def __exit__(self, *exc):
        if self.server is not None:
            self.server.stop()
            self.server.rig.close()
        for emu in self.emulators:
            end_process(emu)


def _status(uri: str) -> tuple[dict, float]:
    """The server's status, asked without control, and how long the answer took (s)."""
    t0 = time.monotonic()
    r = ZmqRadio(uri, **parse_uri(uri), control=False)
    try:
        return r._request("status"), time.monotonic() - t0
    finally:
        r._closed = True
        r._teardown()


def _capture(uri: str) -> np.ndarray:
    with open_radio(uri) as r:
        r.configure_rx(RX)
        return r.capture(N).samples


def _power_db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(np.abs(x) ** 2))


def _lose(server: RigServer, emu: subprocess.Popen, uri: str) -> ZmqRadio:
    """Freeze the device under a client's capture: the server's deadline loses it, and the client with it."""
    r = open_radio(uri)
    r.configure_rx(RX)
    r.capture(N)
    emu.send_signal(signal.SIGSTOP)
    with pytest.raises(DeviceError, match="the rig server's radio is lost: pluto:ip:127.0.0.1:.*capture did not "
                                          "complete within its"):
        r.capture(N)
    assert r.lost is not None
    assert wait_until(lambda: _status(uri)[0]["radio"]["state"] == "lost", 10.0)
    return r


def test_lost_radio_comes_back_and_is_served_again(tmp_path):
    with _Served(tmp_path) as (bench, server, uri, emu):
        port = bench.port
        before = _capture(uri)
        first = server.radio
        client = _lose(server, emu, uri)
        lost_at = time.monotonic()
        # while it is lost: control refused at once, naming the device, the loss and the next attempt; status
        # and describe answer as usual
        t0 = time.monotonic()
        with pytest.raises(RemoteDeviceLost) as e:
            open_radio(uri)
        refused_s = time.monotonic() - t0
        msg = str(e.value)
        assert f"acquire: the rig server's radio is lost: pluto:ip:127.0.0.1:{port} lost at " in msg
        assert "capture did not complete within its" in msg and ("attempt" in msg or "opens it again in" in msg)
        assert e.value.detail["device"] == f"pluto:ip:127.0.0.1:{port}" and e.value.detail["lost_for_s"] >= 0
        # the attempts meet a frozen device: each ends at its deadline, none holds the server
        assert wait_until(lambda: _status(uri)[0]["radio"]["attempts"] >= 2, 30.0, 0.2)
        st, status_s = _status(uri)
        assert st["radio"]["state"] == "lost" and st["radio"]["device"] == f"pluto:ip:127.0.0.1:{port}"
        assert "deadline" in st["radio"]["last_error"] or "has not returned yet" in st["radio"]["last_error"]
        assert st["radio"]["next_attempt_in_s"] <= 2.0 and st["rig"]["name"] == "distant-pluto"
        assert not st["transmitting"] and st["holder"] == client.session.hex()[:8]  # its heartbeat keeps it
        with pytest.raises(DeviceError, match="device lost"):  # the lost client stays lost until reconnected
            client.capture(N)
        # the device comes back: the server opens it again and serves a capture, with no restart
        emu.send_signal(signal.SIGCONT)
        back = time.monotonic()
        assert wait_until(lambda: _status(uri)[0]["radio"]["state"] == "serving", 30.0, 0.05)
        reopened_s = time.monotonic() - back
        client.reconnect()  # the same client, its lease kept: usable again
        client.configure_rx(RX)
        again = client.capture(N).samples
        served_s = time.monotonic() - back
        client.close()
        after = _capture(uri)  # and a new connection
        assert abs(_power_db(again) - _power_db(before)) < 1.0
        assert server.radio is not first and server.radio.lost is None and first.lost is not None
        assert server.radio.tx_confirmed_off and not server.radio.transmitting
        assert server.counters["radio_lost"] == 1 and server.counters["radio_reopened"] == 1
        st, _ = _status(uri)
        assert st["radio"]["last_reopen"]["attempts"] >= 2 and st["radio"]["reopened"] == 1
        assert st["radio"]["identity"]["serial"] == "SIM-0"
        # the same bench through the same board: the same signal level (its noise aside)
        assert after.size == N and abs(_power_db(after) - _power_db(before)) < 1.0
        assert np.any(after != before)  # a new capture, not a stale buffer
        print(f"\nlost radio: control refused in {refused_s * 1e3:.1f} ms, status in {status_s * 1e3:.1f} ms "
              f"while lost ({st['radio']['last_reopen']['attempts']} attempts over "
              f"{st['radio']['last_reopen']['lost_for_s']:.1f} s); device back -> serving in {reopened_s:.2f} s, "
              f"first capture served {served_s:.2f} s after SIGCONT ({back - lost_at:.1f} s after the loss)")


def test_radio_that_stays_lost_then_comes_back_as_another_board(tmp_path):
    """Gone for good (the emulator killed): every attempt fails, each control request is refused at once with
    the reason, and nothing hangs. Then another board (serial SIM-1) answers at the address: it is refused, not
    served with the description and calibration of SIM-0."""
    with _Served(tmp_path) as (bench, server, uri, emu):
        _lose(server, emu, uri).close()
        emu.send_signal(signal.SIGKILL)
        emu.wait(timeout=30)
        assert wait_until(lambda: "cannot open PlutoSDR" in _status(uri)[0]["radio"]["last_error"], 40.0, 0.2), \
            _status(uri)[0]["radio"]
        worst = 0.0
        for _ in range(5):
            t0 = time.monotonic()
            with pytest.raises(RemoteDeviceLost, match="the server is opening it again: attempt \\d+ failed "
                                                       "\\(DeviceError: pluto:ip:127.0.0.1:\\d+: cannot open "
                                                       "PlutoSDR.*next attempt in "
                                                       "\\d+\\.\\d s"):
                open_radio(uri)
            worst = max(worst, time.monotonic() - t0)
            time.sleep(0.2)
        assert worst < 2.0  # one round trip, never the client's timeout (2 s a try)
        st, _ = _status(uri)
        assert st["radio"]["state"] == "lost" and st["radio"]["reopened"] == 0 and server.radio.lost is not None
        # another board on the same address: refused by its identity
        bench.start(seed=1)
        assert wait_until(lambda: _status(uri)[0]["radio"]["state"] == "refused", 30.0, 0.2)
        with pytest.raises(RemoteDeviceLost) as e:
            open_radio(uri)
        msg = str(e.value)
        assert "it came back as another device: serial 'SIM-1' (was 'SIM-0')" in msg
        assert "restart 'harness serve'" in msg and e.value.detail["identity_refused"] is True
        assert server.counters.get("radio_reopened", 0) == 0 and server.radio.lost is not None
        print(f"\nradio gone: control refused within {worst * 1e3:.1f} ms each; another board: {msg[-260:]}")


def test_radio_lost_while_transmitting_is_opened_again_in_the_safe_state():
    """A simulated rig whose radio freezes while it transmits with the thru switched in (its stop hangs too, so
    the lost handle cannot confirm it off): the server opens a new radio after its first wait, stops its
    transmitter through it, sets the DUT switch as the interlocks knew it (thru), and serves captures: the
    thru's level at the RX port, the server's own bench figures (a freshly opened sim bench plays nothing)."""
    import threading
    from dataclasses import replace

    from tests.remote_helpers import serve, stop

    cw = (0.5 * np.exp(2j * np.pi * np.arange(4096) / 64)).astype(np.complex64)
    tx = StreamConfig(2.14e9, RATE, 0.0)
    s = serve(RIGS / "sim-amplifier.yaml", seed=0, lease_s=5.0, reopen_s=(0.3, 1.0))
    old = s.radio
    old.deadlines = replace(old.deadlines, capture_margin_s=0.5, stop_s=0.5, close_s=0.5)
    hang, frozen = threading.Event(), [False]
    capture, stop_tx = old._capture, old._stop_tx
    old._capture = lambda n, t: (frozen[0] and hang.wait(30)) or capture(n, t)
    old._stop_tx = lambda: (frozen[0] and hang.wait(30)) or stop_tx()
    uri = f"zmq://127.0.0.1:{s.port}?insecure=1"
    try:
        r = open_radio(uri)
        r.set_dut_bypass(True)
        r.configure_tx(tx)
        r.transmit(cw, level=0.5)
        r.configure_rx(RX)
        playing = r.capture(N).samples
        frozen[0] = True
        with pytest.raises(DeviceError, match="the server could not confirm its transmitter off"):
            r.capture(N)
        assert old.lost is not None and not old.tx_confirmed_off and old.bench._wave is not None
        r.close()
        assert wait_until(lambda: s.radio is not old and s.counters.get("radio_reopened") == 1, 20.0)
        new = s.radio
        assert new.tx_confirmed_off and not new.transmitting and new.bench._wave is None
        assert new.bench.bypass_dut and s.bypassed  # the switch as the interlocks assume it
        st, _ = _status(uri)
        assert st["radio"]["state"] == "serving" and st["radio"]["last_reopen"]["cause"].startswith("sim:: capture")
        quiet = _capture(uri)
        assert _power_db(quiet) < _power_db(playing) - 30  # nothing plays through the thru now
        with open_radio(uri) as again:  # and control works as before: transmit through the thru again
            again.configure_tx(tx)
            again.transmit(cw, level=0.5)
            again.configure_rx(RX)
            assert abs(_power_db(again.capture(N).samples) - _power_db(playing)) < 1.0
        assert not new.transmitting
    finally:
        hang.set()
        stop(s)


def test_radio_whose_device_vanishes_is_opened_again_once_it_is_back(tmp_path):
    """The emulator killed (SIGKILL) while a client holds the radio: no deadline is missed, the connection
    breaks. The server's radio is lost at the next call with the broken connection as its cause (not a
    'device' error on every request from then on), control is refused naming it, and once an emulator of the
    same board (serial SIM-0) listens on the same port again, the server opens it and serves a capture: no
    restart."""
    with _Served(tmp_path) as (bench, server, uri, emu):
        port = bench.port
        device = f"pluto:ip:127.0.0.1:{port}"
        before = _capture(uri)
        first = server.radio
        client = open_radio(uri)
        client.configure_rx(RX)
        client.capture(N)
        emu.kill()
        emu.wait(timeout=30)
        killed = time.monotonic()
        with pytest.raises(RemoteDeviceLost) as e:
            client.capture(N)
        noticed_s = time.monotonic() - killed
        msg = str(e.value)
        assert f"the rig server's radio is lost: device lost: {device}: capture failed, the device is gone (" in msg
        assert noticed_s < first.deadlines.capture_s(N, RATE)  # at once, not at the capture's deadline
        assert client.lost is not None
        client.close()
        assert wait_until(lambda: _status(uri)[0]["radio"]["state"] == "lost", 10.0)
        st, _ = _status(uri)
        cause = st["radio"]["cause"]
        assert cause.startswith(f"{device}: capture failed, the device is gone (") and \
            any(f"({name}: " in cause for name in ("EPIPE", "ECONNRESET", "ECONNREFUSED", "ENOTCONN")), cause
        assert first.lost == cause and not st["transmitting"]
        # control refused at once, naming the device and the broken connection; attempts fail while nobody listens
        with pytest.raises(RemoteDeviceLost) as e:
            open_radio(uri)
        assert f"acquire: the rig server's radio is lost: {device} lost at " in str(e.value)
        assert "the device is gone" in str(e.value)
        assert wait_until(lambda: "cannot open PlutoSDR" in _status(uri)[0]["radio"]["last_error"], 30.0, 0.1)
        assert server.counters.get("radio_reopened", 0) == 0
        # the same board back on the same port: served again
        emu = bench.start()
        back = time.monotonic()
        assert wait_until(lambda: _status(uri)[0]["radio"]["state"] == "serving", 30.0, 0.05)
        after = _capture(uri)
        served_s = time.monotonic() - back
        assert server.radio is not first and server.radio.lost is None and server.radio.tx_confirmed_off
        assert server.counters["radio_lost"] == 1 and server.counters["radio_reopened"] == 1
        st, _ = _status(uri)
        assert st["radio"]["identity"]["serial"] == "SIM-0" and st["radio"]["last_reopen"]["cause"] == cause
        assert after.size == N and abs(_power_db(after) - _power_db(before)) < 1.0
        print(f"\nvanished device: lost {noticed_s * 1e3:.1f} ms after SIGKILL ({cause}); emulator back -> first "
              f"capture served {served_s:.2f} s later ({back - killed:.1f} s after the kill)")


def test_idle_radio_whose_device_vanishes_is_lost_without_a_request(tmp_path):
    """Nobody uses the radio when its emulator is killed: the server's probe of its idle radio (every 0.2 s
    here) finds the device gone, so status says "lost" and the re-opening starts with no client request made;
    once an emulator of the same board listens on the same port again, it is served again."""
    probe_s = 0.2
    with _Served(tmp_path, probe_s=probe_s) as (bench, server, uri, emu):
        port = bench.port
        device = f"pluto:ip:127.0.0.1:{port}"
        before = _capture(uri)
        first = server.radio
        assert first.probes
        calls = []
        probe = first._probe
        first._probe = lambda: (calls.append(1), probe())[1]
        # idle and healthy: probed several times, still serving
        assert wait_until(lambda: len(calls) >= 5, 20.0, 0.05)
        assert first.lost is None and _status(uri)[0]["radio"]["state"] == "serving"
        assert server.counters.get("probe_lost", 0) == 0
        emu.kill()
        emu.wait(timeout=30)
        killed = time.monotonic()
        # status only (no control, no device request): the probe alone finds the loss
        assert wait_until(lambda: server._loss is not None, 10.0, 0.01)
        noticed_s = time.monotonic() - killed
        st, _ = _status(uri)
        assert st["radio"]["state"] == "lost" and st["radio"]["device"] == device
        cause = st["radio"]["cause"]
        assert cause.startswith(f"{device}: probe failed, the device is gone (") and \
            any(f"({name}: " in cause for name in ("EPIPE", "ECONNRESET", "ECONNREFUSED", "ENOTCONN")), cause
        assert first.lost == cause and not st["transmitting"] and st["holder"] is None
        assert server.counters["probe_lost"] == 1 and server.counters["radio_lost"] == 1
        assert noticed_s < 10 * probe_s + first.deadlines.probe_s  # generous: a few probe intervals
        # the re-opening has begun by itself: its attempts fail while nobody listens
        assert wait_until(lambda: "cannot open PlutoSDR" in _status(uri)[0]["radio"]["last_error"], 30.0, 0.1)
        with pytest.raises(RemoteDeviceLost, match="probe failed, the device is gone"):
            open_radio(uri)
        emu = bench.start()
        assert wait_until(lambda: _status(uri)[0]["radio"]["state"] == "serving", 30.0, 0.05)
        after = _capture(uri)
        assert server.radio is not first and server.radio.lost is None and server.radio.tx_confirmed_off
        assert server.counters["radio_reopened"] == 1 and server.counters["radio_lost"] == 1
        assert after.size == N and abs(_power_db(after) - _power_db(before)) < 1.0
        print(f"\nidle device killed: status 'lost' {noticed_s * 1e3:.0f} ms after SIGKILL with a {probe_s} s probe "
              f"interval ({cause})")


def test_probing_a_healthy_idle_sim_radio_changes_nothing():
    """A sim rig probed every 0.05 s while idle, for many probes: never lost, the bench transmits nothing, and
    the RX and TX settings a client applied stay as they were (the probe reads, it never sets)."""
    from tests.remote_helpers import serve, stop

    s = serve(RIGS / "sim-amplifier.yaml", seed=0, lease_s=5.0, probe_s=0.05)
    radio = s.radio
    calls = []
    probe = radio._probe
    radio._probe = lambda: (calls.append(1), probe())[1]
    uri = f"zmq://127.0.0.1:{s.port}?insecure=1"
    try:
        tx = StreamConfig(2.14e9, RATE, -5.0)
        with open_radio(uri) as r:
            r.configure_tx(tx)
            r.configure_rx(RX)
            rx_set, tx_set = radio.rx_config, radio.tx_config
            bench_rx, bench_tx = radio.bench.rx_config, radio.bench.tx_config
            assert wait_until(lambda: len(calls) >= 10, 20.0, 0.05)
            assert radio.rx_config == rx_set and radio.tx_config == tx_set
            assert radio.bench.rx_config == bench_rx and radio.bench.tx_config == bench_tx
            assert not radio.transmitting and radio.bench._wave is None
            r.capture(N)  # and the radio serves as before
        assert wait_until(lambda: len(calls) >= 20, 20.0, 0.05)
        st = s.counters
        assert radio.lost is None and s._loss is None and s.radio is radio
        assert st.get("probe_lost", 0) == 0 and st.get("radio_lost", 0) == 0
        assert not radio.transmitting and radio.tx_confirmed_off and radio.bench._wave is None
    finally:
        stop(s)


# ------------------------------------------------------------------ harness serve's timing options
def test_serve_probe_option_reaches_the_server():
    """`harness serve --probe-s 0.1`: status states the interval, and the idle radio is probed that often (many
    probes where the default 5 s would make none yet, never more than one per interval); `--probe-s 0`:
    never probed."""
    from tests.remote_helpers import serve_process

    off, off_port = serve_process(RIGS / "sim-amplifier.yaml", "--insecure", "--probe-s", "0")
    fast, fast_port = serve_process(RIGS / "sim-amplifier.yaml", "--insecure", "--probe-s", "100 ms",
                                    "--reopen-first-s", "0.5", "--reopen-max-s", "4")
    off_uri, uri = (f"zmq://127.0.0.1:{p}?insecure=1" for p in (off_port, fast_port))
    try:
        st, _ = _status(uri)
        assert st["radio"]["probe_s"] == 0.1 and st["radio"]["reopen_s"] == [0.5, 4.0]
        t0 = time.monotonic()
        first = _status(uri)[0]["counters"].get("probes", 0)
        assert wait_until(lambda: _status(uri)[0]["counters"].get("probes", 0) >= first + 10, 20.0, 0.05)
        last = _status(uri)[0]["counters"]["probes"]
        span = time.monotonic() - t0
        # the server waits probe_s idle between probes: at most one per interval over the span
        assert last - first <= span / 0.1 + 1, (last - first, span)
        st, _ = _status(uri)
        assert st["radio"]["state"] == "serving" and st["counters"].get("probe_lost", 0) == 0
        st, _ = _status(off_uri)
        assert st["radio"]["probe_s"] == 0.0 and st["radio"]["reopen_s"] == [1.0, 30.0]  # the defaults
        assert st["counters"].get("probes", 0) == 0 and st["radio"]["state"] == "serving"
        print(f"\n--probe-s 0.1: {last - first} probes of the idle sim radio in {span:.2f} s; --probe-s 0: none")
    finally:
        end_process(off)
        end_process(fast)


def test_serve_reopen_options_reach_the_server(tmp_path):
    """`harness serve --probe-s 0.2 --reopen-first-s 2.5 --reopen-max-s 5` on an emulated Pluto: frozen
    (SIGSTOP) while idle, its probe misses the deadline and the radio is lost with no client request; resumed at
    once, it is opened again by the first attempt, which comes no sooner than the given first wait (the default
    1 s would come sooner)."""
    from tests.remote_helpers import serve_process

    first_s = 2.5
    port = free_port()
    emu = start_emulator(BENCH, port, "--seed", "0")
    server = None
    try:
        server, server_port = serve_process(_pluto_rig(tmp_path, port), "--insecure", "--probe-s", "0.2",
                                            "--reopen-first-s", str(first_s), "--reopen-max-s", "5", lease_s=3.0)
        uri = f"zmq://127.0.0.1:{server_port}?insecure=1"
        device = f"pluto:ip:127.0.0.1:{port}"
        st, _ = _status(uri)
        assert st["radio"]["state"] == "serving" and st["radio"]["reopen_s"] == [first_s, 5.0]
        assert st["radio"]["probe_s"] == 0.2
        emu.send_signal(signal.SIGSTOP)
        assert wait_until(lambda: _status(uri)[0]["radio"]["state"] == "lost", 20.0, 0.02)
        st, _ = _status(uri)
        emu.send_signal(signal.SIGCONT)
        assert st["radio"]["cause"].startswith(f"{device}: probe did not complete within its ")
        assert st["radio"]["attempts"] == 0 and st["radio"]["next_attempt_in_s"] <= first_s
        assert st["counters"]["probe_lost"] == 1
        assert wait_until(lambda: _status(uri)[0]["radio"]["state"] == "serving", 30.0, 0.05)
        st, _ = _status(uri)
        again = st["radio"]["last_reopen"]
        assert st["radio"]["reopened"] == 1 and again["attempts"] == 1
        assert again["lost_for_s"] >= first_s, again
        assert _capture(uri).size == N  # served again, no restart
        print(f"\n--reopen-first-s {first_s}: the frozen-then-resumed Pluto opened again {again['lost_for_s']:.2f} s "
              f"after its loss (attempt 1)")
    finally:
        if server is not None:
            end_process(server)
        end_process(emu)


@pytest.mark.parametrize("args, option, value", [
    (["--probe-s", "-1"], "--probe-s", "'-1'"),
    (["--probe-s", "nan"], "--probe-s", "'nan'"),
    (["--probe-s", "2 Hz"], "--probe-s", "'2 Hz'"),
    (["--probe-s", "1e6"], "--probe-s", "'1e6'"),
    (["--reopen-first-s", "0"], "--reopen-first-s", "'0'"),
    (["--reopen-max-s", "soon"], "--reopen-max-s", "'soon'"),
    (["--lease", "-5"], "--lease", "'-5'"),
    (["--lease", "inf"], "--lease", "'inf'"),
])
def test_serve_refuses_a_bad_timing_option(monkeypatch, capsys, args, option, value):
    """A bad value: exit 2 (usage), one message naming the option and the value, nothing opened."""
    from harness.cli import main

    opened = []
    monkeypatch.setattr(Rig, "open", classmethod(lambda cls, *a, **k: opened.append(a) or 1 / 0))
    with pytest.raises(SystemExit) as e:
        main(["serve", "--rig", "sim-amplifier", "--insecure", *args])
    assert e.value.code == 2 and opened == []
    line = capsys.readouterr().err.splitlines()[-1]
    assert line.startswith(f"harness serve: error: argument {option}: ") and value in line, line


def test_serve_refuses_a_first_wait_longer_than_the_longest(monkeypatch, capsys):
    from harness.cli import build_parser, main

    opened = []
    monkeypatch.setattr(Rig, "open", classmethod(lambda cls, *a, **k: opened.append(a) or 1 / 0))
    assert main(["serve", "--rig", "sim-amplifier", "--insecure", "--reopen-first-s", "5",
                 "--reopen-max-s", "2"]) == 2
    assert opened == []
    assert "harness: --reopen-first-s 5 is longer than --reopen-max-s 2" in capsys.readouterr().err
    # accepted: a quantity in seconds, 0 turning the probe off; the defaults are the server's
    from harness.remote import PROBE_S, REOPEN_FIRST_S, REOPEN_MAX_S

    a = build_parser().parse_args(["serve", "--rig", "x", "--probe-s", "500 ms", "--reopen-max-s", "2 min"])
    assert (a.probe_s, a.reopen_first_s, a.reopen_max_s, a.lease) == (0.5, REOPEN_FIRST_S, 120.0, 10.0)
    assert (PROBE_S, REOPEN_FIRST_S, REOPEN_MAX_S) == (5.0, 1.0, 30.0)
    assert build_parser().parse_args(["serve", "--rig", "x"]).probe_s == PROBE_S
    assert build_parser().parse_args(["serve", "--rig", "x", "--probe-s", "0"]).probe_s == 0.0
