"""Compiled (numba) sample-by-sample kernels of the simulated rig.

The physics is defined in the modules that call these (``devices.sim.repeater``,
``devices.sim.dut``); the kernels do the same arithmetic one sample at a time,
compiled, where numpy would need one Python call per small block. They never
draw random numbers: the callers draw them, in the same order as before.
The entry points have explicit signatures, so they are compiled (or loaded
from numba's cache) when this module is imported, never inside a capture
and its deadline.

* :func:`rapp_span`: a memoryless Rapp AM/AM + AM/PM stage (with the input
  noise before it and a flat gain after it) on a part of a block;
  :func:`rapp_chain` on a whole block.
* :func:`tx_span`, :func:`wiener_span`, :func:`rx_port_span`: the bench's TX
  samples with their phase noise, and its RX port, on a part of a block.
* :func:`repeater_loop`: the repeater's feedback loop and ALC. The fed-back
  signal is the channel FIR on the delayed output, computed as a uniformly
  partitioned overlap-save convolution (chunks of ``L`` <= the loop latency
  outputs, FFT size ``N``, one FFT of the newest output window per chunk,
  the filter's partitions multiplied against the spectra of the previous
  windows): the same sums as the direct convolution, rounded differently.

The ``*_span`` kernels work on samples [lo, hi) of a block so that
:mod:`devices.workers` can run a long block's parts on all cores.
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


# ----- spans of a block (both cores) -----------------------------------------------
# The per-sample stages on samples [lo, hi) of a block, so devices.workers can run a long block's
# parts on both cores (nogil). For LLVM to vectorise the loops they run over slices from index 0
# (no negative-index wraparound) with error_model="numpy" (no ZeroDivisionError check) and
# without branches on the samples; the arithmetic per sample is the one above.

@njit(cache=True, inline="always")
def _rapp_fast(xr: float, xi: float, kk: float, g: float, p: float, alpha: float, beta: float):
    """:func:`_stage` for p = 1 or 2 without branches: (y.real, y.imag, 1 if the sample needs
    :func:`_stage`'s other branches (a drive beyond the closed forms' range, AM/PM beyond 0.25 rad))."""
    u2 = kk * (xr * xr + xi * xi)
    if p == 2.0:
        gain = g / math.sqrt(math.sqrt(1.0 + u2 * u2))
        bad = u2 >= 1e100
    else:
        gain = g / math.sqrt(1.0 + u2)
        bad = u2 >= 1e200
    if alpha != 0.0:
        phi = alpha * u2 / (1.0 + beta * u2)
        bad = bad | (abs(phi) > 0.25)
        p2 = phi * phi
        c = 1.0 - p2 * (0.5 - p2 * (1.0 / 24.0 - p2 * (1.0 / 720.0 - p2 * (1.0 / 40320.0 - p2 * (1.0 / 3628800.0)))))
        si = phi * (1.0 - p2 * (1.0 / 6.0 - p2 * (1.0 / 120.0 - p2 * (1.0 / 5040.0 - p2 * (1.0 / 362880.0
                                                                                           - p2 * (1.0 / 39916800.0))))))
        gr, gi = gain * c, gain * si
        return xr * gr - xi * gi, xr * gi + xi * gr, np.int64(bad)
    return xr * gain, xi * gain, np.int64(bad)


@njit(cache=True, inline="always")
def _rapp_loop(x, y, t, cr, ci, sg, noisy, g, kk, p, alpha, beta, post):
    """The branch-free pass of :func:`rapp_span` on slices; returns how many samples need the exact one."""
    bad = 0
    for i in range(x.size):
        xr, xi = np.float64(x[i].real), np.float64(x[i].imag)
        if noisy:
            tr, ti = np.float64(t[i].real), np.float64(t[i].imag)
            xr, xi = xr + (tr * cr - ti * ci), xi + sg * (tr * ci + ti * cr)
        yr, yi, b = _rapp_fast(xr, xi, kk, g, p, alpha, beta)
        bad += b
        y[i] = complex(yr * post, yi * post)
    return bad


@njit(["void(complex128[::1], complex128[::1], int64, int64, complex64[::1], int64, complex128, boolean, boolean, "
       "float64, float64, float64, float64, float64, float64)",
       "void(complex64[::1], complex128[::1], int64, int64, complex64[::1], int64, complex128, boolean, boolean, "
       "float64, float64, float64, float64, float64, float64)"],
      cache=True, nogil=True, fastmath=True, error_model="numpy")
def rapp_span(x, y, lo, hi, table, tstart, rot, conj, noisy, g, k_u, p, alpha, beta, post):
    """y[i] = post * Rapp(x[i] + noise[i]) for lo <= i < hi (complex64 input widens exactly).

    noise[i] = table[tstart + i] * rot (conjugated if ``conj``) when ``noisy``: in one pass what
    ``x + complex_noise(...)``, :func:`rapp_chain` and a flat gain ``post`` after it give.
    """
    kk = k_u * k_u
    cr, ci = rot.real, rot.imag
    sg = -1.0 if conj else 1.0
    xs, ys = x[lo:hi], y[lo:hi]
    ts = table[tstart + lo:tstart + hi] if noisy else table[:0]
    if p == 1.0 or p == 2.0:
        if noisy:
            bad = _rapp_loop(xs, ys, ts, cr, ci, sg, True, g, kk, p, alpha, beta, post)
        else:
            bad = _rapp_loop(xs, ys, ts, cr, ci, sg, False, g, kk, p, alpha, beta, post)
        if bad == 0:
            return
    for i in range(xs.size):  # general p, or the few samples beyond the branch-free pass: as _stage
        xr, xi = np.float64(xs[i].real), np.float64(xs[i].imag)
        if noisy:
            tr, ti = np.float64(ts[i].real), np.float64(ts[i].imag)
            xr, xi = xr + (tr * cr - ti * ci), xi + sg * (tr * ci + ti * cr)
        if (p == 1.0 or p == 2.0) and _rapp_fast(xr, xi, kk, g, p, alpha, beta)[2] == 0:
            continue
        v = _stage(complex(xr, xi), g, k_u, p, alpha, beta)
        ys[i] = complex(v.real * post, v.imag * post)


@njit(["Tuple((complex64[::1], int64))(complex128[::1], int64, int64, complex64[::1], int64, complex128, boolean, "
       "float64, int64, complex64[::1])",
       "Tuple((complex64[::1], int64))(complex64[::1], int64, int64, complex64[::1], int64, complex128, boolean, "
       "float64, int64, complex64[::1])"],
      cache=True, nogil=True, error_model="numpy")
def rx_port_span(y, lo, hi, table, start, rot, conj, g, bits, out):
    """:func:`rx_port` on y[lo:hi] (noise table[start + i]), into out[lo:hi]; (out, clipped count in the span)."""
    scale = float(1 << (bits - 1))
    cr, ci = rot.real, rot.imag
    sg = -1.0 if conj else 1.0
    ys, ts, os_ = y[lo:hi], table[start + lo:start + hi], out[lo:hi]
    clipped = 0
    for i in range(ys.size):
        tr, ti = np.float64(ts[i].real), np.float64(ts[i].imag)
        a = np.float64(ys[i].real) + (tr * cr - ti * ci)
        b = np.float64(ys[i].imag) + sg * (tr * ci + ti * cr)
        ar = a * g - b * 0.0  # y *= g is a complex product with g + 0j
        bi = a * 0.0 + b * g
        qi, c1 = _qcode(ar, scale)
        qq, c2 = _qcode(bi, scale)
        os_[i] = complex(np.float32(qi), np.float32(qq))
        clipped += c1 | c2
    return out, clipped


@njit(cache=True, inline="always")
def _wiener_step(t, k, imag, k2, first_scale):
    s = k2 * (np.float64(t.imag) if imag else np.float64(t.real))
    return s * first_scale if k == 0 else s


@njit("float64(complex64[::1], int64, boolean, float64, float64, float64, int64)", cache=True, nogil=True)
def wiener_phase(table, start, imag, sigma, first_scale, phase, n):
    """The Wiener phase of :func:`wiener_span` after its first ``n`` steps (the same sums, in the same order)."""
    phi = phase
    k2 = math.sqrt(2.0) * sigma
    for k in range(n):
        phi += _wiener_step(table[start + k], k, imag, k2, first_scale)
    return phi


@njit(cache=True, inline="always")
def _wiener_phasors(table, pstart, imag, k2, first_scale, k0, m, phi, small, pb, zr, zi):
    """exp(j phi) for the ``m`` samples from block sample ``k0`` into zr[:m], zi[:m], phi the phase before
    ``k0``; returns the phase after them. The phasor at ``k0`` is computed directly (the anchor); the
    others are it times exp(j d), d their phase less the anchor's, from a Taylor series exact to rounding
    for |d| <= ``small`` <= 0.02 rad (computed directly beyond): no product chain from sample to sample,
    so the loop vectorises."""
    for i in range(m):  # the phases: one sum after the other, as wiener_phase
        phi += _wiener_step(table[pstart + k0 + i], k0 + i, imag, k2, first_scale)
        pb[i] = phi
    pa = pb[0]
    ar, ai = math.cos(pa), math.sin(pa)
    far = 0
    for i in range(m):
        d = pb[i] - pa
        far += abs(d) > small
        d2 = d * d
        c = 1.0 - d2 * (0.5 - d2 * (1.0 / 24.0 - d2 * (1.0 / 720.0)))
        si = d * (1.0 - d2 * (1.0 / 6.0 - d2 * (1.0 / 120.0 - d2 * (1.0 / 5040.0))))
        zr[i] = ar * c - ai * si
        zi[i] = ar * si + ai * c
    if far:
        for i in range(m):
            if abs(pb[i] - pa) > small:
                zr[i], zi[i] = math.cos(pb[i]), math.sin(pb[i])
    return phi


@njit("float64(complex128[::1], int64, int64, complex64[::1], int64, boolean, float64, float64, float64, float64, "
      "int64)", cache=True, nogil=True, error_model="numpy")
def wiener_span(x, lo, hi, table, start, imag, sigma, first_scale, phase, small, anchor):
    """:func:`wiener_table` on x[lo:hi], ``phase`` the phase before sample ``lo`` (:func:`wiener_phase` of
    ``lo`` steps); returns the phase at sample hi - 1. The phasor is anchored at ``lo`` and at every
    multiple of ``anchor`` (:func:`_wiener_phasors`)."""
    pb, zr, zi = np.empty(anchor), np.empty(anchor), np.empty(anchor)
    phi = phase
    k2 = math.sqrt(2.0) * sigma
    k0 = lo
    while k0 < hi:
        m = min(hi, (k0 // anchor + 1) * anchor) - k0
        phi = _wiener_phasors(table, start, imag, k2, first_scale, k0, m, phi, small, pb, zr, zi)
        xs = x[k0:k0 + m]
        for i in range(m):
            v = xs[i]
            xs[i] = complex(v.real * zr[i] - v.imag * zi[i], v.real * zi[i] + v.imag * zr[i])
        k0 += m
    return phi


@njit(["float64(complex128[::1], complex128[::1], int64, int64, int64, float64, complex64[::1], int64, complex128, "
       "boolean, boolean, int64, boolean, float64, float64, float64, float64, int64)",
       "float64(complex64[::1], complex128[::1], int64, int64, int64, float64, complex64[::1], int64, complex128, "
       "boolean, boolean, int64, boolean, float64, float64, float64, float64, int64)"], cache=True, nogil=True,
      error_model="numpy")
def tx_span(x, wave, first, lo, hi, s, table, start, rot, conj, pn, pstart, pimag, sigma, first_scale, phase,
            small, anchor):
    """x[lo:hi] of :func:`tx_samples` (block sample k is wave sample (first + k) mod size, noise
    table[start + k]), then with ``pn`` times the phase noise of :func:`wiener_span` (steps from
    table[pstart + k], ``phase`` before sample ``lo``), in one pass; returns the phase at sample hi - 1.
    A complex64 ``x`` gets the samples rounded as numpy's cast rounds them (for a consumer that rounds so first)."""
    w = wave.size
    cr, ci = rot.real, rot.imag
    sg = -1.0 if conj else 1.0
    pb, zr, zi = np.empty(anchor), np.empty(anchor), np.empty(anchor)
    phi = phase
    k2 = math.sqrt(2.0) * sigma
    k0 = lo
    while k0 < hi:
        m = min(hi, (k0 // anchor + 1) * anchor) - k0
        if pn:
            phi = _wiener_phasors(table, pstart, pimag, k2, first_scale, k0, m, phi, small, pb, zr, zi)
        i, j = 0, (first + k0) % w
        while i < m:  # the stretches of the waveform between its wraps
            seg = min(m - i, w - j)
            ws, xs, ts = wave[j:j + seg], x[k0 + i:k0 + i + seg], table[start + k0 + i:start + k0 + i + seg]
            zrs, zis = zr[i:i + seg], zi[i:i + seg]
            for q in range(seg):
                v = ws[q]
                # x *= s is a complex product with s + 0j
                xr = v.real * s - v.imag * 0.0
                xi = v.real * 0.0 + v.imag * s
                tr, ti = np.float64(ts[q].real), np.float64(ts[q].imag)
                xr, xi = xr + (tr * cr - ti * ci), xi + sg * (tr * ci + ti * cr)
                if pn:
                    xr, xi = xr * zrs[q] - xi * zis[q], xr * zis[q] + xi * zrs[q]
                xs[q] = complex(xr, xi)
            i += seg
            j = 0
        k0 += m
    return phi


# ----- whole blocks (one part) ------------------------------------------------------

@njit("complex128[::1](complex128[::1], float64, float64, float64, float64, float64)", cache=True, nogil=True)
def rapp_chain(x, g, k_u, p, alpha, beta):
    """Rapp stage on every sample of ``x`` (complex128): gain ``g``, drive ``k_u``|x|, AM/PM ``alpha``, ``beta``."""
    y = np.empty_like(x)
    rapp_span(x, y, 0, x.size, np.zeros(0, dtype=np.complex64), 0, 0j, False, False, g, k_u, p, alpha, beta, 1.0)
    return y


@njit("Tuple((complex64[::1], int64))(complex128[::1], complex64[::1], int64, complex128, boolean, float64, int64)",
      cache=True, nogil=True)
def rx_port(y, table, start, rot, conj, g, bits):
    """RX port on ``y``: + table noise, times ``g``, ``bits``-bit ADC; (samples, clipped count)."""
    return rx_port_span(y, 0, y.size, table, start, rot, conj, g, bits, np.empty(y.size, dtype=np.complex64))


@njit("complex128[::1](complex128[::1], int64, int64, float64, complex64[::1], int64, complex128, boolean)",
      cache=True, nogil=True)
def tx_samples(wave, first, n, s, table, start, rot, conj):
    """``n`` samples of cyclic ``wave`` from its sample ``first``, times ``s``, + table noise."""
    x = np.empty(n, dtype=np.complex128)
    tx_span(x, wave, first, 0, n, s, table, start, rot, conj, False, 0, False, 0.0, 1.0, 0.0, 0.0, 4096)
    return x


@njit("float64(complex128[::1], complex64[::1], int64, boolean, float64, float64, float64, float64, int64)",
      cache=True, nogil=True)
def wiener_table(x, table, start, imag, sigma, first_scale, phase, small, anchor):
    """Multiply ``x`` in place by exp(j phi), phi a Wiener phase from ``phase``; returns phi at the last sample.

    The steps are Gaussian of standard deviation ``sigma`` (the first one
    ``first_scale`` times that, spanning a gap): sqrt(2) times the real (or
    imaginary) parts of the unit-power table from ``start`` -- no fresh
    Gaussian draws. The phasor is advanced as in :func:`wiener_phasor`.
    (:func:`wiener_span` does it on a part of ``x``.)
    """
    return wiener_span(x, 0, x.size, table, start, imag, sigma, first_scale, phase, small, anchor)


@njit(["void(complex128[::1], int64, int64, int64, int64, complex64[:, ::1])",
       "void(complex64[::1], int64, int64, int64, int64, complex64[:, ::1])"], cache=True, nogil=True)
def fir_load(x, offset, cnt, a, step, frames):
    """Overlap-save frames of u (zeros, x[:cnt] from u[offset], zeros) from u[a] on, ``step`` apart, rounded
    to complex64 as numpy's cast rounds: frame r is u[a + r step:a + r step + frames.shape[1]]."""
    nfft = frames.shape[1]
    for r in range(frames.shape[0]):
        u0 = a + r * step
        lo = min(max(offset - u0, 0), nfft)  # frame positions [lo, hi) hold x
        hi = max(min(offset + cnt - u0, nfft), lo)
        fr = frames[r]
        for i in range(lo):
            fr[i] = 0
        xs = x[u0 + lo - offset:u0 + hi - offset]
        fs = fr[lo:hi]
        for i in range(xs.size):
            fs[i] = xs[i]
        for i in range(hi, nfft):
            fr[i] = 0
