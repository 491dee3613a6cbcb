"""What every run shares, whatever it runs (a plan, a calibration): exit codes, the interruption that
ends it, the signal handling that raises that interruption, and the software version it records.

``EXIT_*``: 0 all PASS, 1 any FAIL, 2 plan or rig error (nothing transmitted), 3 any ERROR or
interrupted, 4 INCONCLUSIVE (see :mod:`harness.runner`).
"""

from __future__ import annotations

import signal
import subprocess
from contextlib import contextmanager
from pathlib import Path

from harness import __version__

EXIT_PASS, EXIT_FAIL, EXIT_CONFIG, EXIT_ERROR, EXIT_INCONCLUSIVE = 0, 1, 2, 3, 4


class Interrupted(BaseException):
    """SIGTERM/SIGINT during a run (a BaseException so steps cannot swallow it)."""


def software_version() -> str:
    """Package version plus the git commit when run from a checkout."""
    here = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(here), "describe", "--always", "--dirty"], capture_output=True,
                             text=True, timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            return f"{__version__}+{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    return __version__


@contextmanager
def signals_raise():
    """Turn SIGTERM (and SIGINT) into :class:`Interrupted` so every exit path stops the transmitter."""

    def handler(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    old = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            old[sig] = signal.signal(sig, handler)
        except ValueError:  # not in the main thread
            pass
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
