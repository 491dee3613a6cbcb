"""Boards emulated on a simulated bench, opened through their own drivers (``open_radio("sim:", emulate=...)``).

The emulator serves the bench over the board's own protocol on a free port
of 127.0.0.1, and the board's real driver is opened at it, so its whole
stack (pyadi-iio, libiio, IIOD) runs on simulated RF. The radio returned
stops the server when it closes, and switches the bench's DUT bypass.
"""

from __future__ import annotations

from devices.pluto import PlutoRadio
from devices.radio import DeviceError, Radio
from devices.sim import pluto_emulator
from devices.sim.bench import SimBench

#: the boards the sim: driver can emulate (its ``emulate`` option)
BOARDS = ("pluto",)


class EmulatedPlutoRadio(PlutoRadio):
    """The ``pluto:`` driver on an emulated PlutoSDR serving ``bench``; closing it stops the server."""

    def __init__(self, bench: SimBench):
        self.bench = bench
        # a bench with something on its second receiver is a Pluto in 2r2t mode (fw_setenv mode 2r2t)
        mode = "2r2t" if getattr(bench, "reference_path", None) is not None else "1r1t"
        self._server, port = pluto_emulator.serve(bench, port=0, mode=mode)
        try:
            super().__init__(f"pluto:ip:127.0.0.1:{port}", f"ip:127.0.0.1:{port}")
        except BaseException:
            self._server.stop()
            raise

    def set_dut_bypass(self, on: bool) -> None:
        self.bench.bypass_dut = bool(on)

    def _close(self) -> None:
        try:
            super()._close()
        finally:
            self._server.stop()


def open_emulated(uri: str, board: str, bench: SimBench) -> Radio:
    """Serve ``bench`` as an emulated ``board`` and open that board's driver at it (``uri``: the sim: URI asked)."""
    if board not in BOARDS:
        raise DeviceError(f"{uri}: cannot emulate {board!r}; known: {', '.join(BOARDS)}")
    return EmulatedPlutoRadio(bench)
