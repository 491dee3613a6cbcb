"""Models of devices under test for the simulated rig.

A DUT model is one dataclass of its parameters, registered with
:func:`register_dut`, with

* ``process(x, fc_hz, fs_hz, rng) -> y``: complex baseband in sqrt(mW) at RF
  centre ``fc_hz``, same length out as in. A model with memory may keep state
  between calls (consecutive calls are consecutive blocks of the simulation,
  possibly with gaps between them);
* ``truth() -> dict``: the model's own true figures, derived analytically
  (never by running the harness' measurements); None where undefined;
* optionally ``delay_s``: its group delay, so the bench feeds enough lead-in
  samples for frequency-domain processing;
* optionally ``settle_s``: the length of its memory (filters, loops), when it
  exceeds ``delay_s``: the bench's lead-in covers it;
* optionally ``takes_complex64 = True``: ``process`` widens complex64 input
  exactly itself (the bench then hands over a path FIR's single-precision
  output as it is; otherwise it gets complex128).
* optionally ``takes_path_after = True``: ``process(x, fc_hz, fs_hz, rng,
  after=path)`` returns ``path.apply(<its output>, fc_hz, fs_hz, rng,
  single=True)``, computed as it likes (the repeater runs the RX path's FIR
  beside its sequential loop).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from devices.paths import Attenuator, rapp_block, rapp_gain, thermal_noise_mw

DUT_MODELS: dict[str, type] = {}


def register_dut(name: str):
    """Class decorator: make a DUT model available to rigs as ``model: <name>``."""

    def deco(cls):
        if name in DUT_MODELS and DUT_MODELS[name] is not cls:
            raise ValueError(f"DUT model {name!r} is already registered")
        DUT_MODELS[name] = cls
        cls.model_name = name
        return cls

    return deco


def _finite(name: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


@register_dut("rapp_amplifier")
@dataclass
class RappAmplifier:
    """Memoryless solid-state power amplifier: Rapp AM/AM, Saleh-type AM/PM, thermal noise.

    With r = |x| (sqrt(mW)), G = 10^(gain_db/20), A_sat = sqrt(P_sat in mW) and
    the normalised drive u = G r / A_sat:

    * AM/AM  A(r) = G r / (1 + u^(2p))^(1/(2p));
    * AM/PM  phi(r) = alpha u^2 / (1 + beta u^2);
    * input-referred thermal noise kT0*F over fs is added before the gain.

    Truth. CW 1 dB compression where (1 + u^(2p))^(-1/(2p)) = 10^(-1/20), i.e.
    u1 = (10^(p/10) - 1)^(1/(2p)); the output there is A_sat u1 10^(-1/20).
    Third-order intercept: expand the complex gain g(r)/G = 1 + k_c r^2 + ...
    For two tones of amplitude a each, y = G x (1 + k_c |x|^2) gives each
    output tone G a (1 + 3 k_c a^2) and each IM3 product G |k_c| a^3; they
    meet at a^2 = 1/|k_c|, so IIP3 (per tone) = 1/|k_c| mW. The Rapp term
    (1 + u^(2p))^(-1/(2p)) = 1 - u^(2p)/(2p) + ... is cubic only for p = 1
    (k = -G^2 / (2 A_sat^2)); AM/PM adds j alpha (G/A_sat)^2. For p < 1 the
    r^(2p) term dominates at small signal (IM3 rises 2p+1 dB/dB, not 3), and
    when k_c = 0 there is no cubic term: the intercept is then None.
    """

    gain_db: float = field(metadata={"doc": "small-signal gain"})
    saturation_power_dbm: float = field(metadata={"doc": "CW output saturation power"})
    smoothness: float = field(default=1.0, metadata={"doc": "Rapp p (>= 0.5); larger is harder limiting"})
    am_pm_alpha_deg: float = field(default=0.0, metadata={"doc": "AM/PM alpha: phase at u=1 for beta=0"})
    am_pm_beta: float = field(default=0.0, metadata={"doc": "AM/PM beta (>= 0)"})
    noise_figure_db: float | None = field(default=5.0, metadata={"doc": "noise figure (None: noiseless)"})

    delay_s = 0.0

    def __post_init__(self):
        for name in ("gain_db", "saturation_power_dbm", "smoothness", "am_pm_alpha_deg", "am_pm_beta"):
            _finite(f"rapp_amplifier {name}", getattr(self, name))
        _finite("rapp_amplifier noise_figure_db", self.noise_figure_db, allow_none=True)
        if not 0.5 <= self.smoothness <= 100:
            raise ValueError(f"rapp_amplifier smoothness (Rapp p) must be in 0.5..100, got {self.smoothness}")
        if self.am_pm_beta < 0:
            raise ValueError(f"rapp_amplifier am_pm_beta must be >= 0, got {self.am_pm_beta}")
        if self.noise_figure_db is not None and self.noise_figure_db < 0:
            raise ValueError(f"rapp_amplifier noise_figure_db must be >= 0, got {self.noise_figure_db}")

    # ----- the model ----------------------------------------------------------
    @property
    def _g(self) -> float:
        return 10 ** (self.gain_db / 20)

    @property
    def _a_sat(self) -> float:
        return 10 ** (self.saturation_power_dbm / 20)

    def _u(self, r):
        return self._g * np.asarray(r, dtype=np.float64) / self._a_sat

    def am_am(self, r):
        """Output amplitude (sqrt(mW)) for input amplitude ``r`` (sqrt(mW))."""
        r = np.asarray(r, dtype=np.float64)
        return self._g * r * rapp_gain(self._u(r), self.smoothness)

    def am_pm_rad(self, r):
        """Output phase shift (rad) for input amplitude ``r`` (sqrt(mW))."""
        u2 = self._u(r) ** 2
        return math.radians(self.am_pm_alpha_deg) * u2 / (1 + self.am_pm_beta * u2)

    #: process() takes complex64 input as it is (widened exactly in the compiled pass)
    takes_complex64 = True

    def process(self, x: np.ndarray, fc_hz: float, fs_hz: float, rng: np.random.Generator) -> np.ndarray:
        noise_mw = None if self.noise_figure_db is None else thermal_noise_mw(self.noise_figure_db, fs_hz)
        # compiled, noise added in the same pass: G rapp(u) exp(j phi(u)) per sample, as am_am() and am_pm_rad()
        return rapp_block(x, rng, noise_mw, self._g, self._g / self._a_sat, float(self.smoothness),
                          math.radians(self.am_pm_alpha_deg), float(self.am_pm_beta))

    # ----- truth --------------------------------------------------------------
    def cubic_coefficient(self) -> complex:
        """k_c in g(r)/G = 1 + k_c r^2 + ... (per mW); 0 when there is no cubic term."""
        scale = (self._g / self._a_sat) ** 2
        k = 1j * math.radians(self.am_pm_alpha_deg) * scale
        if self.smoothness == 1.0:
            k += -0.5 * scale
        return complex(k)

    def truth(self) -> dict[str, float | None]:
        p = self.smoothness
        op1 = self.saturation_power_dbm + 20 * math.log10((10 ** (p / 10) - 1) ** (1 / (2 * p))) - 1.0
        k = abs(self.cubic_coefficient())
        if k == 0.0 or p < 1.0:
            iip3 = oip3 = None
        else:
            iip3 = 10 * math.log10(1.0 / k)
            oip3 = iip3 + self.gain_db
        return {
            "gain_db": float(self.gain_db),
            "saturation_power_dbm": float(self.saturation_power_dbm),
            "output_p1db_dbm": op1,
            "input_p1db_dbm": op1 - self.gain_db + 1.0,
            "oip3_dbm": oip3,
            "iip3_dbm": iip3,
            "noise_figure_db": None if self.noise_figure_db is None else float(self.noise_figure_db),
            "delay_s": 0.0,
        }


@register_dut("thru")
@dataclass
class Thru:
    """A through connection (what a calibration puts in place of the DUT): flat loss and delay."""

    loss_db: float = field(default=0.0, metadata={"doc": "insertion loss"})
    delay_s: float = field(default=0.0, metadata={"doc": "group delay"})

    def __post_init__(self):
        # Attenuator validates the figures and does the (fractional-delay) physics.
        self._element = Attenuator(self.loss_db, self.delay_s)

    def process(self, x: np.ndarray, fc_hz: float, fs_hz: float, rng: np.random.Generator) -> np.ndarray:
        return self._element.apply(x, fc_hz, fs_hz, rng)

    def truth(self) -> dict[str, float | None]:
        return {"gain_db": -float(self.loss_db), "delay_s": float(self.delay_s)}
