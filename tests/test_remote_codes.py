"""A board's own int16 codes as the sc16 frames of a bounded capture (``Radio.capture_codes``).

The served rig is the shipped ``pluto-emulated``: the ``pluto:`` driver (pyadi-iio over libiio's network protocol)
against an emulated Pluto, whose RX delivers 12-bit codes. A bounded sc16 capture crosses as those codes with
their scale 2^-11: the client's samples are exactly what the driver's own ``capture`` makes of the same codes,
and the RX guard, flags and loss counting work as on the converted path.
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
from tests.remote_helpers import serve, stop

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


def test_codes_capture_rx_guard_stops_tx(tmp_path):
    """The RX guard's power, summed from the codes, refuses a capture too loud at the RX port: the capture ends
    ABORTED and the transmitter is stopped."""
    rig = write_rig(tmp_path, "pluto-emulated.yaml", limits={"max_rx_input_dbm": -60, "max_dut_input_dbm": 20,
                                                             "tx_bands": [{"low": "2 GHz", "high": "2.3 GHz"}]})
    s = serve(rig, lease_s=2.0)
    try:
        sent = _recording(s)
        with open_radio(f"zmq://127.0.0.1:{s.port}?insecure=1&format=sc16") as r:
            r.configure_tx(StreamConfig(2.14e9, 15.36e6, -20.0))
            r.configure_rx(StreamConfig(2.14e9, 15.36e6, 0.0))
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
