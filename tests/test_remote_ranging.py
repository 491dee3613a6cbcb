"""Settling and auto-ranging run on the rig server: only the final captures cross the link.

The link is measured outside the harness, by TCP proxies counting the bytes on both channels; the same step
against a server that does not offer ``capture_ranged`` (an older one: the client falls back to ordinary
captures) shows what the link carried before, with exactly the same figures (the same seeded bench, the
same captures in the same order)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import yaml

import harness.remote.server as server_mod
from devices import StreamConfig, open_radio
from devices.radio import LevelSummary
from devices.zmq import RemoteError
from devices.ranging import AutoRange
from harness.cli import main
from harness.rig import Rig, load_rig
from tests.conftest import RIGS, read_results, write_plan, write_rig
from tests.remote_helpers import REPO, client_rig, end_process, proxied, serve, stop

RATE = 30.72e6
SETTLE_S = 10e-3  # the output_power step's ALC settle, before each of its two captures
PLAN = f"""name: ranging-over-the-link
dut:
  type: repeater
  model: SIM-REP-UTRA-B1
  serial: SN-U-0001
  gain_db: 80
  max_output_power_dbm: 37
rig: {RIGS / "sim-repeater-utra.yaml"}
defaults:
  frequency: 2140.1 MHz
  sample_rate: 30.72 MHz
steps:
  - name: Maximum output power (ALC)
    measurement: output_power
    stimulus: {{type: wcdma, power: -43 dBm, n_dpch: 64}}
    overdrive: 10 dB
    alc_settle: {SETTLE_S * 1e3:g} ms
    limits:
      output_power: {{min: 35 dBm, max: 39 dBm}}
      overdrive_output_power: {{min: 35 dBm, max: 39 dBm}}
