"""A board's own int16 codes as the sc16 frames of a bounded capture or a continuous stream
(``Radio.capture_codes``).

The served rig is the shipped ``pluto-emulated``: the ``pluto:`` driver (pyadi-iio over libiio's network protocol)
against an emulated Pluto, whose RX delivers 12-bit codes. A bounded sc16 capture, and each chunk of an sc16
stream, crosses as those codes with their scale 2^-11: the client's samples are exactly what the driver's own
``capture`` makes of the same codes, and the RX guard, flags and loss counting work as on the converted path.
"""

from __future__ import annotations

import numpy as np
import pytest

from devices import CapabilityError, DeviceError, StreamConfig, open_radio
from devices import iq_kernels, zmq_wire as wire
from devices.pluto import codes_to_samples, copy_codes, codes_of, from_rx_codes
from devices.radio import CodeCapture
from devices.zmq import RemoteRefused
from tests.conftest import RIGS, write_rig
from tests.remote_helpers import serve, stop, wait_until

RX = StreamConfig(2.14e9, 15.36e6, 40.0)
CW = (0.5 * np.exp(2j * np.pi * np.arange(4096) / 64)).astype(np.complex64)


def _recording(server) -> list[CodeCapture]:
    """What the server's radio returns from capture_codes, kept (the same objects the frames are cut from)."""
    got: list[CodeCapture] = []
    radio = server.radio
    inner = radio.capture_codes

    def capture_codes(*a, **k):
        cap = inner(*a, **k)
        got.append(CodeCapture(cap.codes.copy(), cap.scale, cap.meta))
        return cap

    radio.capture_codes = capture_codes
    return got


def test_copy_codes_matches_the_driver_conversion():
    """The codes the driver hands out, times 2^-11, are what its complex64 conversion gives (sign extension
    from bit 11 and the clipped count included), for libiio's buffer and for pyadi's rx() output."""
    rng = np.random.default_rng(5)
    raw = rng.integers(-2048, 2048, (5000, 2), dtype=np.int16)
    raw[:7] = [2047, 0]  # at the rails: clipped
    raw[7:9] = [-2048, 5]
    rails = int(np.count_nonzero(((raw >= 2047) | (raw <= -2048)).any(axis=1)))
    assert rails >= 9
    for case in (raw, raw & np.int16(0x0FFF)):  # sign-extended as the HDL does; 12 bits only (extended here)
        want = np.empty(raw.shape[0], np.complex64)
        want_clipped = codes_to_samples(case, want)
        out = np.empty_like(raw)
        assert copy_codes(case, out) == want_clipped == rails
        assert np.array_equal(out, raw)
        assert np.array_equal(CodeCapture(out.reshape(-1), 2.0 ** -11, None).samples.view(np.float32),
                              want.view(np.float32))
    y = raw[:, 0] + 1j * raw[:, 1].astype(np.float64)
    codes, clipped = codes_of(y)
    samples, want_clipped = from_rx_codes(y)
    assert clipped == want_clipped == rails and np.array_equal(codes, raw)
    assert np.array_equal(CodeCapture(codes.reshape(-1), 2.0 ** -11, None).samples, samples)


def test_code_sum_squares_is_exact():
    codes = np.array([-32768, 32767, -2048, 2047, 0, 1], np.int16)
    assert iq_kernels.code_sum_squares(codes) == sum(int(c) ** 2 for c in codes.tolist())


def test_radio_without_codes_refuses_capture_codes():
    with open_radio("sim:") as r:
        assert not r.native_codes
        r.configure_rx(RX)
        with pytest.raises(CapabilityError, match="integer codes"):
            r.capture_codes(1000)


def test_pluto_codes_cross_bit_exact_and_equal_a_local_capture():
    s = serve(RIGS / "pluto-emulated.yaml")
    try:
        assert s.radio.native_codes and s.radio.capabilities.driver == "pluto"
        sent = _recording(s)
        n = 300_000  # three 128k-sample frames, the last one short
        with open_radio(f"zmq://127.0.0.1:{s.port}?insecure=1&format=sc16") as r:
            r.configure_rx(RX)
            cap = r.capture(n)
            assert len(sent) == 1
            codes = sent[0]
            assert codes.scale == 2.0 ** -11 and codes.codes.dtype == np.int16 and codes.codes.size == 2 * n
            assert np.abs(codes.codes).max() > 16  # a real signal, not zeros
            # bit-exact: the client's samples are the driver's codes x 2^-11, as its own capture() makes them
            local = np.empty(n, np.complex64)
            codes_to_samples(codes.codes.reshape(n, 2), local)
            assert np.array_equal(cap.samples.view(np.float32), local.view(np.float32))
            assert cap.meta.dropped_samples == 0 and not cap.meta.overflow
            assert cap.meta.clipped_samples == codes.meta.clipped_samples
    finally:
        stop(s)


