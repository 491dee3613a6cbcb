"""Rig server safety: CURVE allow-list (default deny, refusals logged), --insecure only on loopback, TX
interlocks from the server's rig file (nothing transmitted), one controller at a time, lease expiry."""

from __future__ import annotations

import logging
import re
import threading

import numpy as np
import pytest

from devices import DeviceError, DeviceTimeout, StreamConfig, open_radio
from devices.zmq import RemoteBusy, RemoteRefused
from devices.zmq_wire import key_fingerprint
from harness.cli import main
from harness.remote.keys import load_public, new_key_pair
from harness.remote.server import RigServer, Security, ServeError, is_loopback
from harness.rig import Rig, load_rig
from tests.conftest import RIGS, write_rig
from tests.remote_helpers import serve, stop, wait_until

CW = (0.5 * np.exp(2j * np.pi * np.arange(4096) / 64)).astype(np.complex64)  # -6 dBFS RMS
INSIDE = StreamConfig(2.14e9, 15.36e6, 0.0)


@pytest.fixture
def server():
    s = serve(RIGS / "sim-amplifier.yaml", lease_s=1.0)
    yield s
    stop(s)


def uri(server, extra=""):
    return f"zmq://127.0.0.1:{server.port}?insecure=1{extra}"


def bench_idle(server) -> bool:
    return server.radio.bench._wave is None and not server.radio.transmitting


# ------------------------------------------------------------------ interlocks
def test_tx_outside_band_refused_nothing_transmitted(server):
    with open_radio(uri(server)) as r:
        with pytest.raises(RemoteRefused, match=r"outside the allowed TX bands \(limits.tx_bands: 1700-2700 MHz\)") as e:
            r.configure_tx(StreamConfig(3.5e9, 15.36e6, -30.0))
        assert e.value.limit == "limits.tx_bands"
        # a band edge: LO inside, but LO + rate/2 beyond 2700 MHz
        with pytest.raises(RemoteRefused, match="tx_bands"):
            r.configure_tx(StreamConfig(2.695e9, 15.36e6, -30.0))
        assert bench_idle(server)


def test_tx_above_dut_limit_refused_nothing_transmitted(server):
    # sim-amplifier's bench (its sim: physics): TX full scale 5.6 dBm, tx_to_dut -1.7 (-0.7 dB/GHz) +30.3 -6.2 dB:
    # at TX gain 0 a -6 dBFS CW puts 5.6 - 1.7 - 0.1 + 30.3 - 6.2 - 6.02 = 21.88 dBm at the DUT input, above
    # max_dut_input_dbm 20 (computed here, independently). The server judges it on its bench's calibration
    # table, which measured the physics with the power meter (error 0.03 dB, U 0.1 dB).
    expected = 5.6 - 1.7 - 0.7 * (2.14 - 2.0) + 30.3 - 6.2 + 20 * np.log10(0.5)
    assert expected > 20
    assert server.rig.calibration is not None
    with open_radio(uri(server)) as r:
        r.configure_tx(INSIDE)
        with pytest.raises(RemoteRefused, match=r"dBm at the DUT input exceeds the rig limit "
                                                r"max_dut_input_dbm 20 dBm") as e:
            r.transmit(CW)
        stated = float(re.search(r"transmit: ([-\d.]+) dBm at the DUT input", str(e.value)).group(1))
        assert stated == pytest.approx(expected, abs=0.1)
        assert e.value.limit == "limits.max_dut_input_dbm"
        assert bench_idle(server)
        r.transmit(CW, level=0.5)  # 6 dB lower: allowed
        assert server.radio.bench._wave is not None
        # raising the TX gain while transmitting is checked against what is playing (-10 dB -> 0 dB: 11.9 -> 21.9 dBm)
        r.configure_tx(INSIDE.with_(gain_db=-10.0))
        r.transmit(CW)
        with pytest.raises(RemoteRefused, match=rf"{stated:.2f} dBm at the DUT input exceeds .* max_dut_input_dbm"):
            r.configure_tx(INSIDE)
        assert server.radio.tx_config.gain_db == -10.0
    assert bench_idle(server)  # closing stopped it


def test_bypass_rx_port_limit(server):
    # with the thru switched in, the DUT input level reaches the RX port through 47.5 dB of dut_to_rx pads:
    # 21.8 - 47.56 dBm is below 0 dBm, so allowed; a client rig cannot raise the server's limit
    with open_radio(uri(server)) as r:
        r.set_dut_bypass(True)
        r.configure_tx(INSIDE)
        r.transmit(CW, level=0.5)
        assert server.radio.bench.bypass_dut
    assert bench_idle(server)


