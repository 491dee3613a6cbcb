"""``--rig zmq://HOST:PORT``: the rig a rig server serves, built from its description.

The server describes its rig file's declared part (ports, paths, nominal levels, limits, DUT bypass, power
meter) and its bench's calibration table in ``hello``, never the simulated bench (its physics, its physical
paths, the DUT model, a simulated sensor's true error). A client given the URI builds the rig a client file
copying the served rig's declared part would give, and a plan run so gives the verdicts and values of the
same plan on the server's rig file locally. An unreachable server, or one too old to describe its rig, is
refused with exit 2 naming the URI, before anything transmits.
"""

from __future__ import annotations

import json

import pytest
import yaml

import harness.remote.server as server_mod
from devices.zmq import describe_server
from harness.calibration import CalibrationError, load_calibration
from harness.cli import main
from harness.config import ConfigError
from harness.remote.keys import new_key_pair
from harness.remote.server import Security
from harness.rig import Rig, load_rig, load_served_rig
from tests.conftest import RIGS, read_results, write_plan, write_rig
from tests.remote_helpers import REPO, client_rig, free_port, serve, serve_process, stop

PLAN = "testplans/amplifier_characterization.yaml"
RIG = RIGS / "sim-amplifier.yaml"


@pytest.fixture
def server():
    s = serve(RIG, seed=0)
    yield s
    stop(s)


def _uri(server) -> str:
    return f"zmq://127.0.0.1:{server.port}?insecure=1"


def _measurements(results: dict) -> list[tuple]:
    return [(m["name"], m["value"], m.get("uncertainty")) for s in results["steps"] for m in s["measurements"]]


def test_plan_with_rig_uri_equals_local(tmp_path, server):
    """The plan on the server's rig file locally and through the remote radio of --rig zmq://: the same
    verdicts, and values within their uncertainty (the same seeded bench, the same calibration table)."""
    local, remote = tmp_path / "local", tmp_path / "remote"
    assert main(["run", PLAN, "--rig", str(RIG), "--out", str(local), "--seed", "0", "--quiet",
                 "--no-history"]) == 0
    assert main(["run", PLAN, "--rig", _uri(server), "--out", str(remote), "--seed", "0", "--quiet",
                 "--no-history"]) == 0
    a, b = read_results(local), read_results(remote)
    assert b["rig"]["device"] == _uri(server) and b["rig"]["name"] == "sim-amplifier"
    # the bench's table, served: the same table the local run read from the file
    assert a["calibration"]["applied"] and b["calibration"]["applied"]
    assert b["calibration"]["created_at"] == a["calibration"]["created_at"]
    assert b["calibration"]["file"].startswith(f"zmq://127.0.0.1:{server.port} ")
    assert [s["verdict"] for s in a["steps"]] == [s["verdict"] for s in b["steps"]]
    ma, mb = _measurements(a), _measurements(b)
    assert len(ma) == len(mb) > 0
    for (na, va, ua), (nb, vb, _) in zip(ma, mb):
        assert na == nb
        assert vb == pytest.approx(va, abs=max(1e-9, ua or 0))
    assert not server.radio.transmitting and server.holder is None  # TX off, control released


def test_rig_from_uri_is_the_client_file_rig(tmp_path, server):
    """What --rig zmq:// builds is what a client file copying the served rig's declared part builds: the
    same ports, paths, nominal levels, limits, bypass and declared hash, the bench's set-up hash, and the
    bench's table as served (the file's own contents)."""
    served = load_served_rig(_uri(server))
    copied = load_rig(client_rig(tmp_path, RIG, _uri(server)))
    own = load_rig(RIG)
    for name in ("tx", "rx", "tx_to_dut", "dut_to_rx", "reference_path", "limits", "dut_bypass", "device",
                 "declared_sha256"):
        assert getattr(served, name) == getattr(copied, name), name
    assert served.calibration.tx_full_scale_dbm == 5 and served.calibration.rx_full_scale_dbm == -10
    assert served.calibration.frequencies_hz == [1.8e9, 2.7e9] and served.calibration.levels_dbm == [-40, 20]
    assert served.setup_sha256 == own.setup_sha256 and served.declared_sha256 == own.declared_sha256
    assert served.served and served.calibration_file is None and not served.simulated
    assert served.dut is None and served.sim is None and served.sim_tx_to_dut is None
    # the sensor's kind and stated figures cross, not its true error (the simulated bench's)
    assert (served.power_meter.kind, served.power_meter.uncertainty_db, served.power_meter.error_db) == \
        ("sim", 0.1, 0.0)
    table = load_calibration(own.calibration_file)
    assert served.served_calibration.to_dict() == table.to_dict()