def test_codes_frames_carry_the_board_scale_and_older_decoding_reads_them():
    """The frames themselves: sc16 with the board's scale 2^-11 in each header, decoded as any client (older
    ones too) decodes sc16, by the header's scale."""
    s = serve(RIGS / "pluto-emulated.yaml")
    try:
        sent = _recording(s)
        with open_radio(f"zmq://127.0.0.1:{s.port}?insecure=1&format=sc16") as r:
            r.configure_rx(RX)
            seen = []
            recv = r._data.recv_multipart

            def spy(*a, **k):
                parts = recv(*a, **k)
                seen.append(wire.decode_header(parts)[0])
                return parts

            r._data.recv_multipart = spy
            cap = r.capture(200_000)
        assert [h.fmt for h in seen] == [wire.FORMATS["sc16"]] * 2 and all(h.scale == 2.0 ** -11 for h in seen)
        assert [h.n_samples for h in seen] == [wire.frame_samples_for("sc16"), 200_000 - wire.frame_samples_for("sc16")]
        assert np.array_equal(cap.samples, sent[0].samples)
    finally:
        stop(s)


def _guarded(tmp_path, lease_s: float):
    """The emulated Pluto served with an RX port limit of -60 dBm, which the CW of :func:`_tune_loud` exceeds."""
    rig = write_rig(tmp_path, "pluto-emulated.yaml", limits={"max_rx_input_dbm": -60, "max_dut_input_dbm": 20,
                                                             "tx_bands": [{"low": "2 GHz", "high": "2.3 GHz"}]})
    return serve(rig, lease_s=lease_s)


def _tune_loud(r) -> None:
    """TX and RX set so that ``CW`` at level 0.5 comes back above -60 dBm at the RX port (and quiet is below)."""
    r.configure_tx(StreamConfig(2.14e9, 15.36e6, -20.0))
    r.configure_rx(StreamConfig(2.14e9, 15.36e6, 0.0))


def test_codes_capture_rx_guard_stops_tx(tmp_path):
    """The RX guard's power, summed from the codes, refuses a capture too loud at the RX port: the capture ends
    ABORTED and the transmitter is stopped."""
    s = _guarded(tmp_path, 2.0)
    try:
        sent = _recording(s)
        with open_radio(f"zmq://127.0.0.1:{s.port}?insecure=1&format=sc16") as r:
            _tune_loud(r)
            r.transmit(CW, level=0.5)
            with pytest.raises(RemoteRefused, match=r"at the RX port exceeds the rig limit max_rx_input_dbm -60 dBm: "
                                                    r"transmitter stopped"):
                r.capture(10_000)
            assert sent, "the guard was not fed from capture_codes"
            assert not s.radio.transmitting
    finally:
        stop(s)


def test_codes_capture_overflow_marked(tmp_path):
    """A device overflow in a codes capture is flagged on its frames and in the record, as on the converted
    path: the client's capture says samples were lost."""
    s = serve(RIGS / "pluto-emulated.yaml")
    try:
        radio = s.radio
        inner = radio._capture_codes

        def overflowing(n, t):
            cap = inner(n, t)
            cap.meta.overflow, cap.meta.dropped_samples = True, 123
            return cap

        radio._capture_codes = overflowing
        with open_radio(f"zmq://127.0.0.1:{s.port}?insecure=1&format=sc16") as r:
            r.configure_rx(RX)
            cap = r.capture(50_000)
        assert cap.meta.overflow and cap.meta.dropped_samples == 123
    finally:
        stop(s)


