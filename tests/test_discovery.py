"""Board discovery: SoapySDR enumerate, IIO scans, and what is reported when a library is missing."""

from __future__ import annotations

import os
import stat
import sys


from conftest import required

from devices import discovery
from devices.discovery import discover, discover_iio, discover_soapy, parse_iio_info_scan, soapy_uri

try:
    import SoapySDR  # noqa: F401
    _no_soapy = ""
except ImportError as e:
    _no_soapy = f"SoapySDR bindings not importable ({e}); run scripts/system-deps.sh {sys.executable}"

# What libiio 0.24's `iio_info -S usb` prints with a Pluto attached.
PLUTO_SCAN = """\
Library version: 0.24 (git tag: v0.24)
Compiled with backends: local xml ip usb
Available contexts:
\t0: 0456:b673 (Analog Devices Inc. PlutoSDR (ADALM-PLUTO)), serial=1044730a199700191f001800f3bc52f8f8 [usb:1.5.5]
\t1: 0456:b672 (Analog Devices Inc. AD9361 board), serial=0000abcd [usb:1.7.5]
"""


def test_parse_iio_info_scan():
    assert parse_iio_info_scan(PLUTO_SCAN) == {
        "usb:1.5.5": "0456:b673 (Analog Devices Inc. PlutoSDR (ADALM-PLUTO)), "
                     "serial=1044730a199700191f001800f3bc52f8f8",
        "usb:1.7.5": "0456:b672 (Analog Devices Inc. AD9361 board), serial=0000abcd",
    }
    assert parse_iio_info_scan("No IIO context found.\nLibrary version: 0.24\n") == {}


def test_soapy_uri():
    assert soapy_uri({"driver": "uhd", "serial": "31A", "label": "B210 [31A]", "type": "b200"}) \
        == "soapy:driver=uhd,serial=31A"
    assert soapy_uri({"driver": "null", "type": "null"}) == "soapy:driver=null,type=null"


@required(_no_soapy or None)
def test_enumerated_null_device_opens_by_its_uri():
    found = discover_soapy(soapy_args="driver=null,type=null")
    assert [e["uri"] for e in found] == ["soapy:driver=null,type=null"]
    assert found[0]["driver"] == "null"
    from devices.soapy import open_soapy
    uri = found[0]["uri"]
    with open_soapy(uri, uri.split(":", 1)[1]) as r:
        assert r.capabilities.driver == "soapy/null"


def test_missing_soapysdr_is_an_entry_not_an_exception(monkeypatch):
    monkeypatch.setitem(sys.modules, "SoapySDR", None)
    (entry,) = discover_soapy()
    assert entry["source"] == "soapysdr" and "uri" not in entry
    assert "python3-soapysdr" in entry["install"] and "system-deps.sh" in entry["install"]


def test_missing_libiio_is_an_entry(monkeypatch):
    monkeypatch.setitem(sys.modules, "iio", None)
    monkeypatch.setattr(discovery.shutil, "which", lambda name: None)
    (entry,) = discover_iio()
    assert entry["source"] == "iio" and "pylibiio" in entry["error"] and "iio_info" in entry["error"]
    assert "libiio-utils" in entry["install"] and "pylibiio==0.25" in entry["install"]


def _fake_iio_info(tmp_path):
    """An iio_info that finds a Pluto on usb, nothing locally, and fails the ip scan (no avahi)."""
    exe = tmp_path / "iio_info"
    exe.write_text(
        "#!/bin/sh\n"
        'case "$2" in\n'
        f"  usb) cat <<'EOF'\n{PLUTO_SCAN}EOF\n    exit 0;;\n"
        "  ip) echo 'ERROR: Unable to create Avahi DNS-SD client :Daemon not running' >&2\n"
        "      echo 'Scanning for IIO contexts failed: Text file busy (26)' >&2; exit 1;;\n"
        "  *) echo 'No IIO context found.'; exit 1;;\n"
        "esac\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe


def test_iio_info_fallback_per_backend(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "iio", None)
    exe = _fake_iio_info(tmp_path)
    monkeypatch.setattr(discovery.shutil, "which", lambda name: str(exe) if name == "iio_info" else None)
    entries = discover_iio()
    boards = [e for e in entries if "uri" in e]
    assert [(b["uri"], b["driver"], b["serial"]) for b in boards] == [
        ("pluto:usb:1.5.5", "pluto", "1044730a199700191f001800f3bc52f8f8"),
        (None, "iio", "0000abcd")]
    errors = [e["error"] for e in entries if "error" in e]
    assert any("ip scan failed" in e and "Avahi" in e for e in errors)
    assert any("pylibiio not importable" in e for e in errors)


def test_pylibiio_failure_falls_back_to_each_backend(monkeypatch, tmp_path):
    class FakeIio:
        @staticmethod
        def scan_contexts():
            raise OSError(26, "Text file busy")

    monkeypatch.setitem(sys.modules, "iio", FakeIio)
    exe = _fake_iio_info(tmp_path)
    monkeypatch.setattr(discovery.shutil, "which", lambda name: str(exe) if name == "iio_info" else None)
    entries = discover_iio()
    assert [e["uri"] for e in entries if "uri" in e] == ["pluto:usb:1.5.5", None]
    assert not any("pylibiio" in e.get("error", "") for e in entries)


def test_pylibiio_scan_used_when_it_works(monkeypatch):
    class FakeIio:
        @staticmethod
        def scan_contexts():
            return {"ip:192.168.2.1": "PlutoSDR (ADALM-PLUTO) serial=104473"}

    monkeypatch.setitem(sys.modules, "iio", FakeIio)
    (e,) = discover_iio()
    assert (e["uri"], e["iio_uri"], e["via"], e["serial"]) == ("pluto:ip:192.168.2.1", "ip:192.168.2.1",
                                                               "pylibiio", "104473")


def test_quiet_keeps_library_chatter_off_stderr(capfd):
    with discovery._quiet_stderr() as said:
        os.write(2, b"ALSA lib confmisc.c: cannot find card '0'\n")
    assert "cannot find card" in said()
    assert capfd.readouterr().err == ""


def test_discover_on_this_machine_is_well_formed():
    entries = discover()
    for e in entries:
        assert e["source"] in ("soapysdr", "iio")
        assert ("uri" in e) != ("error" in e), e  # a board or a problem, never both
