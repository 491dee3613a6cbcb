"""The amplifier plan through the emulated PlutoSDR (pluto: driver, pyadi-iio, IIOD) vs the direct simulation."""

from __future__ import annotations

import socket

import pytest

from conftest import PLANS, RIGS, read_results, values_by_name

import adi  # noqa: E402,F401 - a project dependency: missing, the module must fail, not skip

from harness.cli import main  # noqa: E402
from harness.rig import load_rig  # noqa: E402

PLAN = PLANS / "amplifier_characterization.yaml"


def test_emulated_pluto_gives_the_direct_simulation_verdicts_and_values(tmp_path):
    assert main(["run", str(PLAN), "--rig", str(RIGS / "pluto-emulated.yaml"), "--out", str(tmp_path / "pluto"),
                 "--quiet"]) == 0
    assert main(["run", str(PLAN), "--rig", str(RIGS / "sim-amplifier.yaml"), "--out", str(tmp_path / "sim"),
                 "--quiet"]) == 0
    pluto, sim = read_results(tmp_path / "pluto"), read_results(tmp_path / "sim")
    assert pluto["rig"]["device"] == "pluto:"
    assert [s["verdict"] for s in pluto["steps"]] == [s["verdict"] for s in sim["steps"]] == ["PASS"] * 3
    truth = load_rig(RIGS / "pluto-emulated.yaml").dut.truth()
    vp, vs = values_by_name(pluto), values_by_name(sim)
    for v in (vp, vs):  # both within the accuracy bounds of the model truth
        assert v["Small-signal gain"]["gain_db"] == pytest.approx(truth["gain_db"], abs=0.05)
        assert v["1 dB compression point"]["output_p1db_dbm"] == pytest.approx(truth["output_p1db_dbm"], abs=0.2)
        assert v["Two-tone third-order intercept"]["oip3_dbm"] == pytest.approx(truth["oip3_dbm"], abs=0.5)


def test_emulator_is_stopped_after_the_run(tmp_path, monkeypatch):
    import devices.sim.pluto_emulator as emu

    ports = []
    real_serve = emu.serve

    def serve(bench, port=0, **kw):
        server, p = real_serve(bench, port, **kw)
        ports.append(p)
        return server, p

    monkeypatch.setattr(emu, "serve", serve)
    assert main(["run", str(PLAN), "--rig", str(RIGS / "pluto-emulated.yaml"), "--out", str(tmp_path / "r"),
                 "--quiet"]) == 0
    assert ports
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", ports[0]), timeout=1).close()
