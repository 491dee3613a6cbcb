"""Find the SDR boards attached to this machine.

:func:`discover` asks SoapySDR (``SoapySDR.Device.enumerate()``: USRP via
SoapyUHD, LimeSDR, bladeRF, HackRF, RTL-SDR, ...) and libiio (PlutoSDR and
other IIO boards: pylibiio's ``iio.scan_contexts()``, else ``iio_info -S``).
A missing library gives an entry saying what to install instead of an error.

Entries (dicts):

* a board: ``{"source": "soapysdr"|"iio", "uri": harness URI or None,
  "driver", "label", "serial", "args"/"iio_uri"}``;
* a problem: ``{"source", "error": what went wrong, "install": how to fix}``
  (``"uri"`` is absent).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile

SOAPY_INSTALL = ("apt-get install -y --no-install-recommends python3-soapysdr soapysdr-module-all, "
                 f"then scripts/system-deps.sh {sys.executable}")
IIO_INSTALL = ("apt-get install -y --no-install-recommends libiio0 libiio-utils, and pip install "
               "pylibiio==0.25 (matches libiio 0.24)")
IIO_BACKENDS = ("local", "usb", "ip")


@contextlib.contextmanager
def _quiet_stderr(enabled: bool = True):
    """Silence file descriptor 2 (vendor libraries print straight to it).

    Yields a function returning what was written there (also after the block).
    Process-wide while it lasts: keep the block short.
    """
    text = [""]
    if not enabled:
        yield lambda: text[0]
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        def said() -> str:
            if not tmp.closed:
                tmp.seek(0)
                text[0] = tmp.read().decode(errors="replace")
            return text[0]
        os.dup2(tmp.fileno(), 2)
        try:
            yield said
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            said()


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _log_lines(text: str) -> list[str]:
    seen: list[str] = []
    for line in _ANSI.sub("", text).splitlines():
        line = line.strip()
        if line and line not in seen:
            seen.append(line)
    return seen


def soapy_uri(args: dict[str, str]) -> str:
    """Harness URI of an enumerated SoapySDR device: driver and serial when known, else all args."""
    if "serial" in args and "driver" in args:
        keep = {"driver": args["driver"], "serial": args["serial"]}
    else:
        keep = {k: v for k, v in args.items() if k != "label" and "," not in v}
    return "soapy:" + ",".join(f"{k}={v}" for k, v in keep.items())


def discover_soapy(quiet: bool = True, soapy_args: str = "") -> list[dict]:
    """Boards SoapySDR enumerates (``soapy_args`` filters, e.g. ``"driver=uhd"``)."""
    try:
        import SoapySDR  # noqa: PLC0415 - optional system package
    except ImportError as e:
        return [{"source": "soapysdr", "error": f"SoapySDR Python bindings missing ({e})",
                 "install": SOAPY_INSTALL}]
    with _quiet_stderr(quiet) as said:
        try:
            found = SoapySDR.Device.enumerate(soapy_args)
        except Exception as e:  # noqa: BLE001 - a broken module must not hide the others
            return [{"source": "soapysdr", "error": f"SoapySDR enumerate failed: {e}",
                     "install": SOAPY_INSTALL, "log": _log_lines(said())}]
    out = []
    for kw in found:
        args = {str(k): str(v) for k, v in dict(kw).items()}
        out.append({"source": "soapysdr", "uri": soapy_uri(args), "driver": args.get("driver", ""),
                    "label": args.get("label", ""), "serial": args.get("serial", ""), "args": args})
    return out


def iio_harness_uri(iio_uri: str, description: str) -> str | None:
    """``pluto:<iio uri>`` for an ADALM-PLUTO, None for IIO boards no driver claims."""
    return f"pluto:{iio_uri}" if re.search(r"pluto", description, re.I) else None


_SCAN_LINE = re.compile(r"^\s*\d+:\s*(?P<desc>.*?)\s*\[(?P<uri>[^\]]+)\]\s*$")


def parse_iio_info_scan(text: str) -> dict[str, str]:
    """``iio_info -S`` output -> ``{iio_uri: description}``.

    Context lines look like ``0: 0456:b673 (Analog Devices Inc. PlutoSDR
    (ADALM-PLUTO)), serial=1044... [usb:1.5.5]``.
    """
    out = {}
    for line in text.splitlines():
        m = _SCAN_LINE.match(line)
        if m:
            out[m.group("uri")] = m.group("desc")
    return out


def _iio_entries(contexts: dict[str, str], how: str) -> list[dict]:
    out = []
    for uri, desc in contexts.items():
        serial = re.search(r"serial=(\w+)", desc)
        out.append({"source": "iio", "uri": iio_harness_uri(uri, desc), "iio_uri": uri,
                    "driver": "pluto" if iio_harness_uri(uri, desc) else "iio", "label": desc,
                    "serial": serial.group(1) if serial else "", "via": how})
    return out


def _scan_iio_info(exe: str, backend: str) -> tuple[dict[str, str], str | None]:
    """One backend with ``iio_info -S``; (contexts, error or None)."""
    try:
        p = subprocess.run([exe, "-S", backend], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return {}, f"iio_info -S {backend} timed out"
    text = p.stdout + p.stderr
    found = parse_iio_info_scan(text)
    if found or "No IIO context found" in text or p.returncode == 0:
        return found, None
    err = next((ln.strip() for ln in text.splitlines() if "fail" in ln.lower() or "error" in ln.lower()),
               f"exit status {p.returncode}")
    return {}, err


def discover_iio(quiet: bool = True) -> list[dict]:
    """IIO contexts (PlutoSDR, ...) from pylibiio, else from ``iio_info -S``.

    A failing backend (``ip`` needs the avahi daemon) gives an error entry and
    the other backends are still scanned.
    """
    py_problem = scan_error = None
    try:
        import iio  # noqa: PLC0415 - pylibiio, optional
    except (ImportError, OSError) as e:  # OSError: pylibiio present but libiio0 missing
        iio = None
        py_problem = f"pylibiio not importable ({e})"
    if iio is not None:
        with _quiet_stderr(quiet):
            try:
                return _iio_entries(iio.scan_contexts(), "pylibiio")
            except OSError as e:
                # One scan covers all backends, so one failing (no avahi for "ip") fails all:
                # scan each backend with iio_info, which reports the failing one.
                scan_error = f"iio.scan_contexts() failed ({e})"
    exe = shutil.which("iio_info")
    if exe is None:
        return [{"source": "iio", "install": IIO_INSTALL, "error": "no IIO scanner: " + "; ".join(
            x for x in (py_problem or scan_error, "iio_info (libiio-utils) not on PATH") if x)}]
    problems: list[dict] = []
    found: dict[str, str] = {}
    for backend in IIO_BACKENDS:
        ctx, err = _scan_iio_info(exe, backend)
        found.update(ctx)
        if err:
            problems.append({"source": "iio", "error": f"IIO {backend} scan failed: {err}",
                             "install": "start avahi-daemon for network discovery, or name the board by "
                                        "address (pluto:ip:192.168.2.1)" if backend == "ip" else IIO_INSTALL})
    if py_problem:
        problems.append({"source": "iio", "error": py_problem + "; used iio_info", "install": IIO_INSTALL})
    return _iio_entries(found, "iio_info") + problems


def discover(quiet: bool = True) -> list[dict]:
    """All boards SoapySDR and libiio find, plus entries for missing libraries or failed scans.

    ``quiet`` keeps vendor libraries' console chatter (UHD, ALSA, avahi) off stderr.
    """
    return discover_soapy(quiet) + discover_iio(quiet)
