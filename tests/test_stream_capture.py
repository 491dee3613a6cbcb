"""``harness capture --duration``: continuous capture to a SigMF recording written as it arrives, loss
counted and annotated, a valid recording when interrupted (SIGINT / SIGTERM to a real subprocess)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import numpy as np
import pytest

from devices import StreamConfig
from devices import zmq_wire as wire
from devices.replay import RecordingWriter, read_recording, validate_file
from harness import stream_capture as sc
from harness.cli import main
from tests.conftest import RIGS
from tests.remote_helpers import PY, REPO, serve, stop


class _ScriptedStream:
    """A continuous stream that delivers chunks and losses written in the test."""

    def __init__(self, script):
        self.script, self.ended, self.overflows, self.closed = list(script), None, 0, False

    def read(self, timeout_s):
        if not self.script:
            self.ended = "stopped"
            return None
        return self.script.pop(0)

    def close(self, timeout_s=5.0):
        self.closed = True


class _StreamRadio:
    def __init__(self, script):
        self.s = _ScriptedStream(script)

    def stream(self, frame_samples, **kw):
        return self.s


def test_loss_is_counted_and_annotated_where_it_happened(tmp_path):
    chunks = [np.full(1000, k + 1, np.complex64) * (0.1 + 0.05j) for k in range(5)]
    # truth written here: 300 samples lost before chunk 2, 50 before chunk 4; 5000 samples of time asked
    script = [(chunks[0], 0), (chunks[1], 0), (chunks[2], 300), (chunks[3], 0), (chunks[4], 50)]
    radio = _StreamRadio(script)
    w = RecordingWriter(tmp_path / "rec", 1e6, 2.14e9)
    s = sc.record(radio, w, 5000)
    cfg = StreamConfig(2.14e9, 1e6, 30.0)
    sc.finish(w, s, cfg, hw="scripted", recorder="test", full_scale_dbm=-10.0, context={})
    assert radio.s.closed
    # 5000 samples of time: 350 lost, so only 4650 written (the last chunk cut, never padded or stitched)
    assert (s.written, s.lost, s.gaps, s.interrupted) == (4650, 350, 2, None)
    rec = read_recording(tmp_path / "rec")
    validate_file(tmp_path / "rec")
    assert rec.samples.size == 4650
    np.testing.assert_array_equal(rec.samples[:3000], np.concatenate(chunks[:3]))
    np.testing.assert_array_equal(rec.samples[3000:4650], np.concatenate([chunks[3], chunks[4][:650]]))
    gaps = [(a["core:sample_start"], a["harness:lost_samples"]) for a in rec.annotations
            if a["core:label"] == "overflow gap"]
    assert gaps == [(2000, 300), (4000, 50)]
    assert rec.global_info["harness:stream"]["lost"] == 350


def test_progress_bar_shows_rate_and_loss(tmp_path, capsys):
    """The progress bar of a continuous capture (shown on a terminal; its final state is printed anyway)
    says how much arrived, at what rate, and what was lost, as the summary counts them."""
    chunks = [np.full(100_000, 0.1 + 0.05j, np.complex64) for _ in range(5)]
    script = [(chunks[0], 0), (chunks[1], 0), (chunks[2], 30_000), (chunks[3], 0), (chunks[4], 5_000)]
    w = RecordingWriter(tmp_path / "rec", 1e6, 2.14e9)
    t0 = time.monotonic()
    with sc.Progress(500_000, 1e6, True) as bar:
        s = sc.record(_StreamRadio(script), w, 500_000, progress=bar)
        took = time.monotonic() - t0
    w.abandon()
    err = capsys.readouterr().err
    assert (s.written, s.lost, s.gaps) == (465_000, 35_000, 2)
    line = err.strip().splitlines()[-1]
    assert "100.0 %" in line and "lost 35000" in line and "gaps 2" in line, line
    msps = float(line.split(" MS/s")[0].split()[-1])
    assert msps >= 465_000 / took / 1e6 * 0.99  # written over the time from the bar's start to its last update


def test_a_stream_that_ends_early_says_so(tmp_path):
    radio = _StreamRadio([(np.ones(100, np.complex64), 0)])
    w = RecordingWriter(tmp_path / "rec", 1e6, 1e9)
    s = sc.record(radio, w, 1000)
    sc.finish(w, s, StreamConfig(1e9, 1e6, 0.0), hw="x", recorder="test", full_scale_dbm=None, context={})
    assert s.written == 100 and s.interrupted == "the stream ended: stopped"
    assert read_recording(tmp_path / "rec").global_info["harness:stream"]["interrupted"] == "the stream ended: stopped"


def test_local_radio_captures_back_to_back_gaps_annotated(tmp_path):
    out = tmp_path / "sim"
    assert main(["capture", "sim:", "--freq", "2140 MHz", "--rate", "1 MHz", "--duration", "0.2 s",
                 "--out", str(out)]) == 0
    rec = read_recording(out)
    st = rec.global_info["harness:stream"]
    assert rec.samples.size == 200_000 == st["written"] and st["source"] == "repeated captures"
    step = 50_000  # LOCAL_CHUNK_S of 1 MS/s
    assert [g[0] for g in rec.gaps()] == [step, 2 * step, 3 * step] and st["unknown_gaps"] == 3


def _interrupt(cmd, out, sig, min_bytes):
    p = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert "recording" in p.stdout.readline()
        # wait (bounded) until samples are on disk in the hidden temporary file
        end = time.monotonic() + 60
        while time.monotonic() < end:
            tmp = [f for f in out.parent.iterdir() if f.name.startswith("." + out.name + ".sigmf-data")]
            if tmp and tmp[0].stat().st_size >= min_bytes:
                break
            time.sleep(0.05)
        else:
            pytest.fail("no samples written within 60 s")
        p.send_signal(sig)
        stdout, stderr = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.returncode, stdout, stderr


def test_sigint_mid_stream_leaves_a_valid_recording(tmp_path):
    s = serve(RIGS / "sim-amplifier.yaml", lease_s=5.0)
    try:
        out = tmp_path / "remote"
        cmd = [PY, "-m", "harness.cli", "capture", f"zmq://127.0.0.1:{s.port}?insecure=1", "--freq", "2140 MHz",
               "--rate", "15.36 MHz", "--duration", "600 s", "--format", "sc16", "--out", str(out)]
        rc, stdout, stderr = _interrupt(cmd, out, signal.SIGINT, 8 * 200_000)
        assert rc == 128 + signal.SIGINT, stderr
        rec = read_recording(out)  # checks the SHA-512 over what was written
        validate_file(out)  # and the sigmf package's own validator
        st = rec.global_info["harness:stream"]
        assert st["interrupted"] == "SIGINT received" and st["source"] == "stream"
        assert rec.samples.size == st["written"] >= 200_000
        assert st["written"] + st["lost"] < st["requested_samples"]
        # loss is never hidden: every counted loss has its annotation, and the sum matches
        gaps = [a for a in rec.annotations if a["core:label"] == "overflow gap"]
        assert sum(a["harness:lost_samples"] for a in gaps) == st["lost"] and len(gaps) == st["gaps"]
        assert f"{st['written']} samples written" in stdout
        # the samples are the simulated bench's (not zeros), and the server ended the stream
        assert float(np.mean(np.abs(rec.samples[:100_000]) ** 2)) > 0
        assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]
        end = time.monotonic() + 10
        while s._streams and time.monotonic() < end:
            time.sleep(0.05)
        assert not s._streams
    finally:
        stop(s)


def test_sigterm_on_a_local_radio_leaves_a_valid_recording(tmp_path):
    out = tmp_path / "local"
    cmd = [PY, "-m", "harness.cli", "capture", "sim:", "--freq", "2140 MHz", "--rate", "1 MHz", "--duration",
           "100000 s", "--out", str(out)]
    rc, stdout, stderr = _interrupt(cmd, out, signal.SIGTERM, 8 * 100_000)
    assert rc == 128 + signal.SIGTERM, stderr
    rec = read_recording(out)
    st = rec.global_info["harness:stream"]
    assert st["interrupted"] == "SIGTERM received" and rec.samples.size == st["written"] >= 100_000
    assert len(rec.gaps()) == st["gaps"] == st["written"] // 50_000 - 1 + (st["written"] % 50_000 > 0)


class _RawStream(_ScriptedStream):
    """A stream that also hands out its frames as they came (``read_raw``), as devices.zmq.RemoteStream."""

    def read_raw(self, timeout_s):
        if not self.script:
            self.ended = "stopped"
            return None
        return self._frame(*self.script.pop(0))

    def _frame(self, x, lost):
        body, scale = wire.encode_samples(x, wire.FORMATS["sc16"])
        return wire.FrameHeader(1, 0, 1, 0, 0, x.size, lost, 0.0, scale), memoryview(body.tobytes()), lost

    def read(self, timeout_s):
        raise AssertionError("a ci16_le recording of an sc16 stream reads the frames as they came")


def test_ci16_recording_takes_sc16_frames_as_they_came(tmp_path):
    rng = np.random.default_rng(5)
    chunks = [(0.3 * (rng.standard_normal(1000) + 1j * rng.standard_normal(1000))).astype(np.complex64)
              for _ in range(3)]
    radio = _StreamRadio([(chunks[0], 0), (chunks[1], 40), (chunks[2], 0)])
    radio.s = _RawStream(radio.s.script)
    w = RecordingWriter(tmp_path / "rec", 1e6, 2.14e9, datatype="ci16_le")
    s = sc.record(radio, w, 2900)
    sc.finish(w, s, StreamConfig(2.14e9, 1e6, 30.0), hw="scripted", recorder="test", full_scale_dbm=None,
              context={})
    assert (s.written, s.lost, s.gaps) == (2860, 40, 1)
    rec = read_recording(tmp_path / "rec")  # checks the SHA-512
    validate_file(tmp_path / "rec")
    assert rec.global_info["core:datatype"] == "ci16_le" and rec.samples.size == 2860
    # truth: I and Q each rounded to the nearest multiple of 2^-15, clipped to int16 (full scale 1.0 -> 32767)
    x = np.concatenate(chunks)[:2860]
    q = np.clip(np.rint(x.view(np.float32).astype(np.float64) * 32768), -32768, 32767) / 32768
    truth = q[0::2] + 1j * q[1::2]
    assert np.count_nonzero(np.abs(x.view(np.float32)) >= 1.0) > 0  # the clipping is exercised
    np.testing.assert_array_equal(rec.samples, truth.astype(np.complex64))
    assert [(a["core:sample_start"], a["harness:lost_samples"]) for a in rec.annotations
            if a["core:label"] == "overflow gap"] == [(1000, 40)]
    assert (tmp_path / "rec.sigmf-data").stat().st_size == 2860 * 4


class _CodesStream(_RawStream):
    """A 12-bit board's own codes as sc16 frames with their scale 2^-11 (a Pluto's through a rig server)."""

    def _frame(self, codes, lost):
        h = wire.FrameHeader(1, 0, 1, 0, 0, codes.size // 2, lost, 0.0, 2.0 ** -11)
        return h, memoryview(codes.tobytes()), lost


def test_ci16_recording_shifts_a_board_codes_onto_the_grid(tmp_path, monkeypatch):
    """sc16 frames of a 12-bit board's own codes (scale 2^-11) are written as codes x 16 by integer arithmetic
    (not the checked float path); a code beyond full scale is not wrapped: it goes the checked way, which
    refuses it."""
    codes = np.array([-2048, 2047, 5, -1, 0, 1000], np.int16)
    radio = _StreamRadio([])
    radio.s = _CodesStream([(codes, 0)])
    w = RecordingWriter(tmp_path / "rec", 1e6, 2.14e9, datatype="ci16_le")
    with monkeypatch.context() as m:
        m.setattr(RecordingWriter, "write", lambda self, x: pytest.fail("codes on the grid went the float path"))
        s = sc.record(radio, w, 3)
    sc.finish(w, s, StreamConfig(2.14e9, 1e6, 30.0), hw="scripted", recorder="test", full_scale_dbm=None,
              context={})
    assert s.written == 3
    assert np.fromfile(tmp_path / "rec.sigmf-data", dtype="<i2").tolist() == [-32768, 32752, 80, -16, 0, 16000]
    radio.s = _CodesStream([(np.array([2048, 0], np.int16), 0)])  # 2048 x 2^-11 = 1.0: beyond int16 x 2^-15
    w = RecordingWriter(tmp_path / "over", 1e6, 2.14e9, datatype="ci16_le")
    with pytest.raises(ValueError, match="ci16_le keeps raw 16-bit samples only"):
        sc.record(radio, w, 1)
    w.finish(hw="scripted", recorder="test")
    assert read_recording(tmp_path / "over").samples.size == 0  # nothing of the refused frame written


def test_ci16_writer_refuses_samples_off_the_grid(tmp_path):
    w = RecordingWriter(tmp_path / "rec", 1e6, 1e9, datatype="ci16_le")
    w.write(np.array([0.5, -1.0, 3 / 32768], np.complex64))  # on the grid: taken
    with pytest.raises(ValueError, match="ci16_le keeps raw 16-bit samples only"):
        w.write(np.array([0.1], np.complex64))
    w.finish(hw="x", recorder="test")
    np.testing.assert_array_equal(read_recording(tmp_path / "rec").samples, [0.5, -1.0, 3 / 32768])


def test_remote_stream_recorded_as_ci16(tmp_path):
    s = serve(RIGS / "sim-amplifier.yaml", lease_s=5.0)
    try:
        uri = f"zmq://127.0.0.1:{s.port}?insecure=1"
        out = tmp_path / "raw"
        assert main(["capture", uri, "--freq", "2140 MHz", "--rate", "1 MHz", "--duration", "0.1 s",
                     "--format", "sc16", "--datatype", "ci16_le", "--out", str(out)]) == 0
        rec = read_recording(out)
        st = rec.global_info["harness:stream"]
        assert rec.global_info["core:datatype"] == "ci16_le" and st["lost"] == 0
        assert rec.samples.size == st["written"] == 100_000
        assert (out.parent / "raw.sigmf-data").stat().st_size == 100_000 * 4
        q = rec.samples.view(np.float32) * 32768
        assert np.array_equal(q, np.rint(q)) and float(np.mean(np.abs(rec.samples) ** 2)) > 0
    finally:
        stop(s)
