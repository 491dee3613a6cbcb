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


#: the repeater loop's carrier is exact every 2^CARRIER_STEP_BITS samples (see :func:`repeater_loop`)
CARRIER_STEP_BITS = 10


# ----- FFT (constant geometry, split single precision) ------------------------------
# The repeater's feedback convolution only needs a forward and an inverse transform that
# agree on the frequency order, so the forward one leaves its output bit-reversed and the
# inverse one takes it so: no permutation. Pease's constant-geometry radix-2 form reads
# every stage's pairs as (m, m + N/2) and writes them to (2m, 2m + 1), so each stage is
# one long loop that LLVM vectorises (real and imaginary parts in separate float32 arrays).
def fft_plan(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-stage twiddles (real, imaginary; float32, shape (log2 n, n/2)) for :func:`_fft_fwd` and :func:`_fft_inv`.

    Stage s multiplies pair m by exp(-j 2 pi (m >> s) / 2^(p - s)), n = 2^p.
    """
    p = n.bit_length() - 1
    if n < 2 or n != 1 << p:
        raise ValueError(f"fft_plan: size {n} is not a power of 2 >= 2")
    m = np.arange(n // 2)
    w = np.array([np.exp(-2j * np.pi * (m >> s) / (1 << (p - s))) for s in range(p)])
    return np.ascontiguousarray(w.real, dtype=np.float32), np.ascontiguousarray(w.imag, dtype=np.float32)


@njit(cache=True, inline="always", fastmath=True)
def _cg_fwd(xr, xi, yr, yi, wr, wi, h):
    """One forward stage: x[m], x[m + h] -> y[2m] = sum, y[2m + 1] = difference * w[m]."""
    for m in range(h):
        ar, ai = xr[m], xi[m]
        br, bi = xr[m + h], xi[m + h]
        yr[2 * m] = ar + br
        yi[2 * m] = ai + bi
        dr, di = ar - br, ai - bi
        yr[2 * m + 1] = dr * wr[m] - di * wi[m]
        yi[2 * m + 1] = dr * wi[m] + di * wr[m]


@njit(cache=True, inline="always", fastmath=True)
def _cg_inv(xr, xi, yr, yi, wr, wi, h):
    """One inverse stage (the forward one transposed, conj(w), unscaled): x[2m], x[2m + 1] -> y[m], y[m + h]."""
    for m in range(h):
        ur, ui = xr[2 * m], xi[2 * m]
        vr, vi = xr[2 * m + 1], xi[2 * m + 1]
        tr = vr * wr[m] + vi * wi[m]
        ti = vi * wr[m] - vr * wi[m]
        yr[m] = ur + tr
        yi[m] = ui + ti
        yr[m + h] = ur - tr
        yi[m + h] = ui - ti


@njit(cache=True, inline="always", fastmath=True)
def _fft_fwd(sr, si, so, dr, di, tr, ti, twr, twi, h):
    """DFT of s[so:so + 2h] into d, bit-reversed order (t: scratch of 2h)."""
    p = twr.shape[0]
    on_d = (p - 1) % 2 == 0  # the last stage must land in d
    xr, xi = sr[so:so + 2 * h], si[so:so + 2 * h]
    if on_d:
        _cg_fwd(xr, xi, dr, di, twr[0], twi[0], h)
    else:
        _cg_fwd(xr, xi, tr, ti, twr[0], twi[0], h)
    for s in range(1, p):
        if on_d:
            _cg_fwd(dr, di, tr, ti, twr[s], twi[s], h)
        else:
            _cg_fwd(tr, ti, dr, di, twr[s], twi[s], h)
        on_d = not on_d


@njit(cache=True, inline="always", fastmath=True)
def _fft_inv(ar, ai, dr, di, twr, twi, h):
    """2h times the inverse DFT of a (bit-reversed order) into d, natural order; a is overwritten."""
    p = twr.shape[0]
    on_d = False  # where the data are: a, then alternately d and a
    for s in range(p - 1, -1, -1):
        if on_d:
            _cg_inv(dr, di, ar, ai, twr[s], twi[s], h)
        else:
            _cg_inv(ar, ai, dr, di, twr[s], twi[s], h)
        on_d = not on_d
    if not on_d:
        for i in range(2 * h):
            dr[i] = ar[i]
            di[i] = ai[i]


@njit(cache=True, inline="always", fastmath=True)
def _feedback_chunk(hr, hi, w0, ring_r, ring_i, head, hs_r, hs_i, acc_r, acc_i, tr, ti, fr, fi, twr, twi, N):
    """One chunk of the partitioned convolution: the spectrum of the newest window h[w0:w0 + N] into ring
    row ``head``, the partitions times the last Q windows' spectra, the inverse transform into f.

    Inlined with N a constant for the usual sizes: with known trip counts LLVM vectorises the
    loops without run-time alias and remainder paths (the inverse is ~2.5x faster so at N = 128).
    """
    h = N // 2
    q = hs_r.shape[0]
    _fft_fwd(hr, hi, w0, ring_r[head], ring_i[head], tr, ti, twr, twi, h)
    for i in range(N):
        acc_r[i] = 0.0
        acc_i[i] = 0.0
    r = head
    for j in range(q):
        xr, xi, cr, ci = ring_r[r], ring_i[r], hs_r[j], hs_i[j]
        for i in range(N):
            a, b = xr[i], xi[i]
            c, d = cr[i], ci[i]
            acc_r[i] += c * a - d * b
            acc_i[i] += c * b + d * a
        r = r - 1 if r > 0 else q - 1
    _fft_inv(acc_r, acc_i, fr, fi, twr, twi, h)


@njit(cache=True, inline="always", fastmath=True)
def _feedback(hr, hi, w0, ring_r, ring_i, head, hs_r, hs_i, acc_r, acc_i, tr, ti, fr, fi, twr, twi):
    """:func:`_feedback_chunk` with N a constant for N = 32 .. 1024."""
    N = hs_r.shape[1]
    if N == 128:
        _feedback_chunk(hr, hi, w0, ring_r, ring_i, head, hs_r, hs_i, acc_r, acc_i, tr, ti, fr, fi, twr, twi, 128)
    elif N == 256:
        _feedback_chunk(hr, hi, w0, ring_r, ring_i, head, hs_r, hs_i, acc_r, acc_i, tr, ti, fr, fi, twr, twi, 256)
    elif N == 64:
        _feedback_chunk(hr, hi, w0, ring_r, ring_i, head, hs_r, hs_i, acc_r, acc_i, tr, ti, fr, fi, twr, twi, 64)
    elif N == 512:
        _feedback_chunk(hr, hi, w0, ring_r, ring_i, head, hs_r, hs_i, acc_r, acc_i, tr, ti, fr, fi, twr, twi, 512)
    elif N == 32:
        _feedback_chunk(hr, hi, w0, ring_r, ring_i, head, hs_r, hs_i, acc_r, acc_i, tr, ti, fr, fi, twr, twi, 32)
    else:
        _feedback_chunk(hr, hi, w0, ring_r, ring_i, head, hs_r, hs_i, acc_r, acc_i, tr, ti, fr, fi, twr, twi, N)


@njit(cache=True, inline="always", fastmath=True)
def _out_fast(y, t0, t1, fr, fi, fo, kr, ki, g, ku2, p, lo_c, lo_f, lo_o):
    """Samples t0..t1 of the loop's output, in place over its forward signal in ``y``, with the Rapp
    p = 1 or 2 stage and no AM/PM (:func:`_stage`'s arithmetic, branch-free), vectorised; returns
    their summed power.

    The carrier goes on in a second pass. For LLVM to vectorise: few arrays per loop, no min/max,
    and views indexed from 0 (an index that might be negative gets numba's wrap-around test).
    """
    yv = y[t0:t1]
    frv, fiv = fr[t0 + fo:t1 + fo], fi[t0 + fo:t1 + fo]
    for k in range(t1 - t0):
        f_r = np.float64(frv[k])
        f_i = np.float64(fiv[k])
        x = yv[k]
        a = (x.real + (kr * f_r - ki * f_i)) * g
        b = (x.imag + (kr * f_i + ki * f_r)) * g
        u2 = ku2 * (a * a + b * b)
        if p == 2.0:
            # beyond 1e100, 1 + u2^2 is u2^2 in double precision (and u2^2 might overflow): _rapp's value
            gain = 1.0 / math.sqrt(math.sqrt(1.0 + u2 * u2)) if u2 < 1e100 else 1.0 / math.sqrt(u2)
        else:
            gain = 1.0 / math.sqrt(1.0 + u2)
        yv[k] = complex(a * gain, b * gain)
    return _carrier(y, t0, t1, lo_c, lo_f, lo_o)


@njit(cache=True, inline="always", fastmath=True)
def _out_any(y, t0, t1, fr, fi, fo, kfb, g, k_u, p, alpha, beta, lo_c, lo_f, lo_o):
    """Samples t0..t1 of the loop's output (in place) with any Rapp stage (:func:`_stage`, one at a time)."""
    for t in range(t0, t1):
        w = (y[t] + kfb * complex(np.float64(fr[t + fo]), np.float64(fi[t + fo]))) * g
        y[t] = _stage(w, 1.0, k_u, p, alpha, beta)
    return _carrier(y, t0, t1, lo_c, lo_f, lo_o)


@njit(cache=True, inline="always", fastmath=True)
def _carrier(y, t0, t1, lo_c, lo_f, lo_o):
    """Outputs t0..t1 times the carrier (in place); returns their summed power."""
    pw = 0.0
    yv, lv = y[t0:t1], lo_f[t0 + lo_o:t1 + lo_o]
    for k in range(t1 - t0):
        v = yv[k] * (lv[k] * lo_c)
        yv[k] = v
        pw += v.real * v.real + v.imag * v.imag
    return pw


@njit(cache=True, inline="always", fastmath=True)
def _keep(hr, hi, M, pos, y, t0, t1):
    """y[t0:t1] in single precision into the history ring at linear positions pos.. (each sample at
    pos % M and pos % M + M, so every window of up to M samples is contiguous)."""
    t = t0
    while t < t1:
        j = pos & (M - 1)
        m = min(t1 - t, M - j)
        yv = y[t:t + m]
        ar, ai, br, bi = hr[j:j + m], hi[j:j + m], hr[j + M:j + M + m], hi[j + M:j + M + m]
        for k in range(m):
            v = yv[k]
            ar[k] = np.float32(v.real)
            ai[k] = np.float32(v.imag)
            br[k] = np.float32(v.real)
            bi[k] = np.float32(v.imag)
        t += m
        pos += m


@njit("Tuple((complex128[::1], float64, float64))(complex128[::1], complex128[::1], complex128[::1], "
      "complex128[::1], float32[:, ::1], float32[:, ::1], int64, int64, float32[:, ::1], float32[:, ::1], "
      "complex128, int64, boolean, float64, float64, float64, float64, float64, float64, float64, float64, float64)",
      cache=True, nogil=True, fastmath=True, error_model="numpy")
def repeater_loop(y, lo_coarse, lo_fine, yhist, hs_r, hs_i, L, ml, twr, twi, kfb, block,
                  alc, alc_db, det_mw, rated_mw, tau_d, tau_i, k_u, p, alpha, beta):
    """Feedback loop and ALC of the repeater on ``y``, its forward signal before the ALC, replaced
    by the output (in place: the caller hands over an array of its own).

    ``yhist``: the last outputs before this call (loop latency ``ml`` + feedback
    taps - 1 of them; empty without feedback). ``hs_r``, ``hs_i``: (Q, N)
    spectra of the feedback FIR's partitions of ``L`` <= ``ml`` taps, in the
    transforms' bit-reversed order and scaled by 1/N (Q = 0: no feedback);
    ``twr``, ``twi``: :func:`fft_plan` (N). The feedback of each chunk of L
    outputs comes from outputs at least ``ml`` older, i.e. from earlier chunks:
    a uniformly partitioned overlap-save convolution, one forward and one
    inverse transform per chunk, the partitions multiplied against the spectra
    of the last Q windows. The outputs are kept in single precision for it
    (rounding ~-140 dB of the signal, far below the repeater's input noise).
    The ALC gain holds over each block of ``block`` samples and is updated
    after it, from its output power. The carrier (frequency error) of sample t
    is ``lo_coarse[t >> B] * lo_fine[t & (2^B - 1)]``, B = CARRIER_STEP_BITS.
    Returns (y, alc_db, det_mw).
    """
    n = y.size
    q, N = hs_r.shape
    hy = yhist.size
    base = N + hy  # linear history position of output 0 (N zeros, the kept outputs, then these)
    M = 1  # history ring (a power of 2 > base >= ml + N): the last M outputs
    while q > 0 and M <= base:
        M *= 2
    hr = np.zeros(2 * M, dtype=np.float32)  # outputs in single precision, for the transforms
    hi = np.zeros(2 * M, dtype=np.float32)
    if q > 0:
        _keep(hr, hi, M, N, yhist, 0, hy)
    ring_r = np.zeros((max(q, 1), N), dtype=np.float32)  # spectra of the last q windows
    ring_i = np.zeros((max(q, 1), N), dtype=np.float32)
    acc_r = np.empty(N, dtype=np.float32)
    acc_i = np.empty(N, dtype=np.float32)
    tr = np.empty(N, dtype=np.float32)
    ti = np.empty(N, dtype=np.float32)
    fr = np.zeros(max(N, block), dtype=np.float32)  # the current chunk's feedback (zeros without feedback)
    fi = np.zeros(max(N, block), dtype=np.float32)
    head = 0  # ring row of the newest window
    if q > 0:
        # windows of the chunks before this call, oldest first (from the kept outputs)
        for c in range(-(q - 1) * L, 0, L):
            head = (head + 1) % q
            w0 = (base + c - ml + L - N) & (M - 1)
            _fft_fwd(hr, hi, w0, ring_r[head], ring_i[head], tr, ti, twr, twi, N // 2)
    kr, ki = kfb.real, kfb.imag
    ku2 = k_u * k_u
    fast = (p == 2.0 or p == 1.0) and alpha == 0.0
    g_alc = 10.0 ** (alc_db / 20.0) if alc else 1.0
    next_chunk = 0
    fo = 0  # fr index of sample t is t + fo
    block_start = 0
    block_end = min(block, n)
    p_acc = 0.0
    t = 0
    while t < n:
        if q > 0 and t == next_chunk:
            head = (head + 1) % q
            # window of outputs up to t - ml + L - 1 < t
            w0 = (base + t - ml + L - N) & (M - 1)
            _feedback(hr, hi, w0, ring_r, ring_i, head, hs_r, hs_i, acc_r, acc_i, tr, ti, fr, fi, twr, twi)
            fo = N - L - t  # the chunk's L outputs are the last L of the circular convolution
            next_chunk += L
        elif q == 0 and t == block_start:
            fo = -t
        # a segment: within one chunk, one ALC block and one exact carrier phasor
        t1 = min(n, block_end, ((t >> CARRIER_STEP_BITS) + 1) << CARRIER_STEP_BITS)
        if q > 0:
            t1 = min(t1, next_chunk)
        lo_c = lo_coarse[t >> CARRIER_STEP_BITS]
        lo_o = -((t >> CARRIER_STEP_BITS) << CARRIER_STEP_BITS)
        if fast:  # p a constant in each branch
            if p == 2.0:
                pw = _out_fast(y, t, t1, fr, fi, fo, kr, ki, g_alc, ku2, 2.0, lo_c, lo_fine, lo_o)
            else:
                pw = _out_fast(y, t, t1, fr, fi, fo, kr, ki, g_alc, ku2, 1.0, lo_c, lo_fine, lo_o)
        else:
            pw = _out_any(y, t, t1, fr, fi, fo, kfb, g_alc, k_u, p, alpha, beta, lo_c, lo_fine, lo_o)
        if q > 0:
            _keep(hr, hi, M, base + t, y, t, t1)
        p_acc += pw
        t = t1
        if t == block_end:
            if alc:
                m = block_end - block_start
                det_mw += min(1.0, m / tau_d) * (p_acc / m - det_mw)
                err_db = 10.0 * math.log10(max(det_mw, 1e-30) / rated_mw)
                alc_db = min(0.0, alc_db - min(0.5, m / tau_i) * err_db)
                g_alc = 10.0 ** (alc_db / 20.0)
            p_acc = 0.0
            block_start = block_end
            block_end = min(block_start + block, n)
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


@njit("void(complex128[::1], complex64[::1], int64, complex128, boolean)", cache=True, nogil=True)
def add_table_noise(x, table, start, rot, conj):
    """x += the table noise block of :func:`devices.paths.noise_draw` (``table[start:]`` times ``rot``,
    conjugated if ``conj``), in place: the same sums as ``x + complex_noise(...)``."""
    for i in range(x.size):
        nr, ni = _table_noise(table[start + i], rot.real, rot.imag, conj)
        v = x[i]
        x[i] = complex(v.real + nr, v.imag + ni)


@njit(["void(complex128[::1], complex128[::1], complex64[::1], int64, complex128, boolean, boolean)",
       "void(complex128[::1], complex64[::1], complex64[::1], int64, complex128, boolean, boolean)"],
      cache=True, nogil=True)
def table_noise_into(out, x, table, start, rot, conj, noisy):
    """out = x (complex64 widens exactly) + the table noise block of :func:`add_table_noise` when ``noisy``:
    the copy and :func:`add_table_noise` in one pass, the same sums."""
    for i in range(x.size):
        v = x[i]
        vr, vi = np.float64(v.real), np.float64(v.imag)
        if noisy:
            nr, ni = _table_noise(table[start + i], rot.real, rot.imag, conj)
            out[i] = complex(vr + nr, vi + ni)
        else:
            out[i] = complex(vr, vi)


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