@pytest.mark.parametrize("fmt", ["cf32", "sc16"])  # sc16: the guard's power is summed while encoding
def test_captured_rx_level_guard_stops_tx(tmp_path, fmt):
    rig = write_rig(tmp_path, limits={"max_rx_input_dbm": -60, "max_dut_input_dbm": 20,
                                      "tx_bands": [{"low": "2 GHz", "high": "2.3 GHz"}]})
    s = serve(rig, lease_s=2.0)
    try:
        with open_radio(uri(s) + f"&format={fmt}") as r:
            r.configure_tx(INSIDE.with_(gain_db=-20.0))
            r.configure_rx(INSIDE.with_(gain_db=0.0))
            r.transmit(CW, level=0.5)
            with pytest.raises(RemoteRefused, match=r"at the RX port exceeds the rig limit max_rx_input_dbm -60 dBm: "
                                                    r"transmitter stopped"):
                r.capture(10_000)
            assert bench_idle(s)
    finally:
        stop(s)


# ------------------------------------------------------------------ leases
def test_two_clients_compete_exactly_one_wins(server):
    results = []
    barrier = threading.Barrier(2)

    def contend():
        barrier.wait()
        try:
            results.append(open_radio(uri(server)))
        except RemoteBusy as e:
            results.append(e)

    ts = [threading.Thread(target=contend) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    winners = [r for r in results if not isinstance(r, Exception)]
    losers = [r for r in results if isinstance(r, RemoteBusy)]
    assert len(winners) == 1 and len(losers) == 1
    assert "lease expires in" in str(losers[0])
    winners[0].close()


def test_status_and_description_open_while_another_holds_control(server):
    """While one client controls the rig, another reads hello (the rig's description) and status, and is
    refused every device operation with the holder and the lease's expiry."""
    import os

    import zmq

    from devices import zmq_wire as wire

    with open_radio(uri(server)) as holder:
        holder.configure_tx(INSIDE)
        holder.transmit(CW, level=0.1)
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(f"tcp://127.0.0.1:{server.port}")
        session = os.urandom(16)

        def ask(op, args=None, rid=[0]):
            rid[0] += 1
            sock.send_multipart(wire.encode_request(op, rid[0], session, args))
            assert sock.poll(5000)
            got, ok, body = wire.decode_reply(sock.recv_multipart())
            assert got == rid[0]
            return ok, body

        try:
            ok, hello = ask("hello", {"versions": [1]})
            assert ok and hello["rig"]["name"] == "sim-amplifier" and hello["rig"]["limits"]["tx_bands_hz"]
            ok, status = ask("status")
            assert ok and status["transmitting"] and not status["yours"]
            assert status["holder"] == f"{holder.session.hex()[:8]}" and status["lease_expires_in_s"] > 0
            for op, args in (("configure_tx", {"config": {"freq_hz": 2.14e9, "sample_rate_hz": 15.36e6,
                                                          "gain_db": 0.0}}),
                             ("stop_tx", {}), ("bypass", {"on": True}), ("acquire", {})):
                ok, err = ask(op, args)
                assert not ok and err["code"] == "leased", op
                assert f"the rig is controlled by session {holder.session.hex()[:8]}" in err["message"]
                assert "lease expires in" in err["message"] and err["expires_in_s"] > 0
            assert server.radio.transmitting and not server.bypassed  # untouched by the refused client
        finally:
            sock.close()
            ctx.term()


def test_lease_expiry_stops_tx_and_releases(server):
    r = open_radio(uri(server))
    r.configure_tx(INSIDE)
    r.transmit(CW, level=0.5)
    assert server.radio.transmitting
    r._hb_stop.set()  # the client goes silent (as if frozen) while transmitting
    assert wait_until(lambda: bench_idle(server), 3.0)  # lease 1 s
    assert server.holder is None and server.counters["leases_expired"] == 1
    with pytest.raises(DeviceError, match="control"):
        r.configure_tx(INSIDE)
    other = open_radio(uri(server))
    other.close()
    r.close()


# ------------------------------------------------------------------ security
def test_insecure_refused_off_loopback(tmp_path):
    assert is_loopback("tcp://127.0.0.1:5555") and is_loopback("tcp://[::1]:5555")
    assert not is_loopback("tcp://0.0.0.0:5555") and not is_loopback("tcp://*:5555")
    assert not is_loopback("tcp://192.168.1.10:5555")
    rig = Rig.open(load_rig(RIGS / "sim-amplifier.yaml"), seed=0, calibration="optional")
    try:
        with pytest.raises(ServeError, match=r"--insecure .* is refused on tcp://0.0.0.0:\d+"):
            RigServer(rig, "tcp://0.0.0.0:0", None, Security(insecure=True))
        with pytest.raises(ServeError, match="needs its key pair"):
            RigServer(rig, "tcp://127.0.0.1:0", None, Security())
    finally:
        rig.close()
    assert main(["serve", "--rig", "sim-amplifier", "--bind", "tcp://0.0.0.0:5599", "--insecure"]) == 2


@pytest.fixture
def keys(tmp_path):
    d = tmp_path / "keys"
    allow = tmp_path / "allow"
    allow.mkdir()
    assert main(["keys", "new", "server", "--dir", str(d)]) == 0
    new_key_pair(d, "alice")
    new_key_pair(d, "mallory")
    (allow / "alice.key").write_text((d / "alice.key").read_text())
    return d, allow


def test_curve_allowed_key_works_unknown_key_refused_and_logged(keys, caplog):
    d, allow = keys
    s = serve(RIGS / "sim-amplifier.yaml", lease_s=2.0,
              security=Security(server_secret=str(d / "server.key_secret"), allow_dir=str(allow)))
    base = f"zmq://127.0.0.1:{s.port}?server_key={d / 'server.key'}&timeout=0.3"
    try:
        with open_radio(f"{base}&client_key={d / 'alice.key_secret'}") as r:
            r.configure_rx(INSIDE.with_(gain_db=30.0))
            assert r.capture(1000).meta.n_samples == 1000
        with caplog.at_level(logging.WARNING, logger="harness.remote"):
            with pytest.raises(DeviceTimeout, match="no answer from the rig server to hello"):
                open_radio(f"{base}&client_key={d / 'mallory.key_secret'}")
            fp = key_fingerprint(load_public(d / "mallory.key"))
            assert wait_until(lambda: fp in caplog.text, 2.0)
        assert f"refused client key {fp}" in caplog.text
        assert fp in s.allow.refused
        with pytest.raises(DeviceTimeout):  # plaintext against a CURVE server: no handshake, nothing served
            open_radio(f"zmq://127.0.0.1:{s.port}?insecure=1&timeout=0.3")
        with pytest.raises(DeviceError, match="needs the server's public key"):
            open_radio(f"zmq://127.0.0.1:{s.port}")
    finally:
        stop(s)


def test_refusals_logged_with_the_client_key(keys, caplog):
    """Every refusal the server answers is in its log with the refused client's key fingerprint: an interlock,
    control held by another client, and a request made in another key's session, which is refused without
    touching that session (its owner's next answer is its own, not the refusal)."""
    import itertools

    import zmq

    from devices import zmq_wire as wire

    d, allow = keys
    new_key_pair(d, "bob")
    (allow / "bob.key").write_text((d / "bob.key").read_text())
    s = serve(RIGS / "sim-amplifier.yaml", lease_s=5.0,
              security=Security(server_secret=str(d / "server.key_secret"), allow_dir=str(allow)))
    base = f"zmq://127.0.0.1:{s.port}?server_key={d / 'server.key'}&timeout=0.5"
    alice, bob = (key_fingerprint(load_public(d / f"{n}.key")) for n in ("alice", "bob"))
    try:
        with caplog.at_level(logging.WARNING, logger="harness.remote"):
            with open_radio(f"{base}&client_key={d / 'alice.key_secret'}") as r:
                with pytest.raises(RemoteRefused):
                    r.configure_tx(StreamConfig(3.5e9, 15.36e6, -30.0))
                assert re.search(rf"refused configure_tx from {alice}: .*limits.tx_bands", caplog.text)
                with pytest.raises(RemoteBusy):
                    open_radio(f"{base}&client_key={d / 'bob.key_secret'}")
                assert f"refused acquire from {bob}: the rig is controlled by {alice}" in caplog.text
                # bob sends a request in alice's session, with the id alice uses next
                r._hb_stop.set()
                r._hb_thread.join(5)
                ctx = zmq.Context()
                sock = ctx.socket(zmq.DEALER)
                sock.linger = 0
                sock.curve_serverkey = zmq.auth.load_certificate(str(d / "server.key"))[0]
                sock.curve_publickey, sock.curve_secretkey = zmq.auth.load_certificate(str(d / "bob.key_secret"))
                sock.connect(f"tcp://127.0.0.1:{s.port}")
                try:
                    sock.send_multipart(wire.encode_request("status", 10 ** 6, r.session))
                    assert sock.poll(5000)
                    rid, ok, body = wire.decode_reply(sock.recv_multipart())
                    # bob asks for control 200 times more (his own session): every refusal is logged, and counted
                    own = bytes(16)
                    for i in range(200):
                        sock.send_multipart(wire.encode_request("acquire", i + 1, own))
                        assert sock.poll(5000)
                        assert wire.decode_reply(sock.recv_multipart())[2]["code"] == "leased"
                finally:
                    sock.close()
                    ctx.term()
                assert (rid, ok, body["code"]) == (10 ** 6, False, "session")
                assert f"refused status from {bob}: session {r.session.hex()[:8]} belongs to another client key" \
                    in caplog.text
                r._ids = itertools.count(10 ** 6)
                assert r._request("status")["yours"] is True  # alice's own answer, not bob's refusal
        assert s.counters["refusals_logged"] == 2 + 200 and s.counters["refusals"] == 1
        lines = [m for m in caplog.messages if m.startswith(f"refused acquire from {bob}:")]
        assert len(lines) == 1 + 200 and all(f"controlled by {alice}" in m for m in lines)
        assert bench_idle(s)
    finally:
        stop(s)