def test_malformed_codes_from_a_driver_fail_closed():
    """Codes the frames cannot carry (wrong type or length, a scale outside (0, 1]) end the capture with an
    error naming them; nothing is sent as samples."""
    s = serve(RIGS / "pluto-emulated.yaml")
    try:
        radio = s.radio
        inner = radio._capture_codes
        bad = {}

        def broken(n, t):
            cap = inner(n, t)
            return CodeCapture(bad.get("codes", cap.codes), bad.get("scale", cap.scale), cap.meta)

        radio._capture_codes = broken
        with open_radio(f"zmq://127.0.0.1:{s.port}?insecure=1&format=sc16") as r:
            r.configure_rx(RX)
            bad["scale"] = 2.0
            with pytest.raises(DeviceError, match="scale 2.0"):
                r.capture(10_000)
            bad.clear()
            bad["codes"] = np.zeros(10, np.int16)
            with pytest.raises(DeviceError, match="not 20000 interleaved int16"):
                r.capture(10_000)
            bad.clear()
            assert r.capture(10_000).meta.dropped_samples == 0  # and the server serves on
    finally:
        stop(s)


# ----- continuous streams: a chunk's codes go out as they are, as a bounded capture's -----------------------------

FRAME = 8192  # small frames: a chunk (20 ms at 15.36 MS/s) is 37 of them


def _read(s, frames: int) -> list:
    """Up to ``frames`` frames of stream ``s`` as ``(header, samples)``, fewer when the stream ends first."""
    got = []
    while len(got) < frames:
        f = s.read_raw(timeout_s=10)
        if f is None:
            break
        h, body, _lost = f
        got.append((h, wire.frame_samples(h, body)))
    return got


def _faulty_codes(server, fault):
    """The server's radio with ``fault(call_number, cap)`` applied to what its driver's _capture_codes returns
    (``fault`` returns the capture to hand on); returns the list of the sample counts asked, call by call."""
    radio = server.radio
    inner = radio._capture_codes
    asked = []

    def faulty(n, t):
        asked.append(n)
        return fault(len(asked), inner(n, t))

    radio._capture_codes = faulty
    return asked


def test_stream_codes_cross_bit_exact_with_the_board_scale(monkeypatch):
    """A continuous sc16 stream from a board with its own codes: every frame carries them as they are, with the
    board's scale 2^-11 in its header; the samples are bit-exact the driver's codes x 2^-11, chunk after chunk;
    nothing is converted on the server, and the RX guard gets the codes' exact mean power."""
    from harness.remote import server as srv_mod

    encoded = []
    encode = srv_mod.iq_kernels.sc16_encode_power

    def counting(x, out=None):
        encoded.append(x.size)
        return encode(x, out)

    monkeypatch.setattr(srv_mod.iq_kernels, "sc16_encode_power", counting)
    s = serve(RIGS / "pluto-emulated.yaml")
    try:
        sent = _recording(s)
        powers = []
        guard = s._rx_guard

        def spy(cap, mean_power=None):
            powers.append(mean_power)
            return guard(cap, mean_power)

        s._rx_guard = spy
        with open_radio(f"zmq://127.0.0.1:{s.port}?insecure=1&format=sc16") as r:
            r.configure_rx(RX)
            st = r.stream(frame_samples=FRAME)
            got = _read(st, 100)  # three chunks or so
            st.close()
        assert len(got) == 100 and st.lost == 0 and st.overflows == 0
        assert all(h.fmt == wire.FORMATS["sc16"] and h.scale == 2.0 ** -11 for h, _ in got)
        assert all(h.n_samples == FRAME and not h.flags & (wire.F_DROPPED | wire.F_OVERFLOW) for h, _ in got)
        assert [h.first_sample for h, _ in got] == list(range(0, 100 * FRAME, FRAME))
        assert len(sent) >= 3 and np.abs(sent[0].codes).max() > 16  # several chunks of a real signal
        want = np.concatenate([c.codes for c in sent]).reshape(-1, 2)[:100 * FRAME]
        local = np.empty(want.shape[0], np.complex64)
        codes_to_samples(want, local)  # what the driver's own capture() makes of the codes
        x = np.concatenate([x for _, x in got])
        assert np.array_equal(x.view(np.float32), local.view(np.float32))
        assert not encoded, "a stream of the board's codes must not be converted on the server"
        assert len(powers) == len(sent)
        for p, c in zip(powers, sent):  # the guard's power: the codes' own, summed exactly (float64 here)
            assert p == pytest.approx(np.mean(np.abs(c.codes.astype(np.float64) * 2.0 ** -11) ** 2) * 2, rel=1e-12)
    finally:
        stop(s)


