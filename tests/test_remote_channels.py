"""Two RX channels captured at once on one clock cross the link (op ``capture_channels``, feature
``capture_channels``): a rig that times the delay step by a reference channel runs it remotely as locally.

* The UTRA repeater plan's delay steps on the shipped reference-channel bench, locally and through a loopback
  rig server (same seed): the same method, captures, gains and figures, bit for bit.
* An older server (without the feature) is not asked: the client withholds ``coherent_rx``, and with no
  hardware time either the delay step is refused at validation (exit 2) naming the reason.
* Malformed requests are refused (``bad_request``) and leave no stream behind; a channel the radio lacks is
  the radio's own error.
* The server's RX-port interlock reads every channel: a reference channel above ``max_rx_input_dbm`` stops
  TX and aborts both streams, while the DUT output's channel alone passes.
* A frame lost on one channel's stream is counted and marked on that channel's capture (zeros, never
  stitched); the other channel is intact.
* A frozen server: DeviceTimeout within the capture's deadline, naming what each channel received.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace

import numpy as np
import pytest
import yaml

import harness.remote.server as server_mod
from devices import zmq_wire as wire
from devices import DeviceError, DeviceTimeout, StreamConfig, open_radio
from devices.zmq import RemoteError, RemoteRefused
from harness.cli import main
from harness.rig import Rig, load_rig
from tests.conftest import RIGS, read_results, write_plan, write_rig
from tests.remote_helpers import REPO, client_rig, end_process, serve, serve_process, stop, wait_until

BASE = "sim-repeater-utra-reference.yaml"
RATE = 30.72e6
RX = StreamConfig(2140e6, RATE, 20.0, 0.8 * RATE)


def _served(tmp_path, **sections):
    return write_rig(tmp_path, BASE, name="served.yaml",
                     limits={"tx_bands": [{"low": "2.1 GHz", "high": "2.2 GHz"}], **sections.pop("limits", {})},
                     calibration={"file": str(RIGS / BASE.replace(".yaml", ".cal.json"))}, **sections)


def _delay_plan(tmp_path):
    plan = yaml.safe_load((REPO / "testplans" / "repeater_utra_ts25143.yaml").read_text())
    plan["steps"] = [s for s in plan["steps"] if s["measurement"] == "delay"]
    plan.pop("rig", None)
    return write_plan(tmp_path, yaml.safe_dump(plan, sort_keys=False))


def test_reference_channel_delay_remote_equals_local(tmp_path, monkeypatch, capsys):
    served = _served(tmp_path)
    plan_file = _delay_plan(tmp_path)
    local, remote, old = tmp_path / "local", tmp_path / "remote", tmp_path / "old"
    assert main(["run", str(plan_file), "--rig", str(served), "--out", str(local), "--seed", "0", "--quiet"]) == 0
    server = serve(served, seed=0)
    try:
        rig = client_rig(tmp_path, served, f"zmq://127.0.0.1:{server.port}?insecure=1")
        assert main(["run", str(plan_file), "--rig", str(rig), "--out", str(remote), "--seed", "0", "--quiet"]) == 0
        # one capture_channels per trial of each step's timed capture, on the server's radio
        assert server.counters["channel_captures"] >= 2
    finally:
        stop(server)
    a, b = read_results(local), read_results(remote)
    assert b["rig"]["device"].startswith("zmq://") and a["calibration"]["applied"] and b["calibration"]["applied"]
    assert [s["verdict"] for s in a["steps"]] == [s["verdict"] for s in b["steps"]] == ["PASS", "PASS"]
    assert [s["info"]["method"] for s in b["steps"]] == [s["info"]["method"] for s in a["steps"]] \
        == ["reference_channel"] * 2
    for sa, sb in zip(a["steps"], b["steps"]):
        assert [(c["label"], c["rx_channel"], c["rx_gain_db"], c["peak_dbfs"], c["dropped_samples"])
                for c in sb["captures"]] == \
               [(c["label"], c["rx_channel"], c["rx_gain_db"], c["peak_dbfs"], c["dropped_samples"])
                for c in sa["captures"]]
        assert [c["label"] for c in sb["captures"]] == ["capture", "capture.reference"]
        assert [(m["name"], m["value"], m["uncertainty"]) for m in sb["measurements"]] == \
               [(m["name"], m["value"], m["uncertainty"]) for m in sa["measurements"]]
    delay = b["steps"][1]["measurements"][0]
    truth = load_rig(RIGS / BASE).dut.truth(2140.1e6, RATE)["delay_s"]
    assert abs(delay["value"] - truth) <= 1.5 * delay["uncertainty"]
    with capsys.disabled():
        print(f"delay by reference channel: local {a['steps'][1]['measurements'][0]['value'] * 1e9:.3f} ns, remote "
              f"{delay['value'] * 1e9:.3f} ns (truth {truth * 1e9:.3f} ns, U {delay['uncertainty'] * 1e9:.2f} ns)")

    # an older server (neither capture_channels nor hardware_time): coherent_rx is withheld, the step refused
    monkeypatch.setattr(server_mod, "FEATURES", ("remote_run", "capture_ranged"))
    server = serve(served, seed=0)
    try:
        rig = client_rig(tmp_path, served, f"zmq://127.0.0.1:{server.port}?insecure=1", name="old.yaml")
        capsys.readouterr()
        assert main(["run", str(plan_file), "--rig", str(rig), "--out", str(old), "--seed", "0", "--quiet"]) == 2
        err = capsys.readouterr().err
        # the link's fault, named as such: not the served radio's (sim captures RX channels together)
        assert f"declares reference channel 1, but the rig server at zmq://127.0.0.1:{server.port} does not " \
               f"offer capture_channels or hardware_time (an older server" in err
        assert "cannot capture RX channels together" not in err
        assert server.counters.get("channel_captures", 0) == 0
    finally:
        stop(server)


def test_capture_channels_equals_local_and_reports_per_channel():
    local = Rig.open(load_rig(RIGS / BASE), seed=0, calibration="optional")
    try:
        local.radio.configure_rx(RX)
        want = local.radio.capture_channels(100_000, (0, 1), (20.0, 30.0))
    finally:
        local.close()
    server = serve(RIGS / BASE, seed=0)
    try:
        r = open_radio(f"zmq://127.0.0.1:{server.port}?insecure=1&format=cf32")
        try:
            assert "coherent_rx" in r.capabilities.timing and "capture_channels" in r.features
            r.configure_rx(RX)
            r.frame_samples = 16384  # several frames per channel
            got = r.capture_channels(100_000, (0, 1), (20.0, 30.0))
        finally:
            r.close()
    finally:
        stop(server)
    for g, w in zip(got, want):
        assert np.array_equal(g.samples, w.samples)
        assert g.meta.config == w.meta.config and g.meta.time_ns == w.meta.time_ns and g.meta.ok
    assert [g.meta.config.channel for g in got] == [0, 1] and [g.meta.config.gain_db for g in got] == [20.0, 30.0]


def test_malformed_capture_channels_refused():
    server = serve(RIGS / BASE, seed=0)
    try:
        r = open_radio(f"zmq://127.0.0.1:{server.port}?insecure=1")
        try:
            r.configure_rx(RX)
            args = {"n": 1000, "channels": [0, 1], "gains_db": [20.0, 30.0], "streams": [901, 902]}
            for bad, why in ((dict(n=0), "capture of 0 samples"),
                             (dict(n=True), "capture of True samples"),
                             (dict(n=1 << 25), "1..2\\^24 allowed"),
                             (dict(channels=[0, 0]), "distinct RX channel numbers"),
                             (dict(channels="0,1"), "channels must be a list of integers"),
                             (dict(channels=[0, -1]), "channels must be a list of integers"),
                             (dict(streams=[901]), "one distinct stream id per channel"),
                             (dict(streams=[901, 901]), "one distinct stream id per channel"),
                             (dict(streams=[901, 2 ** 32]), "streams must be a list of integers"),
                             (dict(gains_db=[20.0]), "one finite gain"),
                             (dict(gains_db=[20.0, "30"]), "one finite gain"),
                             (dict(timeout_s="soon"), "timeout_s must be a finite number"),
                             (dict(format="cs8"), "cs8"),
                             (dict(channels=None), "channels must be a list")):
                with pytest.raises(RemoteError, match=why) as e:
                    r._request("capture_channels", {**args, **bad})
                assert e.value.code == "bad_request", bad
                assert not server._streams, bad  # all or none: no stream left behind
            no_streams = dict(args)
            del no_streams["streams"]
            with pytest.raises(RemoteError, match="streams") as e:
                r._request("capture_channels", no_streams)
            assert e.value.code == "bad_request"
            # well formed, but a channel the board does not have: the radio's own refusal, streams aborted
            with pytest.raises(RemoteError, match="RX channel 5") as e:
                r._request("capture_channels", {**args, "channels": [0, 5]})
            assert e.value.code == "device"
            assert server.counters.get("channel_captures", 0) == 0
            # and the server still serves
            assert [c.meta.ok for c in r.capture_channels(1000, (0, 1), (20.0, 30.0))] == [True, True]
        finally:
            r.close()
    finally:
        stop(server)


def test_rx_interlock_reads_every_channel(tmp_path):
    """With the DUT bypassed (a thru and 60 dB of pads to RX channel 0) the reference channel hears the DUT input
    through the splitter alone: a limit between the two ports' levels trips on the reference channel."""
    served = _served(tmp_path, limits={"max_rx_input_dbm": -35})
    server = serve(served, seed=0)
    try:
        r = open_radio(f"zmq://127.0.0.1:{server.port}?insecure=1")
        try:
            rx = StreamConfig(2140e6, 15.36e6, 0.0, 12e6)
            r.configure_rx(rx)
            r.configure_tx(StreamConfig(2140e6, 15.36e6, 0.0, 12e6))
            r.set_dut_bypass(True)
            tone = (0.5 * np.exp(2j * np.pi * np.arange(4096) / 64)).astype(np.complex64)
            r.transmit(tone)
            out = r.capture(50_000)  # the DUT output's channel alone stays below the limit
            assert out.meta.ok and server.radio.transmitting
            with pytest.raises(RemoteRefused) as e:
                r.capture_channels(50_000, (0, 1), (0.0, 0.0))
            assert e.value.limit == "limits.max_rx_input_dbm" and "transmitter stopped" in str(e.value)
            assert not server.radio.transmitting and server.radio.bench._wave is None
            assert server.counters["refusals"] == 1
            assert server.counters.get("channel_captures", 0) == 0
            # the ABORTED frames may still be leaving when the refusal arrives: the streams end soon after
            assert wait_until(lambda: not server._streams, 2.0, 0.01)
        finally:
            r.close()
    finally:
        stop(server)


