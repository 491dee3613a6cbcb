"""DUT models' truth() against independent numeric computations.

P1dB: root-finding on the AM/AM curve. IP3: a noiseless two-tone through
process() and an FFT. The analytic truth must agree with both.
"""

import dataclasses
import math

import numpy as np
import pytest
from scipy.optimize import brentq

from devices.sim.dut import DUT_MODELS, RappAmplifier, Thru, register_dut

KT0_DBM_HZ = 10 * math.log10(1.380649e-23 * 290.0 * 1e3)  # -173.98 dBm/Hz

IP3_CASES = [
    dict(gain_db=30.0, saturation_power_dbm=40.0, smoothness=1.0),
    dict(gain_db=20.0, saturation_power_dbm=33.0, smoothness=1.0, am_pm_alpha_deg=8.0, am_pm_beta=0.5),
    dict(gain_db=15.0, saturation_power_dbm=30.0, smoothness=2.0, am_pm_alpha_deg=5.0, am_pm_beta=1.0),
]
P1DB_CASES = IP3_CASES + [
    dict(gain_db=10.0, saturation_power_dbm=20.0, smoothness=3.5),
    dict(gain_db=25.0, saturation_power_dbm=45.0, smoothness=0.5, am_pm_alpha_deg=-3.0),
]


def noiseless(**params) -> RappAmplifier:
    return RappAmplifier(**params, noise_figure_db=None)


def numeric_p1db(gain_curve, r_max: float) -> float:
    """Input amplitude (sqrt(mW)) where the normalised gain |gain_curve(r)| = |A(r)|/(G r) is -1 dB (root-finding)."""
    return brentq(lambda r: 20 * math.log10(abs(gain_curve(r))) + 1.0, 1e-12, r_max, xtol=1e-15, rtol=1e-14)


def rapp_p1db(amp: RappAmplifier) -> tuple[float, float]:
    """(input, output) CW P1dB in dBm of ``amp``, by root-finding on its AM/AM curve."""
    g, a_sat = 10 ** (amp.gain_db / 20), 10 ** (amp.saturation_power_dbm / 20)
    r1 = numeric_p1db(lambda r: amp.am_am(r) / (g * r), 100 * a_sat / g)
    return 20 * math.log10(r1), 20 * math.log10(float(amp.am_am(r1)))


def two_tone(process, tone_in_dbm: float, n: int = 4096, k1: int = 200, k2: int = 210):
    """(output tone dBm, output IM3 dBm) per tone for two equal tones on exact FFT bins."""
    a = math.sqrt(10 ** (tone_in_dbm / 10))
    t = np.arange(n)
    x = a * (np.exp(2j * np.pi * k1 * t / n) + np.exp(2j * np.pi * k2 * t / n))
    spec = np.fft.fft(process(x)) / n
    p = lambda k: 20 * math.log10(abs(spec[k % n]))  # noqa: E731
    tone = (p(k1) + p(k2)) / 2
    im3 = (p(2 * k1 - k2) + p(2 * k2 - k1)) / 2
    return tone, im3


def rapp_process(amp: RappAmplifier):
    rng = np.random.default_rng(0)
    return lambda x: amp.process(x, 2.14e9, 10e6, rng)


@pytest.mark.parametrize("params", P1DB_CASES)
def test_p1db_truth_matches_root_finding(params):
    amp = noiseless(**params)
    p_in, p_out = rapp_p1db(amp)
    truth = amp.truth()
    assert truth["input_p1db_dbm"] == pytest.approx(p_in, abs=1e-6)
    assert truth["output_p1db_dbm"] == pytest.approx(p_out, abs=1e-6)
    assert truth["output_p1db_dbm"] - truth["input_p1db_dbm"] == pytest.approx(amp.gain_db - 1.0, abs=1e-9)


