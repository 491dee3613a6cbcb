"""Remote sample streams lose nothing silently: frames carry their loss, captures with loss are retried and then
refused, a slow client on a continuous stream gets every loss counted."""

from __future__ import annotations

import numpy as np
import pytest

from devices import DeviceError, StreamConfig, open_radio
from devices import zmq_wire as wire
from devices.zmq import _Receiver
from harness.rig import Rig, load_rig
from tests.conftest import RIGS
from tests.remote_helpers import client_rig, serve, stop, wait_until

RX = StreamConfig(2.14e9, 15.36e6, 30.0)


@pytest.fixture
def server():
    s = serve(RIGS / "sim-amplifier.yaml", lease_s=3.0)
    yield s
    stop(s)


def frame(sid, seq, first, x, flags=0, lost=0, meta=None):
    head = wire.FrameHeader(0, flags, sid, seq, first, x.size, lost, 0.0, 1.0).pack()
    return [head, x.astype(np.complex64).tobytes()] + ([wire.dumps(meta)] if meta is not None else [])


def test_receiver_marks_missing_frames_never_shortens():
    n = 300
    out = np.zeros(n, np.complex64)
    rx = _Receiver(5, n, out)
    x = np.arange(n, dtype=np.float32).astype(np.complex64)
    cfg = {"freq_hz": 1e9, "sample_rate_hz": 1e6, "gain_db": 0.0, "rf_bandwidth_hz": None, "channel": 0}
    rx.take(frame(5, 0, 0, x[:100]))
    # frame 1 (samples 100..199) never arrives
    rx.take(frame(5, 2, 200, x[200:], flags=wire.F_END, meta={"config": cfg, "overflow": False}))
    rx.take(frame(4, 0, 0, x[:10]))  # a late frame of another stream is ignored
    cap = rx.capture()
    assert cap.samples.size == n and cap.meta.n_samples == n
    assert cap.meta.dropped_samples == 100 and cap.meta.overflow and not cap.meta.ok
    assert np.array_equal(cap.samples[:100], x[:100]) and np.array_equal(cap.samples[200:], x[200:])


def test_wire_rejects_malformed_frames():
    x = np.ones(10, np.complex64)
    good = frame(1, 0, 0, x)
    assert wire.decode_frame(good)[0].n_samples == 10
    for bad in ([good[0][:-1], good[1]], [good[0], good[1][:-8]], [b"XXXX" + good[0][4:], good[1]],
                [good[0][:6] + b"\xff\x7f" + good[0][8:], good[1]], [good[0]], good + [b"{", b""]):
        with pytest.raises(wire.WireError):
            wire.decode_frame(bad)


def test_device_overflow_is_retried_then_step_error(tmp_path, server, monkeypatch):
    rig_file = client_rig(tmp_path, RIGS / "sim-amplifier.yaml", f"zmq://127.0.0.1:{server.port}?insecure=1")
    spec = load_rig(rig_file)
    spec.uncalibrated = True
    real = type(server.radio)._capture
    faults = {"left": 1}

    def flaky(self, n, timeout_s):
        cap = real(self, n, timeout_s)
        if faults["left"] > 0:
            faults["left"] -= 1
            cap.meta.overflow, cap.meta.dropped_samples = True, 17
        return cap

    monkeypatch.setattr(type(server.radio), "_capture", flaky)
    with Rig.open(spec) as rig:
        rig.tune(2.14e9, 15.36e6)
        rec = rig.capture(20_000, autorange=False)
        assert rec.retries == 1 and not rec.overflow and rec.n_samples == 20_000
        faults["left"] = 99
        with pytest.raises(DeviceError, match=r"capture corrupted in 4 attempts \(last: RX overflow, 17 dropped"):
            rig.capture(20_000, autorange=False)


def test_slow_client_continuous_stream_loss_counted(server):
    server._budget.limit = 64 * 4096 * 8  # 64 cf32 frames: the stall overflows it quickly on the sim bench
    with open_radio(f"zmq://127.0.0.1:{server.port}?insecure=1") as r:
        r.configure_rx(RX)
        s = r.stream(frame_samples=4096)
        got, lost_seen = 0, 0
        for _ in range(40):
            chunk = s.read(timeout_s=5)
            assert chunk is not None
            x, lost = chunk
            assert x.size == 4096
            lost_seen += lost
            got += x.size
            if got == 5 * 4096:  # the client stalls: the server's buffer fills and overflows
                assert wait_until(lambda: server.counters["samples_dropped"] > 0, 20.0)
        s.close()  # reads on to the END frame, which carries the last loss
    assert s.lost > 0, "a deliberately slow client must see loss counted"
    assert s.lost == server.counters["samples_dropped"]
    assert s.lost % 4096 == 0  # whole frames dropped, each counted
    assert lost_seen <= s.lost
    assert wait_until(lambda: not server._streams, 5.0)
    assert server._budget.held == 0  # every buffered byte given back


