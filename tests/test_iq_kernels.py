"""The compiled sc16 codecs and mean power of the remote stream (devices/iq_kernels.py) against numpy."""

import numpy as np

from devices import iq_kernels, zmq_wire as wire


def test_sc16_encode_rounds_and_clips_like_numpy():
    rng = np.random.default_rng(7)
    x = (0.4 * (rng.standard_normal(100_003) + 1j * rng.standard_normal(100_003))).astype(np.complex64)
    x[:6] = [1 + 1j, -1 - 1j, 2 - 3j, np.nan + 0.5j, 0.5 / 32768 + 1.5j / 32768, -0.5 / 32768]
    iq = x.view(np.float32).astype(np.float64) * 32768
    truth = np.clip(np.rint(iq), -32768, 32767)  # round half to even, as np.rint
    truth[np.isnan(truth)] = 0
    got = iq_kernels.sc16_encode(x)
    assert got.dtype == np.int16 and np.array_equal(got, truth.astype(np.int16))
    assert list(got[:12]) == [32767, 32767, -32768, -32768, 32767, -32768, 0, 16384, 0, 2, 0, 0]


def test_sc16_decode_is_int_times_scale():
    iq = np.array([0, 1, -1, 32767, -32768, 16, 123, -4567], np.int16)
    out = iq_kernels.sc16_decode(iq, 2.0 ** -15)
    assert out.dtype == np.complex64 and out.size == 4
    assert np.array_equal(out.view(np.float32), iq.astype(np.float32) / np.float32(32768))
    into = np.full(6, 9 + 9j, np.complex64)
    iq_kernels.sc16_decode(iq, 1 / 32767, into[1:5])  # straight into part of a capture buffer
    assert into[0] == into[5] == 9 + 9j
    assert np.array_equal(into[1:5].view(np.float32), iq.astype(np.float32) * np.float32(1 / 32767))


def test_twelve_bit_samples_cross_sc16_exactly():
    # a 12-bit board's k/2048 lies on the 2^-15 grid: encoded and decoded through the wire, nothing moves
    k = np.arange(-2048, 2048, dtype=np.float32)
    x = (k / 2048 + 1j * k[::-1] / 2048).astype(np.complex64)
    body, scale = wire.encode_samples(x, wire.FORMATS["sc16"])
    h = wire.FrameHeader(1, 0, 1, 0, 0, x.size, 0, 0.0, scale)
    assert scale == 2.0 ** -15 and np.array_equal(wire.frame_samples(h, memoryview(body.tobytes())), x)


def test_mean_power_matches_float64_numpy():
    rng = np.random.default_rng(3)
    for n in (0, 1, 7, 4097):
        x = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64)
        truth = float(np.mean(np.abs(x.astype(np.complex128)) ** 2)) if n else 0.0
        assert abs(iq_kernels.mean_power(x) - truth) <= 1e-12 * max(truth, 1.0)
    x = np.full(1 << 20, 0.5 - 0.5j, np.complex64)
    assert iq_kernels.mean_power(x[::3]) == 0.5  # strided input


def test_sc16_encode_power_is_encode_and_sum_of_squares():
    rng = np.random.default_rng(11)
    x = (0.7 * (rng.standard_normal(50_001) + 1j * rng.standard_normal(50_001))).astype(np.complex64)
    out = np.full(2 * x.size + 2, 7, np.int16)
    got, sum_sq = iq_kernels.sc16_encode_power(x, out[1:-1])
    assert out[0] == out[-1] == 7 and np.array_equal(got, iq_kernels.sc16_encode(x))
    truth = float(np.sum(np.abs(x.astype(np.complex128)) ** 2))
    assert abs(sum_sq - truth) <= 1e-12 * truth