def _keys_anywhere(node) -> set[str]:
    if isinstance(node, dict):
        return set(node) | set().union(*(_keys_anywhere(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(set(), *(_keys_anywhere(v) for v in node))
    return set()


def test_description_carries_no_simulated_physics(server):
    """hello and status describe the declared rig file only: exactly the file's sections less the simulated
    bench (sim, dut, emulate), the device URI, the server's table path and the sensor's true error."""
    truth = yaml.safe_load(RIG.read_text())
    assert {"sim", "dut"} <= set(truth) and "error_db" in truth["power_meter"]  # the file has them to hide
    expected = {k: v for k, v in truth.items() if k not in ("sim", "dut", "emulate", "device")}
    expected["calibration"] = {k: v for k, v in expected["calibration"].items() if k != "file"}
    expected["power_meter"] = {k: v for k, v in expected["power_meter"].items() if k != "error_db"}
    hello = describe_server(_uri(server))
    rig = hello["rig"]
    assert rig["declared"] == expected
    status = server._describe()
    assert status["declared"] == expected and "calibration" not in status  # the table crosses in hello only
    text = json.dumps(rig)
    keys = _keys_anywhere(rig)
    assert not {"sim", "dut", "emulate", "error_db", "model"} & keys
    assert not [k for k in keys if k.startswith("sim_")]
    assert truth["dut"]["model"] not in text  # rapp_amplifier
    for element in truth["sim"]["paths"]["dut_to_rx"]:  # the physical pads: 40.3 dB, 5.9 dB
        assert element not in rig["declared"]["paths"]["dut_to_rx"]
    # bounded: the whole hello, table included, is far below the caps
    assert len(json.dumps(hello)) < server_mod.MAX_SERVED_CALIBRATION_BYTES
    assert not server.radio.transmitting and server.holder is None  # describing took no control


def test_unreachable_server_refused_naming_the_uri(tmp_path, capsys):
    uri = f"zmq://127.0.0.1:{free_port()}?insecure=1&timeout=0.2"
    code = main(["run", PLAN, "--rig", uri, "--out", str(tmp_path / "run"), "--quiet", "--no-history"])
    assert code == 2
    err = capsys.readouterr().err
    assert uri in err and "no answer from the rig server to hello" in err and "nothing was run" in err
    assert main(["rig", "show", uri]) == 2
    assert uri in capsys.readouterr().err
    bad = "zmq://127.0.0.1?insecure=1"  # no port
    assert main(["run", PLAN, "--rig", bad, "--out", str(tmp_path / "run2"), "--quiet", "--no-history"]) == 2
    assert "no port" in capsys.readouterr().err


def test_older_server_without_description_refused(tmp_path, server, monkeypatch, capsys):
    """A server from before the description (hello's rig without ``declared``): exit 2, nothing transmitted,
    no control taken, and the client is told to give a rig file instead."""
    old = server_mod.RigServer._describe

    def older(self, full=False):
        return {k: v for k, v in old(self, full).items() if k not in ("declared", "calibration", "calibration_status")}

    monkeypatch.setattr(server_mod.RigServer, "_describe", older)
    code = main(["run", PLAN, "--rig", _uri(server), "--out", str(tmp_path / "run"), "--quiet", "--no-history"])
    assert code == 2
    err = capsys.readouterr().err
    assert _uri(server) in err and "cannot describe its rig" in err and "give a rig file" in err
    assert f"harness {server.software}" in err
    assert not server.radio.transmitting and server.holder is None and server.counters["refusals_logged"] == 0
    # a client file whose device is the server still works with that server
    assert main(["run", PLAN, "--rig", str(client_rig(tmp_path, RIG, _uri(server))), "--out", str(tmp_path / "f"),
                 "--seed", "0", "--quiet", "--no-history"]) == 0


def test_server_serving_another_rig_at_open_refused(server):
    """The rig was described by a server that serves another rig by the time the radio opens: refused before
    anything transmits, naming the URI."""
    spec = load_served_rig(_uri(server))
    spec.declared_sha256 = load_rig(RIGS / "sim-repeater-utra.yaml").declared_sha256
    with pytest.raises(ConfigError, match=r"zmq://127\.0\.0\.1:\d+\?insecure=1: the rig server now serves another "
                                          r"rig than the 'sim-amplifier' it described"):
        Rig.open(spec)
    assert not server.radio.transmitting and server.holder is None  # the radio was closed, control released


def test_description_damaged_in_transit_refused(server, monkeypatch):
    """A description whose declared part does not hash to the declared_sha256 sent with it is refused."""
    old = server_mod.RigServer._describe

    def edited(self, full=False):
        d = old(self, full)
        d["declared"] = {**d["declared"], "paths": {**d["declared"]["paths"], "dut_to_rx": []}}
        return d

    monkeypatch.setattr(server_mod.RigServer, "_describe", edited)
    with pytest.raises(ConfigError, match="does not hash to the set-up it declares"):
        load_served_rig(_uri(server))


def test_served_rig_without_table_nominal_on_a_simulated_bench_refused_on_a_real_one(tmp_path, server,
                                                                                     monkeypatch, capsys):
    """No table on the server: a simulated bench runs on the nominal paths, saying why; a real bench is refused
    (unless --uncalibrated). The calibrate command keeps the bench's table on the server unless --out names
    one of the client's own."""
    monkeypatch.setattr(server, "_table", (None, "no calibration file (x.cal.json)"))
    spec = load_served_rig(_uri(server))
    assert spec.served_calibration is None
    with Rig.open(spec) as rig:
        assert rig.calibration is None
        assert rig.calibration_status == {"applied": False, "reason": "no calibration file (x.cal.json): nominal paths"}
    old = server_mod.RigServer._describe
    monkeypatch.setattr(server_mod.RigServer, "_describe", lambda self, full=False: {**old(self, full),
                                                                                      "simulated": False})
    with pytest.raises(CalibrationError, match=r"is not calibrated \(no calibration file \(x.cal.json\)\)"):
        Rig.open(spec)
    spec.uncalibrated = True
    with Rig.open(spec) as rig:
        assert rig.calibration is None
    assert not server.radio.transmitting and server.holder is None
    assert main(["calibrate", "--rig", _uri(server)]) == 2
    assert "calibrate it on the server" in capsys.readouterr().err


def test_rig_uri_over_curve(tmp_path, capsys):
    """With CURVE keys in the URI the description is read as any client's; an unknown key gets no answer and
    a clear refusal naming the URI."""
    d, allow = tmp_path / "keys", tmp_path / "allow"
    allow.mkdir()
    for name in ("server", "alice", "mallory"):
        new_key_pair(d, name)
    (allow / "alice.key").write_text((d / "alice.key").read_text())
    s = serve(RIG, security=Security(server_secret=str(d / "server.key_secret"), allow_dir=str(allow)))
    try:
        base = f"zmq://127.0.0.1:{s.port}?server_key={d / 'server.key'}&timeout=0.3"
        spec = load_served_rig(f"{base}&client_key={d / 'alice.key_secret'}")
        assert spec.name == "sim-amplifier" and spec.served_calibration is not None
        uri = f"{base}&client_key={d / 'mallory.key_secret'}"
        assert main(["rig", "show", uri]) == 2
        err = capsys.readouterr().err
        assert uri in err and "no answer from the rig server to hello" in err
    finally:
        stop(s)


def test_reference_channel_delay_with_rig_uri_over_curve_equals_local(tmp_path):
    """The reference-channel bench served by a `harness serve` process with CURVE: the served description
    carries rx.reference_channel and paths.reference, and the delay steps through --rig zmq:// give the
    local run's method, captures and figures, and the DUT's true delay within the uncertainty."""
    base = "sim-repeater-utra-reference.yaml"
    served = write_rig(tmp_path, base, name="served.yaml",
                       limits={"tx_bands": [{"low": "2.1 GHz", "high": "2.2 GHz"}]},
                       calibration={"file": str(RIGS / base.replace(".yaml", ".cal.json"))})
    plan = yaml.safe_load((REPO / "testplans" / "repeater_utra_ts25143.yaml").read_text())
    plan["steps"] = [s for s in plan["steps"] if s["measurement"] == "delay"]
    plan.pop("rig", None)
    plan_file = write_plan(tmp_path, yaml.safe_dump(plan, sort_keys=False))
    d, allow = tmp_path / "keys", tmp_path / "allow"
    allow.mkdir()
    for name in ("server", "alice"):
        new_key_pair(d, name)
    (allow / "alice.key").write_text((d / "alice.key").read_text())
    local, remote = tmp_path / "local", tmp_path / "remote"
    assert main(["run", str(plan_file), "--rig", str(served), "--out", str(local), "--seed", "0", "--quiet",
                 "--no-history"]) == 0
    proc, port = serve_process(served, "--key", str(d / "server.key_secret"), "--allow", str(allow), "--seed", "0",
                               lease_s=5.0)
    try:
        uri = f"zmq://127.0.0.1:{port}?server_key={d / 'server.key'}&client_key={d / 'alice.key_secret'}"
        spec = load_served_rig(uri)
        own = load_rig(served)
        assert spec.rx.reference_channel == own.rx.reference_channel == 1
        assert spec.reference_path == own.reference_path and spec.sim_reference_path is None
        assert main(["run", str(plan_file), "--rig", uri, "--out", str(remote), "--seed", "0", "--quiet",
                     "--no-history"]) == 0
    finally:
        proc.terminate()
        proc.wait(10)
    a, b = read_results(local), read_results(remote)
    assert [s["verdict"] for s in a["steps"]] == [s["verdict"] for s in b["steps"]] == ["PASS", "PASS"]
    assert [s["info"]["method"] for s in b["steps"]] == ["reference_channel"] * 2
    for sa, sb in zip(a["steps"], b["steps"]):
        assert [(c["label"], c["rx_channel"], c["rx_gain_db"]) for c in sb["captures"]] == \
               [(c["label"], c["rx_channel"], c["rx_gain_db"]) for c in sa["captures"]]
        assert [(m["name"], m["value"], m["uncertainty"]) for m in sb["measurements"]] == \
               [(m["name"], m["value"], m["uncertainty"]) for m in sa["measurements"]]
    delay = b["steps"][1]["measurements"][0]
    truth = load_rig(RIGS / base).dut.truth(2140.1e6, 30.72e6)["delay_s"]
    assert abs(delay["value"] - truth) <= 1.5 * delay["uncertainty"]


def _plan_naming(tmp_path, rig: str, name: str = "plan.yaml"):
    """The shipped amplifier plan with its own ``rig:`` replaced (its other lines as they are)."""
    data = yaml.safe_load((REPO / PLAN).read_text())
    data["rig"] = rig
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def test_plan_rig_uri_is_loaded_as_rig_arg(tmp_path, server, capsys):
    """A plan's own ``rig: zmq://HOST:PORT?...`` gives the run ``--rig`` gives with the same URI: the rig the
    server describes, its table, the same verdicts and values within their uncertainty (each run against a
    server freshly started on the same seeded bench)."""
    plan = _plan_naming(tmp_path, _uri(server))
    by_plan, by_arg = tmp_path / "by-plan", tmp_path / "by-arg"
    assert main(["run", str(plan), "--out", str(by_plan), "--seed", "0", "--quiet", "--no-history"]) == 0
    other = serve(RIG, seed=0)
    try:
        assert main(["run", str(plan), "--rig", _uri(other), "--out", str(by_arg), "--seed", "0", "--quiet",
                     "--no-history"]) == 0
        assert other.counters["control_messages"] > 0
    finally:
        stop(other)
    a, b = read_results(by_plan), read_results(by_arg)
    assert a["rig"]["device"] == a["rig"]["file"] == _uri(server) and b["rig"]["device"] == _uri(other)
    assert {**a["rig"], "device": "", "file": ""} == {**b["rig"], "device": "", "file": ""}
    assert a["calibration"]["applied"] and a["calibration"]["created_at"] == b["calibration"]["created_at"]
    assert a["calibration"]["file"].startswith(f"zmq://127.0.0.1:{server.port} ")
    assert [s["verdict"] for s in a["steps"]] == [s["verdict"] for s in b["steps"]] == ["PASS"] * len(a["steps"])
    for (na, va, ua), (nb, vb, _) in zip(_measurements(a), _measurements(b)):
        assert na == nb and vb == pytest.approx(va, abs=max(1e-9, ua or 0))
    assert not server.radio.transmitting and server.holder is None


def test_plan_rig_uri_refusals(tmp_path, capsys):
    """A malformed server URI in a plan is refused at validation naming the plan's file and line; an
    unreachable one as --rig refuses it, naming the URI; both exit 2 before anything transmits."""
    bad = _plan_naming(tmp_path, "zmq://127.0.0.1?insecure=1", "bad.yaml")  # no port
    line = next(i for i, t in enumerate(bad.read_text().splitlines(), 1) if t.startswith("rig:"))
    assert main(["run", str(bad), "--out", str(tmp_path / "r1"), "--quiet", "--no-history"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:{line}: plan: rig: " in err and "no port" in err
    uri = f"zmq://127.0.0.1:{free_port()}?insecure=1&timeout=0.2"
    gone = _plan_naming(tmp_path, uri, "gone.yaml")
    assert main(["run", str(gone), "--out", str(tmp_path / "r2"), "--quiet", "--no-history"]) == 2
    err = capsys.readouterr().err
    assert uri in err and "no answer from the rig server to hello" in err and "nothing was run" in err
