"""Measurement DSP: pure functions on numpy arrays.

Conventions: complex baseband ``x`` is in sqrt(mW) at the measurement plane,
so ``10*log10(mean(|x|**2))`` is the power in dBm into 50 ohm; ``fs_hz`` is
the sample rate; frequencies are baseband offsets in Hz from the centre
frequency. Each function returns numbers (with units in their names) and,
in its result, the arrays behind them; nothing here builds plots
(:mod:`harness.figures` draws results).
"""
