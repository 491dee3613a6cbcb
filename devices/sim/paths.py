"""The RF path elements of the simulated bench: they live in :mod:`devices.paths` (harness uses them too)."""

from devices.paths import (K_BOLTZMANN, KT0_DBM_HZ, PATH_ELEMENTS, T0_K, Amplifier, Attenuator, Cable, LinearElement,
                           Path, complex_noise, delay_response, rapp_gain, rapp_saturation_from_p1db, thermal_noise_mw,
                           unit_phasor)

__all__ = [
    "K_BOLTZMANN", "KT0_DBM_HZ", "PATH_ELEMENTS", "T0_K", "Amplifier", "Attenuator", "Cable", "LinearElement", "Path",
    "complex_noise", "delay_response", "rapp_gain", "rapp_saturation_from_p1db", "thermal_noise_mw", "unit_phasor",
]
