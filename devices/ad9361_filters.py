"""The AD9361/AD9363/AD9364 analog baseband filters, as the transceiver's Linux driver tunes them.

Each I and Q branch has a 3rd-order Butterworth low-pass after the mixer
(RX) or before it (TX). The driver (``ad9361.c``) tunes its -3 dB corner
from the RF bandwidth attribute: the baseband bandwidth is half of it,
clamped (RX 0.2-28 MHz, TX 0.625-20 MHz), and the corner is set to
1.4x (RX) or 1.6x (TX) that baseband bandwidth. So a 56 MHz RX setting has
its corner at 39.2 MHz and droops 0.54 dB at +-28 MHz: the skirt starts well
inside the RF bandwidth, and what lies near its edge reads low.

Checked against ADI's driver (``ad9361_rx_bb_analog_filter_calib`` /
``ad9361_tx_bb_analog_filter_calib``: clamps 200 kHz-28 MHz and
625 kHz-20 MHz, tune targets "1.4 * BBBW" and "1.6 * BBBW"). Not modelled:
the TX secondary single-pole filter the driver sets at 2.5x the baseband
bandwidth (``ad9361_tx_bb_second_filter_calib``); it would add up to
0.5 dB of droop at the edge of the TX flat span stated here.

``FLAT_DB`` defines the usable (flat) part of the band: where the filter's
droop stays within 0.1 dB. :func:`flat_fraction` is that edge as a
fraction of the RF bandwidth's half-width; the radio's capabilities state it
so validation refuses an analysis reading beyond it (a neighbour channel read
through the skirt would look cleaner than it is).

Used by the simulated bench (its physics) and by the ``pluto:`` driver (the
capabilities of a real board with this transceiver); no I/O here.
"""

from __future__ import annotations

import math

import numpy as np

#: Butterworth order of the baseband low-pass (both directions)
ORDER = 3
#: corner / baseband bandwidth, as the driver calibrates it
RX_CORNER_RATIO = 1.4
TX_CORNER_RATIO = 1.6
#: baseband bandwidth clamps of the driver (Hz)
RX_BB_RANGE_HZ = (0.2e6, 28e6)
TX_BB_RANGE_HZ = (0.625e6, 20e6)
#: the usable band: the filter droops at most this much (dB) inside it
FLAT_DB = 0.1


def corner_hz(rf_bandwidth_hz: float, tx: bool) -> float:
    """-3 dB corner (Hz) of the baseband low-pass for an RF bandwidth setting."""
    lo, hi = TX_BB_RANGE_HZ if tx else RX_BB_RANGE_HZ
    bb = min(max(rf_bandwidth_hz / 2, lo), hi)
    return (TX_CORNER_RATIO if tx else RX_CORNER_RATIO) * bb


def flat_edge_ratio(droop_db: float = FLAT_DB, order: int = ORDER) -> float:
    """f / corner where a Butterworth of ``order`` droops ``droop_db``: |H|^2 = 1 / (1 + (f/fc)^(2n))."""
    return (10 ** (droop_db / 10) - 1) ** (1 / (2 * order))


def flat_fraction(tx: bool) -> float:
    """The flat edge as a fraction of half the RF bandwidth (within the driver's clamps)."""
    return flat_edge_ratio() * (TX_CORNER_RATIO if tx else RX_CORNER_RATIO)


def response(f_hz: np.ndarray, corner: float, remove_bulk_delay: bool = True) -> np.ndarray:
    """Complex response of the 3rd-order Butterworth low-pass at baseband frequencies ``f_hz``.

    H(s) = 1 / ((s + 1)(s^2 + s + 1)), s = j f / corner. The same real filter
    on I and Q acts on the complex signal as H at +f and -f. With
    ``remove_bulk_delay`` its DC group delay (2 / (2 pi corner)) is taken out:
    a fixed latency of the radio, which timestamps and thru measurements
    absorb; the dispersion (group-delay variation) and the skirt remain.
    """
    s = 1j * np.asarray(f_hz, dtype=np.float64) / corner
    h = 1.0 / ((s + 1.0) * (s * s + s + 1.0))
    if remove_bulk_delay:
        h = h * np.exp(1j * 2.0 * np.asarray(f_hz, dtype=np.float64) / corner)  # exp(+j w tau0), tau0 = 2/wc
    return h


def attenuation_db(f_hz, corner: float) -> np.ndarray:
    """Attenuation (dB, positive) of the low-pass at baseband frequencies ``f_hz``."""
    return 10 * np.log10(1 + (np.abs(np.asarray(f_hz, dtype=np.float64)) / corner) ** (2 * ORDER))


def settle_samples(corner: float, fs_hz: float) -> int:
    """Samples the impulse response needs on each side (bulk delay removed) to fall below -100 dB."""
    # the slowest pole (the real one, and the complex pair's envelope) decays as exp(-wc t / 2) at worst
    return int(math.ceil(2 * 23.0 / (2 * math.pi * corner) * fs_hz)) + 1