"""


def _server_rig(tmp_path):
    """The shipped repeater bench with its table, allowing transmission in its band (a server's interlock)."""
    return write_rig(tmp_path, "sim-repeater-utra.yaml", name="served.yaml",
                     limits={"tx_bands": [{"low": "2.1 GHz", "high": "2.2 GHz"}]},
                     calibration={"file": str(RIGS / "sim-repeater-utra.cal.json")})


def _run(tmp_path, name: str, features: tuple[str, ...], monkeypatch):
    monkeypatch.setattr(server_mod, "FEATURES", features)
    served = _server_rig(tmp_path)
    server = serve(served, seed=0)
    try:
        uri, ctrl, data = proxied(server)
        rig = client_rig(tmp_path, served, uri, name=f"{name}.yaml")
        out = tmp_path / name
        code = main(["run", str(write_plan(tmp_path, PLAN)), "--rig", str(rig), "--out", str(out), "--seed", "0",
                     "--quiet"])
        # control replies and data credits are small; requests carry the waveform's one upload
        return code, read_results(out), data.down, ctrl.down + data.up, dict(server.counters)
    finally:
        stop(server)


def test_only_final_captures_cross_the_link(tmp_path, monkeypatch):
    code, res, down, other, counters = _run(tmp_path, "new", ("remote_run", "capture_ranged"), monkeypatch)
    old_code, old_res, old_down, _, old_counters = _run(tmp_path, "old", ("remote_run",), monkeypatch)
    assert code == old_code == 0
    step, old_step = res["steps"][0], old_res["steps"][0]
    assert step["verdict"] == old_step["verdict"] == "PASS"
    # the same captures, settles and trials in the same order on the same seeded bench: the same figures
    assert [m["value"] for m in step["measurements"]] == [m["value"] for m in old_step["measurements"]]
    assert [c["rx_gain_db"] for c in step["captures"]] == [c["rx_gain_db"] for c in old_step["captures"]]

    final = sum(c["n_samples"] for c in step["captures"])  # the records: what must cross (cf32, 8 bytes each)
    assert final == 2 * 131072
    settle = 2 * round(SETTLE_S * RATE)
    # the server took the settles and every trial, and discarded all but the final captures
    assert counters["ranged_samples_taken"] >= final + settle
    assert counters["ranged_samples_discarded"] == counters["ranged_samples_taken"] - final
    assert old_counters.get("ranged_captures", 0) == 0  # the older server was asked for ordinary captures only
    # the link: the final captures' bytes, plus frame headers and framing (< 1 %), nothing else
    assert 8 * final <= down <= 1.01 * 8 * final + 4096, (down, 8 * final)
    assert other < 64 * 1024  # replies and credits
    # an older server sends every settle and trial sample; the difference is exactly what stayed on the server
    saved = old_down - down
    assert saved == pytest.approx(8 * counters["ranged_samples_discarded"], rel=0.01)
    assert old_down >= 8 * (final + settle)
    print(f"link, server to client: {down / 1e6:.2f} MB with capture_ranged, {old_down / 1e6:.2f} MB with an older "
          f"server; final captures {8 * final / 1e6:.2f} MB; samples taken on the server "
          f"{counters['ranged_samples_taken']}, discarded there {counters['ranged_samples_discarded']}")


def test_ranged_capture_remote_matches_local_rule():
    """One ranged capture started far below the window: the server steps the gain by the rule the local radio
    uses (the same seeded bench: the same trials, gains and final capture), and a discarded capture returns
    its summary only."""
    rx = StreamConfig(2140e6, RATE, 0.0, 0.8 * RATE)
    rule = AutoRange()
    local = Rig.open(load_rig(RIGS / "sim-amplifier.yaml"), seed=0, calibration="optional")
    try:
        local.radio.configure_rx(rx)
        want = local.radio.capture_ranged(50_000, rx, rule)
    finally:
        local.close()
    server = serve(RIGS / "sim-amplifier.yaml", seed=0)
    try:
        r = open_radio(f"zmq://127.0.0.1:{server.port}?insecure=1")
        try:
            r.configure_rx(rx)
            got = r.capture_ranged(50_000, rx, rule)
            settled = r.capture_ranged(20_000, rx.with_(gain_db=got.gain_db), None, keep=False)
        finally:
            r.close()
    finally:
        stop(server)
    assert got.trials == want.trials >= 2 and got.gain_db == want.gain_db > 0
    assert replace(got.summary, timestamp=0) == replace(want.summary, timestamp=0)  # wall-clock times differ
    assert np.array_equal(got.capture.samples, want.capture.samples)
    assert r.rx_config.gain_db == got.gain_db  # the client knows the gain the server left set
    assert settled.capture is None and settled.trials == 1 and isinstance(settled.summary, LevelSummary)
    assert settled.summary.config.gain_db == got.gain_db and settled.summary.n_samples == 20_000
    assert server.counters["ranged_samples_discarded"] == (got.trials - 1) * 50_000 + 20_000


@pytest.mark.parametrize("plan", ["repeater_utra_ts25143", "amplifier_characterization"])
def test_shipped_plan_remote_equals_local(tmp_path, plan):
    """A shipped plan on a loopback rig server gives the local run's verdicts and figures: settling and
    auto-ranging on the server take the same captures in the same order on the same seeded bench."""
    base = "sim-repeater-utra.yaml" if plan.startswith("repeater") else "sim-amplifier.yaml"
    served = write_rig(tmp_path, base, name="served.yaml", limits={"tx_bands": [{"low": "1.7 GHz", "high": "2.7 GHz"}]},
                       calibration={"file": str(RIGS / base.replace(".yaml", ".cal.json"))})
    # the delay steps included: a timed start on the server radio's clock crosses the link (feature hardware_time)
    text = yaml.safe_load((REPO / "testplans" / f"{plan}.yaml").read_text())
    text.pop("rig", None)
    plan_file = write_plan(tmp_path, yaml.safe_dump(text, sort_keys=False))
    local, remote = tmp_path / "local", tmp_path / "remote"
    assert main(["run", str(plan_file), "--rig", str(served), "--out", str(local), "--seed", "0",
                 "--quiet"]) == 0
    server = serve(served, seed=0)
    try:
        rig = client_rig(tmp_path, served, f"zmq://127.0.0.1:{server.port}?insecure=1")
        assert main(["run", str(plan_file), "--rig", str(rig), "--out", str(remote), "--seed", "0",
                     "--quiet"]) == 0
        assert server.counters["ranged_captures"] > 0
    finally:
        stop(server)
    a, b = read_results(local), read_results(remote)
    assert b["rig"]["device"].startswith("zmq://") and b["calibration"]["applied"] and a["calibration"]["applied"]
    assert [s["verdict"] for s in a["steps"]] == [s["verdict"] for s in b["steps"]]
    for sa, sb in zip(a["steps"], b["steps"]):
        assert [(c["label"], c["rx_gain_db"], c["peak_dbfs"]) for c in sa["captures"]] == \
               [(c["label"], c["rx_gain_db"], c["peak_dbfs"]) for c in sb["captures"]]
        assert [(m["name"], m["value"]) for m in sa["measurements"]] == [(m["name"], m["value"]) for m in sb["measurements"]]


@pytest.mark.parametrize("gain, ceiling, peak, overload, gains, want", [
    (20.0, 73.0, -30.0, False, (0, 73, 0), (44.0, 73.0)),   # too low: aim the peak at -6 dBFS
    (40.0, 73.0, -0.5, False, (0, 73, 0), (30.0, 39.0)),    # too high: at least 10 dB down, never back up to 40
    (40.0, 73.0, -3.0, True, (0, 73, 1), (25.0, 39.0)),     # clipped: 15 dB down
    (40.0, 73.0, -10.0, False, (0, 73, 0), (None, 73.0)),   # in the window: accepted
    (73.0, 73.0, -40.0, False, (0, 73, 0), (None, 73.0)),   # at the top of the range: kept
    (25.0, 39.0, -30.0, False, (0, 73, 0), (39.0, 39.0)),   # the ceiling a clip left holds
    (20.0, 73.0, -25.3, False, (0, 70, 2), (40.0, 73.0)),   # 39.3 dB on a 2 dB grid
])
def test_autorange_rule(gain, ceiling, peak, overload, gains, want):
    from devices.radio import Range

    assert AutoRange().next_gain(gain, ceiling, peak, overload, Range(*gains)) == pytest.approx(want)


def test_capture_ranged_request_checked_by_the_server():
    server = serve(RIGS / "sim-amplifier.yaml", seed=0)
    try:
        r = open_radio(f"zmq://127.0.0.1:{server.port}?insecure=1")
        try:
            rx = StreamConfig(2140e6, RATE, 10.0, 0.8 * RATE)
            r.configure_rx(rx)
            args = {"n": 1000, "rx": {**rx.__dict__}, "keep": False}
            for bad, why in ((dict(ranging={"low_dbfs": 5.0}), "not a window below full scale"),
                             (dict(ranging=[-6]), "ranging must be an object"),
                             (dict(ranging={"low_dbfs": "low"}), "auto-ranging low_dbfs 'low' is not a finite"),
                             (dict(ranging={"max_trials": 2.5, "future": 1}), "auto-ranging max_trials 2.5: 1..32"),
                             (dict(rx={**rx.__dict__, "gain_db": True}), "rx.gain_db must be a finite number"),
                             (dict(retries=99), "retries must be an integer 0..10"),
                             (dict(keep="yes"), "keep must be true or false")):
                with pytest.raises(RemoteError, match=why) as e:
                    r._request("capture_ranged", {**args, **bad})
                assert e.value.code == "bad_request"
            assert server.counters.get("ranged_captures", 0) == 0 and not server._streams
        finally:
            r.close()
    finally:
        stop(server)


def test_unknown_ranging_fields_are_ignored_known_ones_applied(caplog):
    """A newer client's extra fields in ``ranging`` (and in ``rx``, and beside them) are ignored, logged at
    debug, as docs/remote-protocol.md promises; the known ones still rule: the server's trials and gain are
    the local radio's under the same (non-default) rule on the same seeded bench."""
    import logging

    rx = StreamConfig(2140e6, RATE, 0.0, 0.8 * RATE)
    rule = AutoRange(target_peak_dbfs=-12.0, low_dbfs=-18.0, high_dbfs=-3.0, max_trials=2)
    local = Rig.open(load_rig(RIGS / "sim-amplifier.yaml"), seed=0, calibration="optional")
    try:
        local.radio.configure_rx(rx)
        want = local.radio.capture_ranged(20_000, rx, rule, keep=False)
    finally:
        local.close()
    server = serve(RIGS / "sim-amplifier.yaml", seed=0)
    try:
        r = open_radio(f"zmq://127.0.0.1:{server.port}?insecure=1")
        try:
            r.configure_rx(rx)
            with caplog.at_level(logging.DEBUG, logger="harness.remote"):
                got = r._request("capture_ranged", {
                    "n": 20_000, "rx": {**rx.__dict__, "antenna": "RX2"}, "keep": False, "priority": "high",
                    "ranging": {**rule.as_dict(), "settle_hint_s": 0.01, "future": {"nested": [1, 2]}}})
        finally:
            r.close()
    finally:
        stop(server)
    assert want.trials == 2  # the rule's max_trials, not the default 10: the known fields were applied
    assert got["trials"] == want.trials and got["gain_db"] == want.gain_db
    assert got["summary"]["peak_dbfs"] == pytest.approx(want.summary.peak_dbfs, abs=1e-9)
    logged = " | ".join(r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    assert "ignored unknown field(s) of ranging: future, settle_hint_s" in logged
    assert "ignored unknown field(s) of rx: antenna" in logged
    assert "ignored unknown argument(s) of capture_ranged: priority" in logged


@pytest.mark.parametrize("keep", [False, True])
def test_frozen_server_mid_ranged_capture_is_a_clear_error(keep):
    """A ranged capture sends nothing until it is done, so the client cannot wait for data to tell a working
    server from a frozen one: the heartbeat's unanswered pings end it, within a lease, far inside the request's
    worst-case deadline (every trial retaken)."""
    import os
    import signal
    import time

    from devices import DeviceError, DeviceTimeout
    from tests.remote_helpers import serve_process

    p, port = serve_process(RIGS / "sim-amplifier.yaml", "--insecure", lease_s=2.0)
    try:
        r = open_radio(f"zmq://127.0.0.1:{port}?insecure=1&timeout=0.5")
        try:
            rx = StreamConfig(2140e6, 15.36e6, 0.0, 12.288e6)
            r.configure_rx(rx)
            n = 1_000_000
            worst = AutoRange().max_trials * (4 * r.deadlines.capture_s(n, 15.36e6) + r.deadlines.configure_s)
            os.kill(p.pid, signal.SIGSTOP)
            t0 = time.monotonic()
            with pytest.raises(DeviceTimeout, match="the rig server went silent"):
                r.capture_ranged(n, rx, AutoRange(), keep=keep)
            took = time.monotonic() - t0
            assert took < r.lease_s + 3 * r.timeout_s + 1.0 < worst / 10
            assert r.lost is not None
            with pytest.raises(DeviceError, match="device lost"):
                r.capture(10)
            print(f"keep={keep}: ranged capture raised DeviceTimeout after {took:.2f} s (worst-case deadline "
                  f"{worst:.0f} s)")
        finally:
            r.close()
    finally:
        end_process(p)
