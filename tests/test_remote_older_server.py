"""A rig server older than its client: a timing method its radio has but the link cannot carry.

``hello`` announces the ops added within the protocol version (``features``); a client withholds a timing
capability whose op the server lacks (``hardware_time``; ``coherent_rx`` needs ``capture_channels``). The
delay step on such a rig is refused at validation (exit 2, nothing transmitted), and the refusal names the
rig server, the feature it lacks and the protocol version, not the served radio, which has the method. The
older server is this server with its announced features cut (``FEATURES``), as the other remote tests fake one.

The other way round, a newer server adds fields within the version; the client ignores those it does not know.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import yaml

import harness.remote.server as server_mod
from devices import CapabilityError, StreamConfig, open_radio
from harness.cli import main
from tests.conftest import RIGS, write_plan, write_rig
from tests.remote_helpers import REPO, client_rig, serve, stop

BASES = {"sim-reference": "sim-repeater-utra-reference.yaml",  # coherent_rx and hardware_time, RX1 declared
         "sim-hardware-time": "sim-repeater-utra.yaml",  # hardware_time, no reference channel
         "pluto-2r2t": "pluto-emulated-repeater-utra.yaml"}  # coherent_rx only, RX1 declared


def _served(tmp_path, base):
    return write_rig(tmp_path, base, name="served.yaml", limits={"tx_bands": [{"low": "2.1 GHz", "high": "2.2 GHz"}]},
                     calibration={"file": str(RIGS / base.replace(".yaml", ".cal.json"))})


def _delay_plan(tmp_path):
    plan = yaml.safe_load((REPO / "testplans" / "repeater_utra_ts25143.yaml").read_text())
    plan["steps"] = [s for s in plan["steps"] if s["measurement"] == "delay"]
    plan.pop("rig", None)
    return write_plan(tmp_path, yaml.safe_dump(plan, sort_keys=False))


@pytest.mark.parametrize("rig, features, lacks, has, tail", [
    ("sim-reference", ("remote_run", "capture_ranged"), "capture_channels or hardware_time",
     "sim radio has coherent_rx and hardware_time", ""),
    ("sim-reference", ("remote_run", "capture_ranged", "hardware_time"), None, None, None),  # times by hardware
    ("sim-hardware-time", ("remote_run", "capture_ranged", "capture_channels"), "hardware_time",
     "sim radio has hardware_time", ", and the rig declares no reference channel"),
    ("pluto-2r2t", ("remote_run", "capture_ranged", "hardware_time"), "capture_channels",
     "pluto radio has coherent_rx", ", and the radio has no hardware time"),
])
def test_older_server_delay_step_refused_naming_the_server(tmp_path, monkeypatch, capsys, rig, features, lacks,
                                                          has, tail):
    monkeypatch.setattr(server_mod, "FEATURES", features)
    monkeypatch.chdir(tmp_path)  # relative paths, as typed at a terminal: the line is as long as users see it
    served = _served(tmp_path, BASES[rig])
    plan = _delay_plan(tmp_path)
    server = serve(served, seed=0)
    try:
        uri = f"zmq://127.0.0.1:{server.port}"
        client = client_rig(tmp_path, served, uri + "?insecure=1")
        capsys.readouterr()
        code = main(["run", plan.name, "--rig", client.name, "--out", "run", "--seed", "0",
                     "--quiet", "--no-history"])
        err = capsys.readouterr().err
        if lacks is None:  # the link carries one method the rig can use: no refusal
            assert code == 0, err
            return
        assert code == 2, err
        line = err.strip().splitlines()[-1]
        assert f"the rig server at {uri} does not offer {lacks} (an older server: harness {server.software}, " \
               f"protocol v1; its {has}){tail}" in line, line
        assert len(line) <= 400 + len("harness: ") and not line.endswith("…"), line  # whole, in one line
        assert "cannot capture RX channels together" not in line  # the served radio can
        # refused before anything was asked of the radio: nothing tuned, nothing transmitted
        assert server.counters.get("channel_captures", 0) == 0 and server.radio.tx_config is None
        assert not server.radio.transmitting
        junit = (tmp_path / "run" / "junit.xml").read_text()
        assert "does not offer" in junit  # the refusal's record is red, with the same reason
    finally:
        stop(server)
    with capsys.disabled():
        print(f"\n{line}")


def test_older_server_radio_calls_name_the_server(monkeypatch):
    """Called anyway (a script through the Python API), the withheld methods refuse naming the server too;
    a server that states no software version (as every one before it was sent) is named an older server."""
    monkeypatch.setattr(server_mod, "FEATURES", ("remote_run", "capture_ranged"))
    server = serve(RIGS / BASES["sim-reference"], seed=0)
    server.software = None
    try:
        r = open_radio(f"zmq://127.0.0.1:{server.port}?insecure=1")
        try:
            assert r.capabilities.timing == () and "hardware_time" in server.radio.capabilities.timing
            where = f"zmq://127.0.0.1:{server.port}?insecure=1: the rig server at zmq://127.0.0.1:{server.port}"
            r.configure_rx(StreamConfig(2140e6, 15.36e6, 0.0, 12e6))
            with pytest.raises(CapabilityError) as e:
                r.capture_channels(1000, (0, 1))
            assert str(e.value) == f"{where} does not offer capture_channels (an older server, protocol v1; its sim " \
                                   f"radio has coherent_rx)"
            with pytest.raises(CapabilityError, match=r"does not offer hardware_time \(an older server, protocol v1"):
                r.hardware_time_ns()
            with pytest.raises(CapabilityError, match="does not offer hardware_time.*cannot start at a commanded"):
                r.transmit(np.zeros(64, np.complex64), at_time_ns=1)
            assert not server.radio.transmitting and server.counters.get("channel_captures", 0) == 0
        finally:
            r.close()
    finally:
        stop(server)


def test_local_radio_withholds_nothing():
    """A local radio's missing method is the board's: the refusal names its driver, as before (the emulated
    Pluto in its default 1r1t mode: one receiver, no hardware time)."""
    from harness.rig import Rig, load_rig

    with Rig.open(load_rig(RIGS / "pluto-emulated.yaml"), calibration="off") as rig:
        assert rig.caps.timing == ()
        assert rig.radio.timing_withheld(("coherent_rx", "hardware_time")) == ((), "")
        rig.radio.configure_rx(StreamConfig(2140e6, 15.36e6, 0.0, 12e6))
        with pytest.raises(CapabilityError, match=": pluto cannot capture RX channels together on one clock$"):
            rig.radio.capture_channels(1000, (0, 1))
        with pytest.raises(CapabilityError, match=": pluto has no hardware time$"):
            rig.radio.hardware_time_ns()


class _NewerWire:
    """The wire module as a newer server within protocol v1 uses it: every JSON object it sends (replies,
    ``hello``'s capabilities and their ranges, stream configs, END-frame metadata, ranged summaries) carries
    a field this client does not know."""

    def __init__(self, wire):
        self._wire = wire

    def __getattr__(self, name):
        return getattr(self._wire, name)

    @classmethod
    def grow(cls, obj):
        if isinstance(obj, dict):
            return {**{k: cls.grow(v) for k, v in obj.items()}, "zz_added_later": {"n": 1}}
        if isinstance(obj, list):
            return [cls.grow(v) for v in obj]
        return obj

    def dumps(self, obj):
        return self._wire.dumps(self.grow(obj))

    def encode_reply(self, req_id, result=None, error=None):
        return self._wire.encode_reply(req_id, None if result is None else self.grow(result), error)


def test_newer_server_extra_fields_ignored(monkeypatch):
    """docs/remote-protocol.md: within a version a peer ignores fields it does not know. A client used to
    build its Capabilities, StreamConfigs and ranged summaries from every field sent, so a newer server's
    added field made it fail at hello. Captures through such a server equal those through this one."""
    from devices.ranging import AutoRange

    rx = StreamConfig(2140e6, 15.36e6, 10.0, 12e6)

    def session():
        server = serve(RIGS / BASES["sim-reference"], seed=0)
        try:
            with open_radio(f"zmq://127.0.0.1:{server.port}?insecure=1") as r:
                caps = r.capabilities
                got = r.configure_rx(rx)
                one = r.capture(5000)
                ranged = r.capture_ranged(5000, got, AutoRange())
                pair = r.capture_channels(5000, (0, 1), (10.0, 20.0))
                t = r.hardware_time_ns()
            return caps, got, one, ranged, pair, t
        finally:
            stop(server)

    want = session()
    monkeypatch.setattr(server_mod, "wire", _NewerWire(server_mod.wire))
    got = session()
    assert got[0] == want[0] and got[0].timing == ("hardware_time", "coherent_rx")  # all of it, and no more
    assert got[1] == want[1]
    for a, b in [(got[2], want[2]), (got[3].capture, want[3].capture)] + list(zip(got[4], want[4])):
        assert np.array_equal(a.samples, b.samples) and a.meta.config == b.meta.config and a.meta.ok
        assert a.meta.extra.get("zz_added_later") == {"n": 1}  # END metadata's free-form part passes through
    assert replace(got[3].summary, timestamp=0) == replace(want[3].summary, timestamp=0)  # host clock apart
    assert got[3].gain_db == want[3].gain_db
    assert got[5] > 0
