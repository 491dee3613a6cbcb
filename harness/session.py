"""What every run shares, whatever it runs (a plan, a calibration): exit codes, the interruption that
ends it, the signal handling that raises that interruption, and the software version it records.

``EXIT_*``: 0 all PASS, 1 any FAIL, 2 plan, rig or set-up error (nothing transmitted), 3 any ERROR,
lost device, unwritable results or interrupted, 4 INCONCLUSIVE, 5 internal error of the harness
(see :mod:`harness.runner`).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from harness import __version__

EXIT_PASS, EXIT_FAIL, EXIT_CONFIG, EXIT_ERROR, EXIT_INCONCLUSIVE, EXIT_INTERNAL = 0, 1, 2, 3, 4, 5

#: what each exit code of ``harness run`` means (its --help prints these)
EXIT_MEANINGS: tuple[tuple[int, str], ...] = (
    (EXIT_PASS, "PASS: every step passed"),
    (EXIT_FAIL, "FAIL: at least one step failed (and none errored); a DUT failed, nothing else"),
    (EXIT_CONFIG, "plan, rig or set-up error: malformed plan or rig, device cannot be opened or cannot do what "
                  "the plan asks, run directory or results history unusable; nothing was transmitted"),
    (EXIT_ERROR, "ERROR: a step raised, the device was lost, samples were lost after every retry, the results "
                 "or the results history could not be written; interrupted → 3 (Ctrl-C, SIGTERM, at any moment)"),
    (EXIT_INCONCLUSIVE, "INCONCLUSIVE: no FAIL or ERROR, but the rig's own floor is too close to a limit to "
                        "trust a verdict"),
    (EXIT_INTERNAL, "internal error of the harness: one line on the console, the traceback in the run's run.log "
                    "(or a harness-crash-*.log in the temporary folder)"),
)


def exit_codes_help() -> str:
    """The exit codes as lines for a --help text."""
    import textwrap

    return "exit codes:\n" + "\n".join(textwrap.fill(text, 78, initial_indent=f"  {code}  ", subsequent_indent="     ")
                                        for code, text in EXIT_MEANINGS)


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


_state = {"depth": 0, "raised": None}


@contextmanager
def signals_raise():
    """Turn SIGTERM and SIGINT into :class:`Interrupted` so every exit path stops the transmitter.

    Only the first signal raises: a second Ctrl-C (or a SIGTERM after it)
    while the run is already stopping is noted, not raised, so the clean-up
    that stops the transmitter and writes the results is not cut short. The
    CLI wraps whole commands in it, so a signal before the first step ends
    the run the same way (exit 3, never the shell's 130 or 143).
    """

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if _state["raised"] is not None:
            sys.stderr.write(f"harness: {name} again: already stopping after {_state['raised']}, please wait\n")
            return
        _state["raised"] = name
        raise Interrupted(name)

    old = {}
    if _state["depth"] == 0:
        _state["raised"] = None
    _state["depth"] += 1
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                old[sig] = signal.signal(sig, handler)
            except ValueError:  # not in the main thread
                pass
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
        _state["depth"] -= 1