def test_many_captures_in_a_row(server):
    # late credits of finished streams must not crowd out a new stream's first credits
    with open_radio(f"zmq://127.0.0.1:{server.port}?insecure=1") as r:
        r.configure_rx(RX)
        for _ in range(60):
            c = r.capture(70_000)  # two frames, so credits are granted back mid-capture
            assert c.meta.ok and c.samples.size == 70_000
    assert len(server._pending_credits) <= 16


def test_buffer_pool_reuses_only_unreferenced_arrays():
    pool = wire.BufferPool(max_bytes=3 << 20, min_bytes=1 << 20)
    n = 1 << 17  # 1 MiB of complex64
    a = pool.take(n, np.complex64)
    a_addr = a.__array_interface__["data"][0]
    view = a[5:]
    del a
    b = pool.take(n, np.complex64)  # a is still held through its view
    assert not np.shares_memory(b, view)
    del view
    c = pool.take(n, np.complex64)
    assert c.__array_interface__["data"][0] == a_addr  # nothing held a: reused
    assert not np.shares_memory(c, b)
    assert pool.take(n, np.int16).dtype == np.int16 and pool.take(10, np.complex64).size == 10
    big = [pool.take(n, np.complex64) for _ in range(4)]  # all held: the pool forgets them, never reuses one
    assert len({x.__array_interface__["data"][0] for x in big}) == 4
    assert sum(x.nbytes for x in pool._arrays) <= 3 << 20


@pytest.mark.parametrize("fmt", ["cf32", "sc16"])
def test_captures_held_by_the_caller_are_never_overwritten(server, fmt):
    # the client reuses dropped capture arrays and the server reused sc16 frame buffers: a capture still held
    # keeps its samples, and every capture carries what the server's radio took, in the link's format
    taken = []
    orig = server.radio.capture

    def recording(n, timeout_s=None):
        c = orig(n, timeout_s)
        taken.append(c.samples.copy())
        return c

    server.radio.capture = recording
    n = 300_000  # 2.3 MiB of complex64: pooled
    with open_radio(f"zmq://127.0.0.1:{server.port}?insecure=1&format={fmt}") as r:
        r.configure_rx(RX)

        def expect(i):
            x = taken[i]
            if fmt == "sc16":
                q = np.clip(np.rint(x.view(np.float32) * 32768.0), -32768, 32767) / 32768.0
                x = q.astype(np.float32).view(np.complex64)
            return x

        held = [r.capture(n)]
        held_copy = held[0].samples.copy()
        for i in range(1, 6):
            c = r.capture(n)
            assert c.meta.ok and np.array_equal(c.samples, expect(i))
            assert not np.shares_memory(c.samples, held[0].samples)
            if i % 2:
                del c  # dropped: its array may serve the next capture
        assert np.array_equal(held[0].samples, held_copy) and np.array_equal(held_copy, expect(0))


def test_full_stream_buffer_drops_frames_before_converting_them(server, monkeypatch):
    # sc16: a frame that cannot fit the server's buffer is dropped (and counted) before it is encoded, so a
    # source outrunning the link does not also spend the server's CPU on samples nobody will get
    from harness.remote import server as srv_mod

    encoded, produced = [0], [0]
    enc = srv_mod.iq_kernels.sc16_encode_power

    def counting(x, out=None):
        encoded[0] += x.size
        return enc(x, out)

    orig = server.radio.capture

    def taking(n, timeout_s=None):
        c = orig(n, timeout_s)
        produced[0] += c.samples.size
        return c

    monkeypatch.setattr(srv_mod.iq_kernels, "sc16_encode_power", counting)
    server.radio.capture = taking
    server._budget.limit = 32 * 4096 * 4  # 32 sc16 frames
    with open_radio(f"zmq://127.0.0.1:{server.port}?insecure=1&format=sc16") as r:
        r.configure_rx(RX)
        s = r.stream(frame_samples=4096)
        assert s.read(timeout_s=5)[0].size == 4096
        # the client stalls: the buffer fills, and frames keep being dropped while it reads nothing
        assert wait_until(lambda: server.counters["samples_dropped"] > 20 * 4096 * 32, 20.0)
        s.close()
    assert s.lost > 0 and s.lost == server.counters["samples_dropped"] and s.lost % 4096 == 0
    assert encoded[0] < produced[0] - s.lost // 2, "dropped frames must not have been converted"
    assert encoded[0] >= s.received  # every frame that left was converted
    assert wait_until(lambda: not server._streams, 5.0) and server._budget.held == 0


def test_frames_carry_the_same_bytes_in_either_format():
    # sc16 frames carry twice the samples of cf32 ones: per-message costs are paid per byte alike
    assert wire.frame_samples_for("cf32") * 8 == wire.frame_samples_for("sc16") * 4 == wire.FRAME_BYTES
    assert wire.frame_samples_for("cf32") == wire.FRAME_SAMPLES