@pytest.mark.parametrize("params", P1DB_CASES)
def test_process_follows_am_am_and_am_pm(params):
    """A CW through process() has the amplitude and phase of the stated Rapp/Saleh formulas."""
    amp = noiseless(**params)
    g, a_sat, p = 10 ** (amp.gain_db / 20), 10 ** (amp.saturation_power_dbm / 20), amp.smoothness
    r = np.geomspace(1e-4, 30, 60) * a_sat / g
    x = r * np.exp(1j * np.linspace(0, 6, r.size))
    y = amp.process(x, 1e9, 1e6, np.random.default_rng(0))
    u = g * r / a_sat
    expect_amp = g * r / (1 + u ** (2 * p)) ** (1 / (2 * p))
    expect_phase = math.radians(amp.am_pm_alpha_deg) * u ** 2 / (1 + amp.am_pm_beta * u ** 2)
    np.testing.assert_allclose(np.abs(y), expect_amp, rtol=1e-12)
    np.testing.assert_allclose(y / np.abs(y), np.exp(1j * expect_phase) * x / np.abs(x), atol=1e-12)
    np.testing.assert_allclose(amp.am_am(r), expect_amp, rtol=1e-12)
    np.testing.assert_allclose(amp.am_pm_rad(r), expect_phase, atol=1e-12)


@pytest.mark.parametrize("params", IP3_CASES)
def test_ip3_truth_matches_two_tone(params):
    amp = noiseless(**params)
    # 40 dB below saturation (input-referred): cubic terms dominate by far
    tone_in = amp.saturation_power_dbm - amp.gain_db - 40.0
    tone, im3 = two_tone(rapp_process(amp), tone_in)
    oip3 = tone + (tone - im3) / 2
    truth = amp.truth()
    assert truth["oip3_dbm"] == pytest.approx(oip3, abs=0.02)
    assert truth["iip3_dbm"] == pytest.approx(oip3 - amp.gain_db, abs=0.02)
    # and IM3 really rises 3 dB per dB there
    tone2, im3_2 = two_tone(rapp_process(amp), tone_in + 5.0)
    assert (im3_2 - im3) / 5.0 == pytest.approx(3.0, abs=0.01)


@pytest.mark.parametrize("p", [1.5, 2.0, 3.0])
def test_no_cubic_term_means_no_intercept(p):
    """Rapp p > 1 without AM/PM has no cubic term: IP3 undefined, IM3 rises 2p+1 dB/dB."""
    amp = noiseless(gain_db=20.0, saturation_power_dbm=30.0, smoothness=p)
    assert amp.truth()["oip3_dbm"] is None and amp.truth()["iip3_dbm"] is None
    lo = amp.saturation_power_dbm - amp.gain_db - 25.0
    _, im3_lo = two_tone(rapp_process(amp), lo)
    _, im3_hi = two_tone(rapp_process(amp), lo + 5.0)
    assert (im3_hi - im3_lo) / 5.0 == pytest.approx(2 * p + 1, abs=0.05)


def test_p1db_is_9p9_db_below_oip3_for_rapp_p1():
    """Numerically: for Rapp p=1 (no AM/PM), OP1dB = OIP3 - 9.88 dB (both figures computed numerically)."""
    amp = noiseless(gain_db=25.0, saturation_power_dbm=37.0, smoothness=1.0)
    _, op1 = rapp_p1db(amp)
    tone, im3 = two_tone(rapp_process(amp), amp.saturation_power_dbm - amp.gain_db - 40.0)
    oip3 = tone + (tone - im3) / 2
    assert op1 - oip3 == pytest.approx(-9.9, abs=0.05)
    # exact: IP1dB/IIP3 = (10^0.1 - 1)/2 -> -8.88 dB, and OP1dB = IP1dB + G - 1
    assert op1 - oip3 == pytest.approx(10 * math.log10((10 ** 0.1 - 1) / 2) - 1.0, abs=0.01)


