"""The emulated Pluto's context against a real one (Pluto Rev.C, AD9363A, firmware v0.32):
every device, channel and attribute the emulator has exists there under the same
name and sysfs file name, and what a Pluto reports at power-on is what the emulator reports."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path as FsPath

import pytest

from devices.sim import Attenuator, Path, SimBench, SimConfig, Thru
from devices.sim.pluto_emulator import PlutoEmulator

REAL = FsPath("/work/shared/pluto-rev-c-ad9363a-fw-v0.32.xml")
pytestmark = pytest.mark.skipif(not REAL.exists(), reason=f"{REAL} (a real Pluto's context) not here")

#: power-on values that depend on the unit, its firmware or the RF environment
UNIT_SPECIFIC = {"hw_serial", "fw_version", "local,kernel", "uri", "ip,ip-addr", "xo_correction",
                 "ad9361-phy,xo_correction", "xo_correction_available", "rssi", "input", "raw", "rx_path_rates",
                 "tx_path_rates", "hardwaregain", "fastlock_save", "fastlock_recall"}


def emulator() -> PlutoEmulator:
    bench = SimBench(SimConfig(seed=1), Path([Attenuator(10)]), Thru(loss_db=5), Path([Attenuator(20)]))
    return PlutoEmulator(bench)


def real_context():
    root = ET.parse(REAL).getroot()
    devs = {}
    for d in root.findall("device"):
        chans = {}
        for c in d.findall("channel"):
            chans[(c.get("id"), c.get("type") == "output")] = {
                "name": c.get("name"),
                "attrs": {a.get("name"): (a.get("filename"), a.get("value")) for a in c.findall("attribute")},
                "scan": None if c.find("scan-element") is None else c.find("scan-element").get("format")}
        devs[d.get("name")] = {
            "id": d.get("id"), "channels": chans,
            "attrs": {a.get("name"): a.get("value") for a in d.findall("attribute")},
            "debug": {a.get("name") for a in d.findall("debug-attribute")},
            "buffer": {a.get("name") for a in d.findall("buffer-attribute")}}
    return devs, {a.get("name"): a.get("value") for a in root.findall("context-attribute")}


def test_names_and_filenames_match_a_real_pluto():
    emu = emulator()
    real, _ = real_context()
    problems = []
    for dev in emu.context.devices:
        r = real.get(dev.name)
        if r is None:
            problems.append(f"device {dev.name} not on a Pluto")
            continue
        if dev.id != r["id"]:
            problems.append(f"{dev.name} is {dev.id}, a Pluto's is {r['id']}")
        for c in dev.channels:
            rc = r["channels"].get((c.id, c.output))
            if rc is None:
                problems.append(f"{dev.name} channel {c.id} ({'out' if c.output else 'in'}) not on a Pluto")
                continue
            if c.name != rc["name"]:
                problems.append(f"{dev.name} {c.id}: name {c.name!r}, a Pluto's {rc['name']!r}")
            if (c.scan.format if c.scan else None) != rc["scan"]:
                problems.append(f"{dev.name} {c.id}: scan format {c.scan and c.scan.format}, a Pluto's {rc['scan']}")
            for a in c.attrs.values():
                ra = rc["attrs"].get(a.name)
                if ra is None:
                    problems.append(f"{dev.name} {c.id} attribute {a.name} not on a Pluto")
                elif a.filename != ra[0]:
                    problems.append(f"{dev.name} {c.id} {a.name}: file {a.filename}, a Pluto's {ra[0]}")
        for kind, mine, theirs in (("attribute", dev.attrs, r["attrs"]), ("debug attribute", dev.debug_attrs, r["debug"]),
                                   ("buffer attribute", dev.buffer_attrs, r["buffer"])):
            for name in mine:
                if name not in theirs:
                    problems.append(f"{dev.name} {kind} {name} not on a Pluto")
    assert not problems, "\n".join(problems)


def test_power_on_state_is_a_plutos():
    emu = emulator()
    real, ctx = real_context()
    problems = []
    with emu.lock:
        for dev in emu.context.devices:
            r = real[dev.name]
            for c in dev.channels:
                rc = r["channels"][(c.id, c.output)]
                for a in c.attrs.values():
                    want = rc["attrs"][a.name][1]
                    if a.name in UNIT_SPECIFIC or want == "ERROR":
                        continue
                    got = a.read()
                    if got != want:
                        problems.append(f"{dev.name} {c.id} {a.name}: {got!r}, a Pluto's {want!r}")
            for name, a in dev.attrs.items():
                want = r["attrs"][name]
                if name in UNIT_SPECIFIC or want == "ERROR":
                    continue
                if a.read() != want:
                    problems.append(f"{dev.name} {name}: {a.read()!r}, a Pluto's {want!r}")
        for key in ("hw_model", "hw_model_variant", "ad9361-phy,model"):
            if emu.context.attrs.get(key) != ctx[key]:
                problems.append(f"context {key}: {emu.context.attrs.get(key)!r}, a Pluto's {ctx[key]!r}")
        # the clock chain a Pluto reports at 30.72 MS/s (its BBPLL differs by its 40 MHz XO's correction)
        assert emu.path_rates(False).split()[1:] == real["ad9361-phy"]["attrs"]["rx_path_rates"].split()[1:]
        assert emu.path_rates(True).split()[1:] == real["ad9361-phy"]["attrs"]["tx_path_rates"].split()[1:]
    assert not problems, "\n".join(problems)


def test_sensors_read_the_bench():
    emu = emulator()
    with emu.lock:
        phy = next(d for d in emu.context.devices if d.name == "ad9361-phy")
        xadc = next(d for d in emu.context.devices if d.name == "xadc")
        temp = phy.find_channel("temp0", False).attrs["input"].read()
        t = xadc.find_channel("temp0", False).attrs
        xadc_mc = (int(t["raw"].read()) + int(t["offset"].read())) * float(t["scale"].read())
    assert int(temp) == 35000 and abs(xadc_mc - 35000) < 130
    emu.bench.temperature_c = 48.5  # a bench stating its temperature
    with emu.lock:
        assert int(phy.find_channel("temp0", False).attrs["input"].read()) == 48500
