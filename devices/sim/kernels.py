"""Compiled (numba) sample-by-sample kernels of the simulated rig.

The physics is defined in the modules that call these (``devices.sim.repeater``,
``devices.sim.dut``); the kernels do the same arithmetic one sample at a time,
compiled, where numpy would need one Python call per small block. They never
draw random numbers: the callers draw them, in the same order as before.
The entry points have explicit signatures, so they are compiled (or loaded
from numba's cache) when this module is imported, never inside a capture
and its deadline.

* :func:`rapp_chain`: a memoryless Rapp AM/AM + AM/PM stage on a block.
* :func:`repeater_loop`: the repeater's feedback loop and ALC. The fed-back
  signal is the channel FIR on the delayed output, computed as a uniformly
  partitioned overlap-save convolution (chunks of ``L`` <= the loop latency
  outputs, FFT size ``N``, one FFT of the newest output window per chunk,
  the filter's partitions multiplied against the spectra of the previous
  windows): the same sums as the direct convolution, rounded differently.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def _table_noise(t, cr, ci, conj):
    """One noise sample from the Gaussian table, rotated by ``cr + j ci`` (conjugated if ``conj``)."""
    tr, ti = np.float64(t.real), np.float64(t.imag)
    nr = tr * cr - ti * ci
    ni = tr * ci + ti * cr
    return nr, (-ni if conj else ni)


@njit(cache=True, inline="always")
def _rapp(u: float, p: float) -> float:
    """(1 + u^(2p))^(-1/(2p)), overflow-free (see devices.paths.rapp_gain)."""
    if p == 1.0:
        return 1.0 / math.sqrt(1.0 + u * u)
    if u > 1.0:
        m, s = u, 1.0 / u
    else:
        m, s = 1.0, u
    if p == 2.0:
        s2 = s * s
        return 1.0 / (math.sqrt(math.sqrt(1.0 + s2 * s2)) * m)
    return (1.0 + s ** (2.0 * p)) ** (-1.0 / (2.0 * p)) / m


@njit(cache=True, inline="always")
def _cis(phi: float) -> tuple[float, float]:
    """(cos phi, sin phi): Taylor series to rounding for |phi| <= 0.25 rad (an AM/PM's usual range), else libm."""
    if abs(phi) > 0.25:
        return math.cos(phi), math.sin(phi)
    p2 = phi * phi
    c = 1.0 - p2 * (0.5 - p2 * (1.0 / 24.0 - p2 * (1.0 / 720.0 - p2 * (1.0 / 40320.0 - p2 * (1.0 / 3628800.0)))))
    si = phi * (1.0 - p2 * (1.0 / 6.0 - p2 * (1.0 / 120.0 - p2 * (1.0 / 5040.0 - p2 * (1.0 / 362880.0
                                                                                       - p2 * (1.0 / 39916800.0))))))
    return c, si


@njit(cache=True, inline="always")
def _stage(x: complex, g: float, k_u: float, p: float, alpha: float, beta: float) -> complex:
    """Rapp output stage on one sample: gain g, normalised drive u = k_u |x|, AM/PM alpha, beta (rad)."""
    u2 = k_u * k_u * (x.real * x.real + x.imag * x.imag)
    if p == 2.0 and u2 < 1e100:  # the common smoothness, without branches or powers
        gain = g / math.sqrt(math.sqrt(1.0 + u2 * u2))
    elif p == 1.0 and u2 < 1e200:
        gain = g / math.sqrt(1.0 + u2)
    else:
        gain = g * _rapp(math.sqrt(u2), p)
    if alpha != 0.0:
        c, si = _cis(alpha * u2 / (1.0 + beta * u2))
        return x * complex(gain * c, gain * si)
    return x * gain


@njit("complex128[::1](complex128[::1], float64, float64, float64, float64, float64)", cache=True, nogil=True,
      fastmath=True)
def rapp_chain(x, g, k_u, p, alpha, beta):
    """Rapp stage on every sample of ``x`` (complex128): gain ``g``, drive ``k_u``|x|, AM/PM ``alpha``, ``beta``."""
    y = np.empty_like(x)
    for i in range(x.size):
        y[i] = _stage(x[i], g, k_u, p, alpha, beta)
    return y


# ----- FFT (radix 2, in place) ---------------------------------------------------
def fft_plan(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Bit-reversal permutation and per-stage twiddles for :func:`_fft` (``n`` a power of 2).

    Stage with half-width h (1, 2, 4, ...) uses exp(-j pi k / h), k < h, at offset h - 1.
    """
    bits = n.bit_length() - 1
    rev = np.zeros(n, dtype=np.int64)
    for i in range(n):
        rev[i] = int(format(i, f"0{bits}b")[::-1], 2) if bits else 0
    tw = np.concatenate([np.exp(-1j * np.pi * np.arange(h) / h) for h in (1 << np.arange(bits))]) if bits \
        else np.ones(1, dtype=np.complex128)
    return rev, tw


@njit(cache=True, fastmath=True)
def _fft(a, rev, tw):
    """In-place radix-2 DIT forward FFT of ``a`` (unscaled)."""
    n = a.size
    for i in range(n):
        j = rev[i]
        if j > i:
            t = a[i]
            a[i] = a[j]
            a[j] = t
    for i in range(0, n - 1, 2):
        t = a[i + 1]
        a[i + 1] = a[i] - t
        a[i] = a[i] + t
    half = 2
    while half < n:
        off = half - 1
        for start in range(0, n, 2 * half):
            for k in range(half):
                i = start + k
                j = i + half
                t = a[j] * tw[off + k]
                a[j] = a[i] - t
                a[i] = a[i] + t
        half *= 2


@njit("Tuple((complex128[::1], float64, float64))(complex128[::1], float64, float64, boolean, complex128[::1], "
      "int64, complex128[:, ::1], int64, int64, int64, int64[::1], complex128[::1], complex128, int64, boolean, "
      "float64, float64, float64, float64, float64, float64, float64, float64, float64)", cache=True, nogil=True,
      fastmath=True)
def repeater_loop(wx, lo_cycles, lo_step, has_lo, ybuf, hy, hspec, L, N, ml, rev, tw, kfb, block,
                  alc, alc_db, det_mw, rated_mw, tau_d, tau_i, k_u, p, alpha, beta):
    """Feedback loop and ALC of the repeater on ``wx`` (its forward signal before the ALC).

    ``ybuf``: N zeros, the ``hy`` kept outputs, then room for the n new ones
    (filled here). ``hspec``: (Q, N) spectra of the feedback FIR's partitions
    of ``L`` taps, scaled by 1/N (Q = 0: no feedback). The ALC gain holds over
    each block of ``block`` samples and is updated after it, from its output
    power. With ``has_lo`` the output is turned by the carrier exp(j 2 pi
    (lo_cycles + lo_step t)): exact every 1024 samples, advanced by a product
    in between. Returns (y, alc_db, det_mw).
    """
    n = wx.size
    q = hspec.shape[0]
    base = N + hy  # ybuf index of output 0
    y = np.empty(n, dtype=np.complex128)
    f = np.zeros(L, dtype=np.complex128)  # feedback of the current chunk
    ring = np.zeros((max(q, 1), N), dtype=np.complex128)  # spectra of the last q windows
    acc = np.empty(N, dtype=np.complex128)
    head = 0  # ring row of the newest window
    if q > 0:
        # windows of the chunks before this call, oldest first (from the kept outputs)
        for c in range(-(q - 1) * L, 0, L):
            head = (head + 1) % q
            w0 = base + c - ml + L - N
            for i in range(N):
                ring[head, i] = ybuf[w0 + i]
            _fft(ring[head], rev, tw)
    next_chunk = 0
    step = complex(math.cos(2 * math.pi * lo_step), math.sin(2 * math.pi * lo_step))
    z_lo = 1.0 + 0.0j
    g_alc = 10.0 ** (alc_db / 20.0)
    block_end = min(block, n)
    p_acc = 0.0
    m = block_end
    for t in range(n):
        w = wx[t]
        if q > 0:
            if t == next_chunk:
                head = (head + 1) % q
                w0 = base + t - ml + L - N  # needs outputs up to t - ml + L - 1 < t
                for i in range(N):
                    ring[head, i] = ybuf[w0 + i]
                _fft(ring[head], rev, tw)
                for i in range(N):
                    acc[i] = 0.0
                r = head
                for j in range(q):
                    for i in range(N):
                        acc[i] += hspec[j, i] * ring[r, i]
                    r = r - 1 if r > 0 else q - 1
                # inverse FFT as conj(FFT(conj(.))); hspec carries the 1/N
                for i in range(N):
                    acc[i] = acc[i].conjugate()
                _fft(acc, rev, tw)
                for i in range(L):
                    f[i] = acc[N - L + i].conjugate()
                next_chunk += L
            w = w + kfb * f[t - (next_chunk - L)]
        if alc:
            w = w * g_alc
        yt = _stage(w, 1.0, k_u, p, alpha, beta)
        if has_lo:
            if t % 1024 == 0:
                c = 2 * math.pi * ((lo_cycles + lo_step * t) % 1.0)
                z_lo = complex(math.cos(c), math.sin(c))
            else:
                z_lo = z_lo * step
            yt = yt * z_lo
        y[t] = yt
        ybuf[base + t] = yt
        if alc:
            p_acc += yt.real * yt.real + yt.imag * yt.imag
            if t + 1 == block_end:
                pw = p_acc / m
                det_mw += min(1.0, m / tau_d) * (pw - det_mw)
                err_db = 10.0 * math.log10(max(det_mw, 1e-30) / rated_mw)
                alc_db = min(0.0, alc_db - min(0.5, m / tau_i) * err_db)
                g_alc = 10.0 ** (alc_db / 20.0)
                p_acc = 0.0
                start = block_end
                block_end = min(start + block, n)
                m = block_end - start
    return y, alc_db, det_mw


@njit("complex128[::1](float64[::1], float64[::1], float64, int64)", cache=True, nogil=True)
def wiener_phasor(phi, steps, small, anchor):
    """exp(j phi[k]) for a random-walk phase phi (phi[k] - phi[k-1] = steps[k]).

    Every ``anchor`` samples (and where a step exceeds ``small`` rad) the
    phasor is exp(j phi) computed directly; in between it is advanced by
    exp(j steps[k]) from its Taylor series (exact to rounding for |step| <=
    ``small`` <= 0.02 rad): a product per sample instead of a cosine and a
    sine, its rounding bounded by ``anchor`` steps (~1e-12 for 4096).
    """
    n = phi.size
    z = np.empty(n, dtype=np.complex128)
    zr, zi = 0.0, 0.0
    for k in range(n):
        s = steps[k]
        if k % anchor == 0 or abs(s) > small:
            zr, zi = math.cos(phi[k]), math.sin(phi[k])
        else:
            s2 = s * s
            c = 1.0 - s2 * (0.5 - s2 * (1.0 / 24.0 - s2 * (1.0 / 720.0)))
            si = s * (1.0 - s2 * (1.0 / 6.0 - s2 * (1.0 / 120.0 - s2 * (1.0 / 5040.0))))
            zr, zi = zr * c - zi * si, zr * si + zi * c
        z[k] = complex(zr, zi)
    return z


# ----- the bench's ports ---------------------------------------------------------
# Fused passes over a block: the same operations, in the same order and precision, as the numpy
# expressions they replace in devices.sim.bench (so the samples are bit for bit the same), without
# the temporaries. A table noise block is t[start:start + n] * rot (rot = sqrt(P) j^k, one part of it
# zero, so each product is exact) and conjugated when ``conj``.


@njit(cache=True, inline="always")
def _qcode(v: float, scale: float) -> tuple[float, bool]:
    """(v rounded to the grid of 1/scale with two's-complement clipping, clipped?) -- bench._quantise on one value."""
    q = np.rint(v * scale)
    clipped = q > scale - 1.0 or q < -scale
    if q > scale - 1.0:
        q = scale - 1.0
    elif q < -scale:
        q = -scale
    return q / scale, clipped


@njit("Tuple((complex64[::1], int64))(complex128[::1], complex64[::1], int64, complex128, boolean, float64, int64)",
      cache=True, nogil=True)
def rx_port(y, table, start, rot, conj, g, bits):
    """RX port on ``y``: + table noise, times ``g``, ``bits``-bit ADC; (samples, clipped count)."""
    n = y.size
    scale = float(1 << (bits - 1))
    out = np.empty(n, dtype=np.complex64)
    cr, ci = rot.real, rot.imag
    clipped = 0
    for i in range(n):
        nr, ni = _table_noise(table[start + i], cr, ci, conj)
        a = y[i].real + nr
        b = y[i].imag + ni
        # y *= g is a complex product with g + 0j
        ar = a * g - b * 0.0
        bi = a * 0.0 + b * g
        qi, c1 = _qcode(ar, scale)
        qq, c2 = _qcode(bi, scale)
        out[i] = complex(np.float32(qi), np.float32(qq))
        if c1 or c2:
            clipped += 1
    return out, clipped


@njit("complex128[::1](complex128[::1], int64, int64, float64, complex64[::1], int64, complex128, boolean)",
      cache=True, nogil=True)
def tx_samples(wave, first, n, s, table, start, rot, conj):
    """``n`` samples of cyclic ``wave`` from its sample ``first``, times ``s``, + table noise."""
    w = wave.size
    x = np.empty(n, dtype=np.complex128)
    cr, ci = rot.real, rot.imag
    j = first
    for i in range(n):
        v = wave[j]
        j += 1
        if j == w:
            j = 0
        # x *= s is a complex product with s + 0j
        xr = v.real * s - v.imag * 0.0
        xi = v.real * 0.0 + v.imag * s
        nr, ni = _table_noise(table[start + i], cr, ci, conj)
        x[i] = complex(xr + nr, xi + ni)
    return x


@njit("Tuple((complex128[::1], float64))(float64[::1], float64, float64, int64)", cache=True, nogil=True)
def wiener_walk(steps, phase, small, anchor):
    """(exp(j phi), phi[-1]) for phi = phase + cumsum(steps): numpy's cumsum, then :func:`wiener_phasor`."""
    n = steps.size
    phi = np.empty(n, dtype=np.float64)
    c = 0.0
    for k in range(n):
        c += steps[k]
        phi[k] = phase + c
    return wiener_phasor(phi, steps, small, anchor), phi[n - 1]


@njit(["complex128[::1](complex128[::1], float64, float64, float64, float64, float64, float64, int64)",
       "complex128[::1](complex64[::1], float64, float64, float64, float64, float64, float64, int64)"],
      cache=True, nogil=True)
def tx_dac(x, gi, gq, c, s, lo_r, lo_i, bits):
    """TX digital chain of devices.sim.bench.SimBench.tx_digital on every sample: IQ imbalance, LO leakage, DAC."""
    scale = float(1 << (bits - 1))
    out = np.empty(x.size, dtype=np.complex128)
    for k in range(x.size):
        i, q = np.float64(x[k].real), np.float64(x[k].imag)  # complex64 input widens exactly
        qi, _ = _qcode(gi * (c * i + s * q) + lo_r, scale)
        qq, _ = _qcode(gq * (c * q + s * i) + lo_i, scale)
        # iq + 1j * qq as numpy evaluates it (the same zeros' signs too)
        out[k] = complex(qi + (0.0 * qq - 0.0), 0.0 + (0.0 * 0.0 + qq))
    return out


@njit("float64(complex128[::1], complex64[::1], int64, boolean, float64, float64, float64, float64, int64)",
      cache=True, nogil=True, fastmath=True)
def wiener_table(x, table, start, imag, sigma, first_scale, phase, small, anchor):
    """Multiply ``x`` in place by exp(j phi), phi a Wiener phase from ``phase``; returns phi at the last sample.

    The steps are Gaussian of standard deviation ``sigma`` (the first one
    ``first_scale`` times that, spanning a gap): sqrt(2) times the real (or
    imaginary) parts of the unit-power table from ``start`` -- no fresh
    Gaussian draws. The phasor is advanced as in :func:`wiener_phasor`.
    """
    n = x.size
    zr, zi = 0.0, 0.0
    phi = phase
    k2 = math.sqrt(2.0) * sigma
    for k in range(n):
        t = table[start + k]
        s = k2 * (np.float64(t.imag) if imag else np.float64(t.real))
        if k == 0:
            s *= first_scale
        phi += s
        if k % anchor == 0 or abs(s) > small:
            zr, zi = math.cos(phi), math.sin(phi)
        else:
            s2 = s * s
            c = 1.0 - s2 * (0.5 - s2 * (1.0 / 24.0 - s2 * (1.0 / 720.0)))
            si = s * (1.0 - s2 * (1.0 / 6.0 - s2 * (1.0 / 120.0 - s2 * (1.0 / 5040.0))))
            zr, zi = zr * c - zi * si, zr * si + zi * c
        v = x[k]
        x[k] = complex(v.real * zr - v.imag * zi, v.real * zi + v.imag * zr)
    return phi