def test_pure_cubic_p1db_is_9p6_db_below_iip3():
    """For y = x (1 - k|x|^2): IP1dB = IIP3 + 10log10(1 - 10^(-1/20)) = IIP3 - 9.64 dB (input-referred)."""
    k = 0.37  # per mW; any value gives the same relation
    cubic = lambda x: x * (1 - k * np.abs(x) ** 2)  # noqa: E731
    p1_in = 20 * math.log10(numeric_p1db(lambda r: 1 - k * r * r, 1.0 / math.sqrt(k)))
    tone_in = -10 * math.log10(k) - 40.0
    tone, im3 = two_tone(cubic, tone_in)
    iip3 = tone + (tone - im3) / 2  # unity gain
    assert p1_in - iip3 == pytest.approx(-9.64, abs=0.02)


def test_rapp_noise_figure():
    """With no input, the output is the input-referred noise kT0*F*fs amplified by G."""
    amp = RappAmplifier(gain_db=30.0, saturation_power_dbm=40.0, noise_figure_db=5.0)
    fs = 10e6
    y = amp.process(np.zeros(1 << 18, np.complex64), 2e9, fs, np.random.default_rng(1))
    p_out = 10 * math.log10(np.mean(np.abs(y) ** 2))
    assert p_out == pytest.approx(KT0_DBM_HZ + 5.0 + 10 * math.log10(fs) + 30.0, abs=0.05)
    assert amp.truth()["noise_figure_db"] == 5.0


def test_thru_loss_and_delay():
    fs, fc, n = 10e6, 1.9e9, 4096
    rng = np.random.default_rng(3)
    x = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    # whole-sample delay: a shift, the carrier phase rotation and the loss (before the block: zeros)
    thru = Thru(loss_db=6.0, delay_s=3 / fs)
    y = thru.process(x, fc, fs, rng)
    expect = 10 ** (-6 / 20) * np.roll(x, 3) * np.exp(-2j * np.pi * fc * 3 / fs)
    expect[:3] = 0
    # paths filter in single precision (far below a 12-bit radio's floor): 1e-5 still catches any real error
    np.testing.assert_allclose(y, expect, atol=1e-5)
    # fractional delay on a tone: phase -2 pi (fc + f) tau
    tau, k = 12.37e-9, 300
    t = np.arange(n)
    tone = np.exp(2j * np.pi * k * t / n)
    y = Thru(loss_db=1.5, delay_s=tau).process(tone, fc, fs, rng)
    expect = 10 ** (-1.5 / 20) * tone * np.exp(-2j * np.pi * (fc + k * fs / n) * tau)
    # the fractional delay is an FIR reaching 128 samples each way: the block's ends are lead-in and tail
    np.testing.assert_allclose(y[128:-128], expect[128:-128], atol=1e-5)
    assert Thru(loss_db=1.5, delay_s=tau).truth() == {"gain_db": -1.5, "delay_s": tau}


def test_registry():
    assert DUT_MODELS["rapp_amplifier"] is RappAmplifier
    assert DUT_MODELS["thru"] is Thru

    @register_dut("test_gain_block")
    @dataclasses.dataclass
    class GainBlock:
        gain_db: float = 3.0

        def process(self, x, fc_hz, fs_hz, rng):
            return x * 10 ** (self.gain_db / 20)

        def truth(self):
            return {"gain_db": self.gain_db}

    try:
        assert DUT_MODELS["test_gain_block"] is GainBlock
        with pytest.raises(ValueError, match="already registered"):
            register_dut("test_gain_block")(type("Other", (), {}))
    finally:
        DUT_MODELS.pop("test_gain_block")


@pytest.mark.parametrize("bad, match", [
    (dict(smoothness=0.4), "smoothness"),
    (dict(am_pm_beta=-1.0), "am_pm_beta"),
    (dict(noise_figure_db=-1.0), "noise_figure_db"),
    (dict(gain_db=float("nan")), "gain_db"),
])
def test_rapp_validation(bad, match):
    params = dict(gain_db=20.0, saturation_power_dbm=30.0) | bad
    with pytest.raises(ValueError, match=match):
        RappAmplifier(**params)
    with pytest.raises(ValueError, match="loss_db"):
        Thru(loss_db=-1.0)
