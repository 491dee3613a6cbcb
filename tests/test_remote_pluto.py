"""Delay through the emulated Pluto's two-receiver (2r2t) rig, served by a rig server on loopback.

The served rig is the shipped ``pluto-emulated-repeater-utra``: a ``pluto:`` driver (pyadi-iio,
``rx_enabled_channels=[0, 1]``) against an emulated Pluto in 2r2t mode, with a splitter at the DUT input onto
its second receiver. A Pluto has no hardware time, so the UTRA repeater plan's delay steps (thru floor, then
the delay) are timed by the reference channel, both receivers captured at once next to the radio:

* **remote radio** (``zmq://``): the plan runs on the client, each pair of captures crosses the link
  (``capture_channels``, one stream per receiver);
* **remote run** (``harness run --remote`` against ``harness serve`` in a process of its own): the plan runs on
  the server.

Either way the delay is the model's truth (the repeater's group delay at the plan's LO) within the rule of the
local emulated-Pluto test (``test_delay_methods``): one run within 1.5 x its stated k = 2 uncertainty, which
stays below 10 ns.
"""

from __future__ import annotations

import yaml

from harness.cli import main
from harness.rig import load_rig
from tests.conftest import RIGS, read_results, write_plan, write_rig
from tests.remote_helpers import REPO, client_rig, serve, serve_process, stop

BASE = "pluto-emulated-repeater-utra.yaml"
LO_HZ, RATE = 2140.1e6, 30.72e6  # the plan's delay steps


def _served(tmp_path):
    return write_rig(tmp_path, BASE, name="served.yaml",
                     limits={"tx_bands": [{"low": "2.1 GHz", "high": "2.2 GHz"}]},
                     calibration={"file": str(RIGS / BASE.replace(".yaml", ".cal.json"))})


def _delay_plan(tmp_path):
    plan = yaml.safe_load((REPO / "testplans" / "repeater_utra_ts25143.yaml").read_text())
    plan["steps"] = [s for s in plan["steps"] if s["measurement"] == "delay"]
    plan.pop("rig", None)
    return write_plan(tmp_path, yaml.safe_dump(plan, sort_keys=False))


def _check_delay(res: dict, capsys, how: str) -> None:
    assert [s["verdict"] for s in res["steps"]] == ["PASS", "PASS"]
    assert [s["info"]["method"] for s in res["steps"]] == ["reference_channel"] * 2
    assert [s["info"]["reference_channel"] for s in res["steps"]] == [1, 1]
    for s in res["steps"]:  # each step's pair: the DUT output on RX0, the DUT input (splitter) on RX1
        assert [(c["label"], c["rx_channel"]) for c in s["captures"]] == [("capture", 0), ("capture.reference", 1)]
        assert all(c["dropped_samples"] == 0 for c in s["captures"])
    delay = res["steps"][1]["measurements"][0]
    truth = load_rig(RIGS / BASE).dut.truth(LO_HZ, RATE)["delay_s"]
    err, u = delay["value"] - truth, delay["uncertainty"]
    with capsys.disabled():
        print(f"\nemulated Pluto 2r2t, {how}: delay {delay['value'] * 1e9:.3f} ns, truth {truth * 1e9:.3f} ns, "
              f"error {err * 1e9:+.3f} ns, U {u * 1e9:.2f} ns (thru {delay['floor'] * 1e9:+.3f} ns)")
    assert abs(err) <= 1.5 * u and u < 10e-9


def test_pluto_2r2t_delay_through_a_remote_radio(tmp_path, capsys):
    served, plan = _served(tmp_path), _delay_plan(tmp_path)
    server = serve(served, seed=0)
    try:
        assert server.radio.capabilities.driver == "pluto" and server.radio.capabilities.rx_channels == 2
        rig = client_rig(tmp_path, served, f"zmq://127.0.0.1:{server.port}?insecure=1")
        out = tmp_path / "remote"
        assert main(["run", str(plan), "--rig", str(rig), "--out", str(out), "--seed", "0", "--quiet",
                     "--no-history"]) == 0
        # every timed pair was taken by the server's pluto driver in one call (retakes included)
        assert server.counters["channel_captures"] >= 2
        assert not server.radio.transmitting
    finally:
        stop(server)
    res = read_results(out)
    assert res["rig"]["device"].startswith("zmq://") and res["calibration"]["applied"]
    _check_delay(res, capsys, "remote radio (zmq://)")


def test_pluto_2r2t_delay_in_a_remote_run(tmp_path, capsys):
    served, plan = _served(tmp_path), _delay_plan(tmp_path)
    p, port = serve_process(served, "--insecure", lease_s=5.0)
    try:
        out = tmp_path / "run"
        assert main(["run", str(plan), "--remote", f"zmq://127.0.0.1:{port}", "--insecure", "--out", str(out),
                     "--seed", "0", "--quiet", "--no-history"]) == 0
    finally:
        p.terminate()
        p.wait(30)
    res = read_results(out)
    assert res["rig"]["name"] == "pluto-emulated-repeater-utra" and res["rig"]["device"] == "pluto:"
    # where it ran, said in the run directory even when the run is kept out of the history
    assert res["remote"]["server"] == f"zmq://127.0.0.1:{port}" and res["remote"]["rig"] == res["rig"]["name"]
    assert res["remote"]["run"] == 1  # the server's first run
    assert res["calibration"]["applied"]
    _check_delay(res, capsys, "remote run (--remote)")
