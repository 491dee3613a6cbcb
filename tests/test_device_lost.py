"""A device that freezes mid-plan: the run stops within the capture deadline plus a few seconds, exit 3,
the remaining steps SKIPPED with the root cause (the missed deadline), never 'complete'. A device that vanishes
(its connection broken) ends the run the same way, at once, with the broken connection as the cause."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import PLANS, REPO, RIGS, read_results
from remote_helpers import end_process, free_port, start_emulator


@pytest.mark.parametrize("ctrl_c, killed", [(False, False), (True, False), (False, True)],
                         ids=["frozen", "frozen-then-ctrl-c", "killed"])
def test_frozen_emulated_pluto_ends_the_run(tmp_path, ctrl_c, killed):
    """The UTRA repeater plan (its 9 steps that need no TX timestamps) on an emulated Pluto frozen (SIGSTOP)
    after two steps."""
    port = free_port()
    emu = start_emulator(RIGS / "sim-repeater-utra.yaml", port, "--model", "ad9364")
    try:
        rig = yaml.safe_load((RIGS / "sim-repeater-utra.yaml").read_text())
        rig = {k: v for k, v in rig.items() if k not in ("dut", "sim")}
        rig.update(name="frozen-pluto", device=f"pluto:ip:127.0.0.1:{port}")
        rig_file = tmp_path / "frozen-pluto.yaml"
        rig_file.write_text(yaml.safe_dump(rig))
        # a Pluto does not timestamp captures against its transmitter: the delay steps would be refused
        plan = yaml.safe_load((PLANS / "repeater_utra_ts25143.yaml").read_text())
        plan["steps"] = [s for s in plan["steps"] if s["measurement"] != "delay"]
        plan_file = tmp_path / "repeater.yaml"
        plan_file.write_text(yaml.safe_dump(plan, sort_keys=False))
        out = tmp_path / "run"
        run = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(plan_file),
                                "--rig", str(rig_file), "--uncalibrated", "--out", str(out), "--quiet"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline and run.poll() is None:
            if (out / "results.json").exists() and len(read_results(out)["steps"]) >= 2:
                break
            time.sleep(0.05)
        assert run.poll() is None, run.communicate()
        emu.send_signal(signal.SIGKILL if killed else signal.SIGSTOP)
        frozen = time.monotonic()
        if ctrl_c:  # the operator gives up while a device call hangs
            time.sleep(0.5)
            run.send_signal(signal.SIGINT)
            frozen = time.monotonic()
            stdout, stderr = run.communicate(timeout=60)
            elapsed = time.monotonic() - frozen
            print(f"\nCtrl-C with the device frozen -> harness exit in {elapsed:.2f} s")
            res = read_results(out)
            assert run.returncode == 3 and res["status"] == "interrupted" and "Traceback" not in stderr
            # the interrupt lands at once (tests/test_deadlines.py: < 1 ms); the clean-up then waits for the hung
            # call's deadline (2.1 s), a stop behind it (3 s) and one stop attempt on a fresh thread (3 s)
            assert elapsed < 2.1 + 3.0 + 3.0 + 1.0
            return
        stdout, stderr = run.communicate(timeout=60)
        elapsed = time.monotonic() - frozen
        print(f"\n{'killed' if killed else 'frozen'} device -> harness exit in {elapsed:.2f} s")
        res = read_results(out)
        assert run.returncode == 3, (stdout, stderr)
        assert res["verdict"] == "ERROR"
        lost = next(s for s in res["steps"] if s["verdict"] == "ERROR")
        if killed:
            # the connection breaks at once (libiio: broken pipe, connection reset): no deadline is missed, yet
            # the device is gone, so the run stops as for a missed deadline, with the broken connection as the
            # cause, not an ERROR per remaining step (nor a PASS or a DUT FAIL)
            assert res["note"].startswith(f"device lost: pluto:ip:127.0.0.1:{port}: "), res["note"]
            assert "the device is gone (" in res["note"]
            assert "DeviceLost" in lost["error"] and "the device is gone" in lost["error"]
            assert elapsed < 5.0
        else:
            assert res["note"].startswith("device lost: ") and "deadline" in res["note"]
            assert "DeviceTimeout" in lost["error"] and "deadline" in lost["error"]  # the cause, not a pipe
        assert res["status"] == "aborted"
        rest = res["steps"][res["steps"].index(lost) + 1:]
        assert rest and all(s["verdict"] == "SKIPPED" and "device lost" in s["error"] for s in rest)
        assert all(s["verdict"] not in ("ERROR", "SKIPPED") for s in res["steps"][:res["steps"].index(lost)])
        # the longest capture of the plan lasts 34 ms: its deadline is 2 s + 2 x that; 5 s more at most
        assert elapsed < 2.1 + 5.0
    finally:
        end_process(emu)
