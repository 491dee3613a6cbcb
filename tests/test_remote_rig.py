"""A plan against a loopback rig server gives the verdicts and values of the same plan on the local rig."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from devices import StreamConfig, open_radio
from devices.zmq import RemoteBusy
from harness.cli import main
from tests.conftest import RIGS, read_results
from tests.remote_helpers import client_rig, serve, stop

PLAN = "testplans/amplifier_characterization.yaml"


@pytest.fixture
def server():
    s = serve(RIGS / "sim-amplifier.yaml", seed=0)
    yield s
    stop(s)


def test_plan_remote_equals_local(tmp_path, server):
    local = tmp_path / "local"
    remote = tmp_path / "remote"
    rig = client_rig(tmp_path, RIGS / "sim-amplifier.yaml", f"zmq://127.0.0.1:{server.port}?insecure=1")
    code_local = main(["run", PLAN, "--out", str(local), "--seed", "0", "--quiet"])
    code_remote = main(["run", PLAN, "--rig", str(rig), "--out", str(remote), "--seed", "0", "--quiet"])
    assert code_local == code_remote == 0
    a, b = read_results(local), read_results(remote)
    assert b["rig"]["device"].startswith("zmq://")
    # both on the bench's table: the client's file names it, checked against the served bench's set-up
    assert a["calibration"]["applied"] and b["calibration"]["applied"]
    assert Path(b["calibration"]["file"]).resolve() == Path(a["calibration"]["file"]).resolve()
    assert [s["verdict"] for s in a["steps"]] == [s["verdict"] for s in b["steps"]]
    for sa, sb in zip(a["steps"], b["steps"]):
        assert len(sa["captures"]) == len(sb["captures"]) > 0
        for ma, mb in zip(sa["measurements"], sb["measurements"]):
            assert ma["name"] == mb["name"]
            # the same seeded bench, the same captures in the same order: the same figures
            assert mb["value"] == pytest.approx(ma["value"], abs=max(1e-9, (ma.get("uncertainty") or 0)))
    assert not server.radio.transmitting  # the run left the transmitter off on the server


def test_client_describing_another_bench_is_refused_its_table(tmp_path, server, capsys):
    """The bench's table holds only for a client file declaring the served bench's ports and paths: one pad
    edited and the run is refused before anything transmits (exit 2), naming why."""
    import yaml

    rig = client_rig(tmp_path, RIGS / "sim-amplifier.yaml", f"zmq://127.0.0.1:{server.port}?insecure=1")
    data = yaml.safe_load(rig.read_text())
    data["paths"]["dut_to_rx"][0]["loss_db"] += 1.0
    rig.write_text(yaml.safe_dump(data, sort_keys=False))
    code = main(["run", PLAN, "--rig", str(rig), "--out", str(tmp_path / "run"), "--seed", "0", "--quiet"])
    assert code == 2
    assert "not those of the served bench 'sim-amplifier'" in capsys.readouterr().err
    assert not server.radio.transmitting


def test_second_client_refused_naming_holder(server):
    uri = f"zmq://127.0.0.1:{server.port}?insecure=1"
    first = open_radio(uri)
    try:
        with pytest.raises(RemoteBusy, match=r"controlled by session [0-9a-f]{8}; its lease expires in"):
            open_radio(uri)
    finally:
        first.close()
    second = open_radio(uri)  # released: the next one gets it
    second.close()


def test_capture_sc16_matches_cf32_within_quantisation(server):
    cfg = StreamConfig(2.14e9, 7.68e6, 30.0)
    with open_radio(f"zmq://127.0.0.1:{server.port}?insecure=1&format=sc16") as r:
        r.configure_rx(cfg)
        c = r.capture(100_000)
    assert c.meta.n_samples == 100_000 and c.meta.ok
    # the bench's own samples for the same reads: a second server-side capture is not the same noise, so
    # compare statistics: sc16 keeps the level to within its quantisation
    assert c.samples.dtype == np.complex64
    assert np.max(np.abs(c.samples.real)) <= 1.0
    assert np.all(np.round(c.samples.real * 32768) == pytest.approx(c.samples.real * 32768, abs=1e-2))


def test_python_client_tune_capture_release(server):
    from harness.remote.client import RemoteRig

    rate, offset = 15.36e6, 1.2e6
    n = 1 << 15
    cw = (0.25 * np.exp(2j * np.pi * offset / rate * np.arange(4096 * 15))).astype(np.complex64)
    uri = f"zmq://127.0.0.1:{server.port}?insecure=1"
    with RemoteRig(uri) as rig:
        assert rig.description["name"] == "sim-amplifier"
        assert rig.description["limits"]["tx_bands_hz"] == [[1.7e9, 2.7e9]]
        rig.tune(2.14e9, rate, rx_gain_db=20, tx_gain_db=-40)
        rig.transmit(cw)
        x = rig.capture(n)
        assert x.dtype == np.complex64 and x.size == n and rig.last_meta.ok
        spec = np.abs(np.fft.fft(x * np.hanning(n))) ** 2
        peak_hz = np.fft.fftfreq(n, 1 / rate)[int(np.argmax(spec))]
        assert abs(peak_hz - offset) <= rate / n  # the tone it played, at its offset
        chunks = list(rig.stream(seconds=0.3))
        assert chunks and all(c.dtype == np.complex64 for c in chunks) and rig.stream_lost == 0
    assert not server.radio.transmitting and server.holder is None  # released, TX off


def test_plain_stream_for_gnuradio_bytes_match(server):
    """GNU Radio's ZMQ Pull Source reads raw complex64 items: what arrives is exactly what the harness got."""
    import socket
    import threading

    import zmq

    from harness.remote.client import RemoteRig

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ep = f"tcp://127.0.0.1:{port}"
    got, seen = [], []
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.connect(ep)

    def reader():
        while pull.poll(3000):
            got.append(pull.recv())

    t = threading.Thread(target=reader)
    t.start()
    with RemoteRig(f"zmq://127.0.0.1:{server.port}?insecure=1") as rig:
        rig.tune(2.14e9, 7.68e6, rx_gain_db=30)
        n = rig.publish_plain(ep, 0.3, "push", tee=lambda c: seen.append(c.copy()))
    t.join(10)
    pull.close(linger=0)
    ctx.term()
    assert n > 0 and n == sum(c.size for c in seen)
    items = np.frombuffer(b"".join(got), dtype=np.complex64)  # no header: the items themselves
    assert np.array_equal(items, np.concatenate(seen))