def test_frame_lost_on_one_channel_is_counted_and_marked(monkeypatch):
    """The second channel's third frame never leaves the server: that capture comes back whole-length, its
    missing samples zero and counted (overflow set), the first channel's intact; nothing is stitched."""
    push = server_mod._Stream.push
    dropped = []

    def lossy(self, parts, nbytes, force=False):
        if self.sid == lossy.sid and wire.HEADER.unpack(parts[0])[6] == 2 * 16384 and not dropped:  # 3rd frame
            dropped.append(parts)
            return True  # as if sent, then lost in transit: a gap in seq and first_sample
        return push(self, parts, nbytes, force)

    local = Rig.open(load_rig(RIGS / BASE), seed=0, calibration="optional")
    try:
        local.radio.configure_rx(RX)
        want = local.radio.capture_channels(100_000, (0, 1))
    finally:
        local.close()
    monkeypatch.setattr(server_mod._Stream, "push", lossy)
    server = serve(RIGS / BASE, seed=0)
    try:
        r = open_radio(f"zmq://127.0.0.1:{server.port}?insecure=1")
        try:
            r.configure_rx(RX)
            r.frame_samples = 16384
            lossy.sid = next(r._stream_ids) + 2  # the ids the next request will use: (this + 1, this + 2)
            a, b = r.capture_channels(100_000, (0, 1))
        finally:
            r.close()
    finally:
        stop(server)
    assert len(dropped) == 1
    assert a.meta.ok and a.meta.dropped_samples == 0 and np.array_equal(a.samples, want[0].samples)
    assert b.samples.size == 100_000 and b.meta.overflow and b.meta.dropped_samples == 16384
    hole = np.zeros(100_000, dtype=bool)
    hole[2 * 16384:3 * 16384] = True
    assert not np.any(b.samples[hole]) and np.any(want[1].samples[hole])  # zeros where samples were lost
    assert np.array_equal(b.samples[~hole], want[1].samples[~hole])  # everything else in place, not shifted


def test_frozen_server_mid_capture_channels_is_a_clear_error():
    p, port = serve_process(RIGS / BASE, "--insecure", lease_s=2.0)
    try:
        r = open_radio(f"zmq://127.0.0.1:{port}?insecure=1&timeout=0.5")
        try:
            r.deadlines = replace(r.deadlines, capture_margin_s=2.0)  # the deadline under test, kept short
            r.configure_rx(RX)
            n = 200_000
            deadline = r.deadlines.capture_s(2 * n, RX.sample_rate_hz)
            os.kill(p.pid, signal.SIGSTOP)
            t0 = time.monotonic()
            with pytest.raises(DeviceTimeout, match=r"went silent.*partial capture: channel 0: 0, channel 1: 0 of "
                                                    r"200000 samples received, incomplete"):
                r.capture_channels(n, (0, 1))
            took = time.monotonic() - t0
            assert took <= deadline + 0.5
            assert r.lost is not None
            with pytest.raises(DeviceError, match="device lost"):
                r.capture_channels(10, (0, 1))
            print(f"capture_channels raised DeviceTimeout after {took:.2f} s (deadline {deadline:.2f} s)")
        finally:
            r.close()
    finally:
        end_process(p)