def test_cf32_stream_from_a_codes_board_is_converted_as_ever():
    """cf32 streams are not touched by the codes path: the driver's complex64 samples, full scale 1.0."""
    s = serve(RIGS / "pluto-emulated.yaml")
    try:
        sent = _recording(s)
        with open_radio(f"zmq://127.0.0.1:{s.port}?insecure=1&format=cf32") as r:
            r.configure_rx(RX)
            st = r.stream(frame_samples=FRAME)
            got = _read(st, 40)
            st.close()
        assert len(got) == 40 and all(h.fmt == wire.FORMATS["cf32"] for h, _ in got) and not sent
    finally:
        stop(s)


def test_stream_codes_rx_guard_refusal_ends_aborted_with_tx_stopped(tmp_path):
    """A stream turned loud (the transmitter switched on mid-stream): the chunk the RX guard refuses, its power
    summed from the codes, ends the stream ABORTED naming the limit, TX is stopped, and none of that chunk's
    frames reaches the client; every chunk before it arrived whole."""
    s = _guarded(tmp_path, 5.0)
    try:
        sent = _recording(s)
        with open_radio(f"zmq://127.0.0.1:{s.port}?insecure=1&format=sc16") as r:
            _tune_loud(r)
            st = r.stream(frame_samples=FRAME)
            got = _read(st, 40)  # quiet: past the guard
            assert len(got) == 40 and st.ended is None
            r.transmit(CW, level=0.5)
            got += _read(st, 100_000)  # to the end
        assert st.ended is not None and "at the RX port exceeds the rig limit max_rx_input_dbm -60 dBm: " \
                                      "transmitter stopped" in st.ended
        assert not s.radio.transmitting
        assert len(sent) >= 2
        refused, passed = sent[-1], sent[:-1]
        assert np.mean(np.abs(refused.samples) ** 2) > 10 * np.mean(np.abs(passed[0].samples) ** 2)
        assert st.received == sum(c.codes.size // 2 for c in passed) and st.lost == 0
        x = np.concatenate([x for _, x in got])
        assert np.array_equal(x, np.concatenate([c.samples for c in passed]))
    finally:
        stop(s)


def test_stream_codes_device_overflow_marked_and_counted():
    """A device overflow in one chunk of a codes stream: its frames are flagged, its dropped samples are counted
    on the first of them (and in the stream's loss), the other chunks are clean."""
    def overflow_second(i, cap):
        if i == 2:
            cap.meta.overflow, cap.meta.dropped_samples = True, 123
        return cap

    s = serve(RIGS / "pluto-emulated.yaml")
    try:
        asked = _faulty_codes(s, overflow_second)
        with open_radio(f"zmq://127.0.0.1:{s.port}?insecure=1&format=sc16") as r:
            r.configure_rx(RX)
            st = r.stream(frame_samples=FRAME)
            got = _read(st, 100)
            st.close()
        per = asked[0] // FRAME  # frames per chunk
        assert len(got) == 100 and asked[0] == per * FRAME and 2 * per < 100
        flagged = [i for i, (h, _) in enumerate(got) if h.flags & wire.F_OVERFLOW]
        assert flagged == list(range(per, 2 * per))  # the second chunk's frames, all of them
        first = got[per][0]
        assert first.flags & wire.F_DROPPED and first.lost_before == 123
        assert [h.lost_before for h, _ in got].count(0) == 99
        assert st.lost == 123 and st.overflows == per
    finally:
        stop(s)


def test_stream_malformed_codes_abort_it_and_nothing_is_sent():
    """Codes a chunk's frames cannot carry (a scale outside (0, 1], codes of the wrong type or length) end the
    stream ABORTED naming them; none of that chunk is sent; the server streams on for the next stream."""
    bad = {}

    def broken(i, cap):
        if i == bad.get("at"):
            return CodeCapture(bad.get("codes", cap.codes), bad.get("scale", cap.scale), cap.meta)
        return cap

    s = serve(RIGS / "pluto-emulated.yaml")
    try:
        asked = _faulty_codes(s, broken)
        with open_radio(f"zmq://127.0.0.1:{s.port}?insecure=1&format=sc16") as r:
            r.configure_rx(RX)
            for good, fault, why in ((1, {"scale": 2.0}, "scale 2.0"),
                                     (2, {"codes": np.zeros(10, np.int32)}, "int32 codes of shape")):
                bad.clear()
                bad.update(fault, at=len(asked) + good + 1)  # the chunk after ``good`` good ones
                st = r.stream(frame_samples=FRAME)
                got = _read(st, 1000)
                assert st.ended is not None and why in st.ended, st.ended
                assert len(got) == asked[0] // FRAME * good  # the chunks before, whole
                assert all(h.scale == 2.0 ** -11 for h, _ in got)
            bad.clear()
            st = r.stream(frame_samples=FRAME)
            assert len(_read(st, 40)) == 40
            st.close()
    finally:
        stop(s)


def test_stream_codes_full_buffer_drops_and_counts_whole_frames():
    """A stalled client on a codes stream: the server's full buffer drops whole frames and counts them; every
    frame that arrives still carries the board's codes at its place in the stream."""
    s = serve(RIGS / "pluto-emulated.yaml")
    try:
        sent = _recording(s)
        s._budget.limit = 32 * FRAME * 4  # 32 sc16 frames
        with open_radio(f"zmq://127.0.0.1:{s.port}?insecure=1&format=sc16") as r:
            r.configure_rx(RX)
            st = r.stream(frame_samples=FRAME)
            got = _read(st, 1)
            # the client stalls: the buffer fills, and frames are dropped while it reads nothing
            assert wait_until(lambda: s.counters["samples_dropped"] > 100 * FRAME, 60.0)
            # what was in flight (credits granted before the stall) comes first; read on to the first frame after
            # a drop, and a few more
            while len(got) < 5000 and not any(h.flags & wire.F_DROPPED for h, _ in got[-1:]):
                got += _read(st, 1)
            got += _read(st, 10)
            st.close()
        assert st.lost > 0 and st.lost == s.counters["samples_dropped"] and st.lost % FRAME == 0
        dropped = [h for h, _ in got if h.flags & wire.F_DROPPED]
        assert dropped and all(h.lost_before > 0 and h.lost_before % FRAME == 0 for h in dropped)
        assert wait_until(lambda: not s._streams, 5.0) and s._budget.held == 0
        codes = np.concatenate([c.codes for c in sent]).reshape(-1, 2)
        for h, x in got:
            assert h.scale == 2.0 ** -11
            local = np.empty(h.n_samples, np.complex64)
            codes_to_samples(codes[h.first_sample:h.first_sample + h.n_samples], local)
            assert np.array_equal(x, local)
    finally:
        stop(s)


def test_stream_codes_recorded_as_ci16_by_shifting_them(tmp_path, monkeypatch):
    """``harness capture --format sc16 --datatype ci16_le`` of a board's codes stream: the recording holds the
    codes x 16 (scale 2^-11 onto the ci16_le grid 2^-15), exactly, taken by integer arithmetic (the checked
    float path is not used)."""
    from devices.replay import RecordingWriter, read_recording
    from harness.cli import main

    def checked(self, samples):
        raise AssertionError("codes on the ci16 grid are shifted, not converted and checked")

    monkeypatch.setattr(RecordingWriter, "write", checked)
    s = serve(RIGS / "pluto-emulated.yaml", lease_s=5.0)
    try:
        sent = _recording(s)
        out = tmp_path / "raw"
        assert main(["capture", f"zmq://127.0.0.1:{s.port}?insecure=1", "--freq", "2140 MHz", "--rate", "15.36 MHz",
                     "--duration", "0.05 s", "--format", "sc16", "--datatype", "ci16_le", "--out", str(out)]) == 0
        rec = read_recording(out)  # checks the SHA-512
        assert rec.global_info["harness:stream"]["lost"] == 0 and rec.samples.size == 768_000
        data = np.fromfile(out.parent / "raw.sigmf-data", dtype="<i2")
        codes = np.concatenate([c.codes for c in sent])[:data.size]
        assert np.abs(codes).max() > 16 and np.array_equal(data, codes.astype(np.int32) * 16)
    finally:
        stop(s)
