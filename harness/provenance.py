"""Which unit, who, where, with what: the identity a run records beyond its plan and rig.

The DUT serial, operator and station come from the command line, else the
environment (``HARNESS_DUT_SERIAL``, ``HARNESS_OPERATOR``, ``HARNESS_STATION``,
for CI), else the plan's ``dut:`` section (serial only). The software versions
and the host are read once per process; a library that is absent is recorded
as null with the reason.
"""

from __future__ import annotations

import functools
import os
import platform
import socket
import sys
from dataclasses import dataclass
from importlib import metadata

ENV = {"dut_serial": "HARNESS_DUT_SERIAL", "operator": "HARNESS_OPERATOR", "station": "HARNESS_STATION"}
#: longest identity value kept (a serial is a label, not a document)
MAX_LEN = 100


@dataclass(frozen=True)
class RunIdentity:
    """Overrides of the plan's identity fields; None: not given (the plan's value stands)."""

    dut_serial: str | None = None
    operator: str | None = None
    station: str | None = None
    #: where each given value came from: "--dut-serial" or "HARNESS_DUT_SERIAL"
    sources: tuple[tuple[str, str], ...] = ()

    @classmethod
    def resolve(cls, flags: dict[str, str | None], env: dict[str, str] | None = None) -> "RunIdentity":
        """Flags first, then the environment. Values are stripped; an empty one counts as not given.
        Raises ValueError for a value with control characters or longer than :data:`MAX_LEN`."""
        env = os.environ if env is None else env
        vals, sources = {}, []
        for key, var in ENV.items():
            flag = "--" + key.replace("_", "-")
            for value, source in ((flags.get(key), flag), (env.get(var), var)):
                value = (value or "").strip()
                if value:
                    if len(value) > MAX_LEN or any(ord(c) < 32 or ord(c) == 127 for c in value):
                        raise ValueError(f"{source}: {value[:40]!r}: at most {MAX_LEN} printable characters")
                    vals[key] = value
                    sources.append((key, source))
                    break
        return cls(**vals, sources=tuple(sources))

    def source(self, key: str) -> str | None:
        return dict(self.sources).get(key)


def dut_record(plan_dut, identity: RunIdentity | None) -> dict:
    """The results' ``dut`` section: the plan's fields with the serial overridden where given."""
    identity = identity or RunIdentity()
    serial = identity.dut_serial or plan_dut.serial
    return {"type": plan_dut.type, "model": plan_dut.model, "serial": serial,
            "serial_source": identity.source("dut_serial") or ("plan" if plan_dut.serial else None)}


#: distributions whose version a run records, and how to name them
_DISTS = {"numpy": "numpy", "scipy": "scipy", "pyadi-iio": "pyadi-iio", "pylibiio": "pylibiio"}


def _libiio() -> tuple[str | None, str | None]:
    try:
        import iio  # pylibiio: loads the C library
    except ImportError as e:
        return None, f"pylibiio not installed ({e})"
    except OSError as e:
        return None, f"libiio not loadable ({e})"
    v = getattr(iio, "version", None)
    if not v:
        return None, "libiio reports no version"
    return ".".join(str(x) for x in v[:2]) + (f" ({v[2]})" if len(v) > 2 and v[2] else ""), None


def _soapysdr() -> tuple[str | None, str | None]:
    try:
        import SoapySDR
    except ImportError as e:
        return None, f"SoapySDR Python bindings not installed ({e})"
    except OSError as e:
        return None, f"SoapySDR library not loadable ({e})"
    try:
        return str(SoapySDR.getLibVersion()), None
    except Exception as e:  # noqa: BLE001 - an odd binding is an absent version, not a failed run
        return None, f"SoapySDR.getLibVersion failed: {e}"


@functools.lru_cache(maxsize=1)
def software_versions() -> tuple[dict, dict]:
    """({name: version or None}, {name: why absent}) for Python and the libraries the radios rest on."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    absent: dict[str, str] = {}
    for name, dist in _DISTS.items():
        try:
            versions[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[name] = None
            absent[name] = f"distribution {dist!r} not installed"
    for name, probe in (("libiio", _libiio), ("SoapySDR", _soapysdr)):
        versions[name], why = probe()
        if why:
            absent[name] = why
    return versions, absent


@functools.lru_cache(maxsize=1)
def host_info() -> dict:
    return {"hostname": socket.gethostname(), "platform": platform.platform(), "machine": platform.machine(),
            "python_executable": sys.executable}
