"""Failures, interruptions and the transmitter: ERROR steps, stop-on-error, Ctrl-C, SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, RIGS, read_results, write_plan
from devices import DeviceError, StreamConfig, UnknownDeviceError, open_radio
from devices.radio import _ACTIVE_TX, stop_all_transmitters
from harness.plan import load_plan
from harness.rig import Rig, load_rig
from harness.runner import run_plan

THREE_STEPS = """\
name: safety
dut: {type: amplifier}
defaults: {frequency: 2140 MHz, sample_rate: 15.36 MHz}
stop_on_error: STOP
steps:
  - name: one
    measurement: gain
    stimulus: {type: cw, power: -20 dBm}
    limits: {gain: {min: 19 dB, max: 21 dB}}
  - name: two
    measurement: gain
    stimulus: {type: cw, power: -21 dBm}
    limits: {gain: {min: 19 dB, max: 21 dB}}
  - name: three
    measurement: gain
    stimulus: {type: cw, power: -22 dBm}
    limits: {gain: {min: 19 dB, max: 21 dB}}
"""


SLOW_SECOND_STEP = """\
name: slow
dut: {type: amplifier}
defaults: {frequency: 2140 MHz, sample_rate: 15.36 MHz}
steps:
  - name: one
    measurement: gain
    stimulus: {type: cw, power: -20 dBm}
    limits: {gain: {min: 19 dB, max: 21 dB}}
  - name: two
    measurement: compression_sweep
    start_power: -40 dBm
    stop_power: 10 dBm
    step: 0.02 dB
    n_samples: 262144
    limits: {output_p1db: {min: 0 dBm}}
"""


@pytest.fixture
def spy(monkeypatch):
    """Record every rig opened, and make step 'two' misbehave on demand."""
    opened = []
    real_open = Rig.open.__func__

    def open_(cls, spec, seed=None):
        rig = real_open(cls, spec, seed)
        opened.append(rig)
        return rig

    monkeypatch.setattr(Rig, "open", classmethod(open_))
    real_capture = Rig.capture
    behaviour = {}

    def capture(self, n_samples, autorange=True, label=""):
        # the device fails while the transmitter plays the step's level
        exc = behaviour.get(None if self.tx_setting is None else round(self.tx_setting.power_dbm, 3))
        if exc is not None:
            assert self.radio.transmitting
            raise exc
        return real_capture(self, n_samples, autorange, label)

    monkeypatch.setattr(Rig, "capture", capture)
    return opened, behaviour


def _run(tmp_path, stop=False):
    plan = load_plan(write_plan(tmp_path, THREE_STEPS.replace("STOP", "true" if stop else "false")))
    return run_plan(plan, load_rig(RIGS / "sim-amplifier.yaml"), tmp_path / "run", seed=3)


def test_step_error_is_recorded_and_run_continues(tmp_path, spy):
    opened, behaviour = spy
    behaviour[-21.0] = RuntimeError("synthesizer unlocked")
    code, rec = _run(tmp_path)
    res = read_results(rec.dir)
    assert code == 3 and res["verdict"] == "ERROR"
    assert [s["verdict"] for s in res["steps"]] == ["PASS", "ERROR", "PASS"]
    assert "synthesizer unlocked" in res["steps"][1]["error"]
    assert not opened[0].radio.transmitting


def test_stop_on_error(tmp_path, spy):
    opened, behaviour = spy
    behaviour[-21.0] = DeviceError("RX timeout")
    code, rec = _run(tmp_path, stop=True)
    res = read_results(rec.dir)
    assert code == 3
    assert [(s["name"], s["verdict"]) for s in res["steps"]] == [("one", "PASS"), ("two", "ERROR"),
                                                                   ("three", "SKIPPED")]
    assert res["status"] == "aborted" and res["verdict"] == "ERROR"
    assert not opened[0].radio.transmitting


def test_ctrl_c_keeps_results_and_stops_transmitter(tmp_path, spy):
    opened, behaviour = spy
    behaviour[-21.0] = KeyboardInterrupt()
    code, rec = _run(tmp_path)
    res = read_results(rec.dir)
    assert code == 3 and res["verdict"] == "ERROR" and res["status"] == "interrupted"
    # the steps not run (the interrupted one included) are SKIPPED with the reason
    assert [(s["name"], s["verdict"]) for s in res["steps"]] == [("one", "PASS"), ("two", "SKIPPED"),
                                                                   ("three", "SKIPPED")]
    assert "interrupted" in res["steps"][1]["error"]
    assert opened[0].radio.transmitting is False
    assert opened[0].radio not in set(_ACTIVE_TX)


def test_sigterm_mid_run_stops_and_keeps_results(tmp_path):
    """A real process killed with SIGTERM during a slow step still writes its results."""
    plan = write_plan(tmp_path, SLOW_SECOND_STEP)
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(plan), "--rig",
                             str(RIGS / "sim-amplifier.yaml"), "--out", str(out), "--quiet"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        if (out / "results.json").exists() and read_results(out)["steps"]:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 3
    res = read_results(out)
    assert res["status"] == "interrupted" and "SIGTERM" in res["note"]
    assert [s["verdict"] for s in res["steps"]] == ["PASS", "SKIPPED"]


def test_unknown_scheme_lists_known():
    with pytest.raises(UnknownDeviceError) as e:
        open_radio("usrp:serial=1234")
    assert "unknown device URI scheme 'usrp'" in str(e.value) and "sim:" in str(e.value)
    with pytest.raises(UnknownDeviceError, match="no scheme"):
        open_radio("192.168.2.1")


def _sim_radio():
    r = open_radio("sim:")
    r.configure_tx(StreamConfig(2e9, 10e6, -10))
    r.configure_rx(StreamConfig(2e9, 10e6, 30))
    return r


def test_close_and_exceptions_stop_transmitter():
    r = _sim_radio()
    r.transmit(np.full(1000, 0.5, np.complex64))
    assert r.transmitting
    r.close()
    assert not r.transmitting
    with pytest.raises(ValueError):
        with _sim_radio() as r2:
            r2.transmit(np.full(1000, 0.5, np.complex64))
            raise ValueError("boom")
    assert not r2.transmitting


def test_atexit_safety_net_stops_every_transmitter():
    r = _sim_radio()
    r.transmit(np.full(1000, 0.5, np.complex64))
    stop_all_transmitters()
    assert not r.transmitting
    r.close()


def test_over_full_scale_waveform_refused():
    with _sim_radio() as r:
        with pytest.raises(DeviceError, match="full scale"):
            r.transmit(np.full(100, 1.5, np.complex64))
        assert not r.transmitting


def test_transmitter_stopped_when_process_exits_without_close(tmp_path):
    """A script that forgets close(): the interpreter-exit hook still stops the transmitter."""
    code = (
        "import numpy as np\n"
        "from devices import open_radio, StreamConfig\n"
        "import devices.sim.bench as b\n"
        "r = open_radio('sim:')\n"
        "r.configure_tx(StreamConfig(2e9, 10e6, -10))\n"
        "orig = b.SimBench.stop_tx\n"
        "def stop(self):\n"
        "    print('TX STOPPED', flush=True)\n"
        "    orig(self)\n"
        "b.SimBench.stop_tx = stop\n"
        "r.transmit(np.full(100, 0.5, np.complex64))\n"
        "keep = [r]\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "TX STOPPED" in out.stdout