def _free_endpoint() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("kind", ["push", "pub"])
def test_capture_publish_option_for_gnuradio(server, capsys, kind):
    """``harness capture zmq://... --duration S --publish EP``: the plain stream from the command line. A
    reader as GNU Radio's ZMQ PULL / SUB Source gets raw complex64 items, all of them over PUSH (the count the
    command prints), and they are the receiver's samples: their power is a bounded capture's at the same
    settings (the bench's noise at RX gain 30 dB), within the noise of the two estimates."""
    import threading

    import zmq

    ep = _free_endpoint()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL if kind == "push" else zmq.SUB)
    if kind == "pub":
        sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.setsockopt(zmq.RECONNECT_IVL, 10)  # connects soon after the command binds (a SUB misses what precedes)
    sock.connect(ep)
    got = []

    def reader():
        while sock.poll(3000):
            got.append(sock.recv())

    t = threading.Thread(target=reader)
    t.start()
    uri = f"zmq://127.0.0.1:{server.port}?insecure=1"
    capsys.readouterr()
    code = main(["capture", uri, "--freq", "2140 MHz", "--rate", "7.68 MHz", "--gain", "30 dB", "--duration", "0.3 s",
                 "--publish", ep, "--publish-kind", kind])
    out = capsys.readouterr().out
    t.join(10)
    sock.close(linger=0)
    ctx.term()
    assert code == 0, out
    sent = int(out.split(" samples published")[0].rsplit(" ", 1)[1])
    items = np.frombuffer(b"".join(got), dtype=np.complex64)
    assert " 0 lost before they reached this client" in out and sent > 0
    if kind == "push":
        assert items.size == sent  # lossless: every item published arrived
    else:
        assert 0 < items.size <= sent  # a subscriber may miss the first messages (PUB/SUB's late joiner)
    with open_radio(uri) as r:
        r.configure_rx(StreamConfig(2140e6, 7.68e6, 30.0, 0.8 * 7.68e6))
        ref = r.capture(items.size).samples
    p_items, p_ref = (10 * np.log10(np.mean(np.abs(x) ** 2)) for x in (items, ref))
    assert p_items == pytest.approx(p_ref, abs=0.2), (p_items, p_ref)
    assert not server.radio.transmitting and server.holder is None


@pytest.mark.parametrize("args, why", [
    (["sim:", "--duration", "1 s", "--publish", "tcp://127.0.0.1:5999"], "needs a zmq:// URI and --duration"),
    (["zmq://127.0.0.1:1", "--samples", "10", "--publish", "tcp://127.0.0.1:5999"], "needs a zmq:// URI"),
    (["zmq://127.0.0.1:1", "--duration", "1 s", "--publish", "tcp://127.0.0.1:5999", "--out", "x"], "not both"),
    (["sim:", "--samples", "10"], "--out FILE is required"),
])
def test_capture_publish_refused_arguments(capsys, args, why):
    assert main(["capture", *args[:1], "--freq", "2140 MHz", "--rate", "7.68 MHz", *args[1:]]) == 2
    assert why in capsys.readouterr().err


def test_capture_command_bounded_from_a_rig_server(tmp_path):
    """``harness capture zmq://... --samples N --out FILE``: the recording holds exactly the samples the served
    radio captured (the same seeded bench asked the same way, directly, gives the same samples), in a valid
    SigMF file naming the served radio."""
    from devices.replay import read_recording, validate_file

    out = tmp_path / "rec"
    s = serve(RIGS / "sim-amplifier.yaml", seed=3)
    try:
        assert main(["capture", f"zmq://127.0.0.1:{s.port}?insecure=1", "--freq", "2140 MHz", "--rate", "15.36 MHz",
                     "--gain", "30 dB", "--samples", "50000", "--out", str(out)]) == 0
    finally:
        stop(s)
    s = serve(RIGS / "sim-amplifier.yaml", seed=3)
    try:
        with open_radio(f"zmq://127.0.0.1:{s.port}?insecure=1") as r:
            r.configure_rx(StreamConfig(2140e6, 15.36e6, 30.0, 0.8 * 15.36e6))
            want = r.capture(50_000)
    finally:
        stop(s)
    validate_file(out)
    rec = read_recording(out)
    assert rec.samples.size == 50_000 and np.array_equal(rec.samples, want.samples)
    assert rec.global_info["core:hw"].startswith("sim")
