"""Radio devices: the radio interface, drivers chosen by URI scheme, the simulator.

``devices`` knows nothing of plans or measurements; ``harness`` uses it.
"""

from devices.radio import (Capabilities, Capture, CaptureMeta, CapabilityError, Deadlines, DeviceError, DeviceGone,
                           DeviceLost, DeviceTimeout, Radio, Range, StreamConfig, stop_all_transmitters)
from devices.registry import (UnknownDeviceError, driver_option_types, known_schemes, open_radio, register_driver,
                              split_uri)

__all__ = [
    "Capabilities", "Capture", "CaptureMeta", "CapabilityError", "Deadlines", "DeviceError", "DeviceGone", "DeviceLost",
    "DeviceTimeout", "Radio", "Range",
    "StreamConfig", "UnknownDeviceError", "driver_option_types", "known_schemes", "open_radio", "register_driver",
    "split_uri", "stop_all_transmitters",
]
