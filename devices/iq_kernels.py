"""Compiled (numba) one-pass loops over I/Q samples for the remote stream: the sc16 codecs and the RX guard's
mean power (of complex64 samples, or of a board's int16 codes).

numpy needs a float temporary and three passes to round and clip (cf32 -> sc16: ~10 ms per 4M samples) and
reads int16 through a converting loop (sc16 -> cf32: ~4 ms); these loops do each in one pass at about memory
speed (~1.5 ms), on the server for every frame it sends and on the client for every frame it takes.
``np.vdot`` for the mean power runs on OpenBLAS's threads, which on a busy 2-core machine wait for a core
(tens of ms per capture); :func:`mean_power` stays on the calling thread.

The entry points have explicit signatures, so they are compiled (or loaded from numba's cache) when this
module is imported, never inside a capture and its deadline. They release the GIL.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types

# inputs may be read-only (a received message's buffer, np.frombuffer of bytes): a signature for each
_F32 = types.Array(types.float32, 1, "C")
_F32_RO = types.Array(types.float32, 1, "C", readonly=True)
_I16 = types.Array(types.int16, 1, "C")
_I16_RO = types.Array(types.int16, 1, "C", readonly=True)

#: int16 value = sample x 32768 (full scale 1.0 -> 32767, clipped; -1.0 -> -32768): the ``ci16_le`` grid of
#: SigMF recordings (devices.replay.CI16_SCALE), so a 12-bit board's k/2048 crosses as 16 k, exactly
SC16_FULL_SCALE = 32768.0


@njit([types.void(a, types.float32, _I16) for a in (_F32, _F32_RO)], cache=True, nogil=True, boundscheck=False)
def _encode(iq, gain, out):
    for i in range(iq.size):
        v = np.rint(iq[i] * gain)
        if v > 32767.0:
            v = 32767.0
        elif v < -32768.0:
            v = -32768.0
        elif v != v:  # NaN: 0, never an undefined cast
            v = 0.0
        out[i] = np.int16(v)


@njit([types.float64(a, types.float32, _I16) for a in (_F32, _F32_RO)], cache=True, nogil=True, boundscheck=False,
      fastmath=True)
def _encode_power(iq, gain, out):
    # _encode and _sum_squares in one pass: the RX guard's power of what is sent costs no second read
    s = 0.0
    for i in range(iq.size):
        a = iq[i]
        s += np.float64(a) * np.float64(a)
        v = np.rint(a * gain)
        if v > 32767.0:
            v = 32767.0
        elif v < -32768.0:
            v = -32768.0
        elif v != v:
            v = 0.0
        out[i] = np.int16(v)
    return s


@njit([types.void(a, types.float32, _F32) for a in (_I16, _I16_RO)], cache=True, nogil=True, boundscheck=False)
def _decode(iq, scale, out):
    for i in range(iq.size):
        out[i] = np.float32(iq[i]) * scale


@njit([types.float64(a) for a in (_F32, _F32_RO)], cache=True, nogil=True, boundscheck=False, fastmath=True)
def _sum_squares(iq):
    # fastmath lets the sum be reordered (vectorised partial sums): float64 keeps it exact to ~1e-13
    s = 0.0
    for i in range(iq.size):
        a = np.float64(iq[i])
        s += a * a
    return s


@njit([types.int64(a) for a in (_I16, _I16_RO)], cache=True, nogil=True, boundscheck=False)
def _code_sum_squares(iq):
    # integers: exact whatever the count (2^30 per value, 2^25 values at most in a capture)
    s = 0
    for i in range(iq.size):
        a = np.int64(iq[i])
        s += a * a
    return s


def code_sum_squares(codes: np.ndarray) -> int:
    """Sum of the squares of int16 I/Q codes, exact (a board's own codes: the RX guard's power of what is sent
    without converting it)."""
    return int(_code_sum_squares(np.ascontiguousarray(codes, dtype=np.int16).reshape(-1)))


def sc16_encode(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """complex64 samples as interleaved int16 I/Q (value = round(sample x 32768), clipped to int16)."""
    iq = np.ascontiguousarray(x, dtype=np.complex64).view(np.float32).reshape(-1)
    if out is None:
        out = np.empty(iq.size, np.int16)
    _encode(iq, np.float32(SC16_FULL_SCALE), out)
    return out


def sc16_encode_power(x: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """:func:`sc16_encode` and the sum of |x|^2 (float64, as :func:`mean_power` sums it) in one pass."""
    iq = np.ascontiguousarray(x, dtype=np.complex64).view(np.float32).reshape(-1)
    if out is None:
        out = np.empty(iq.size, np.int16)
    return out, _encode_power(iq, np.float32(SC16_FULL_SCALE), out)


def sc16_decode(iq: np.ndarray, scale: float, out: np.ndarray | None = None) -> np.ndarray:
    """Interleaved int16 I/Q (value x ``scale``) as complex64, written into ``out`` (complex64, len/2)."""
    iq = np.ascontiguousarray(iq, dtype=np.int16).reshape(-1)
    if out is None:
        out = np.empty(iq.size // 2, np.complex64)
    _decode(iq, np.float32(scale), out.view(np.float32))
    return out


def mean_power(x: np.ndarray) -> float:
    """Mean |x|^2 of complex samples (accumulated in float64); 0.0 for no samples."""
    if x.size == 0:
        return 0.0
    iq = np.ascontiguousarray(x, dtype=np.complex64).view(np.float32).reshape(-1)
    return _sum_squares(iq) / x.size
