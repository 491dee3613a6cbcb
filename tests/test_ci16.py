"""Raw samples as SigMF ``ci16_le``: int16 I/Q with value = sample x 32768, written only when lossless, read back
exactly, passing the sigmf package's validator; ``harness capture --datatype ci16_le`` keeps a board's raw samples."""

from __future__ import annotations

import json

import numpy as np
import pytest

from devices.replay import RecordingError, read_recording, recording_paths, validate_file, write_recording
from harness.cli import main
from harness.outputs.sigmf import load_record


def _grid_samples(n=5000, bits=12, seed=3) -> tuple[np.ndarray, np.ndarray]:
    """Samples of a ``bits``-bit board (k / 2**(bits-1)), and their integer codes k (I and Q)."""
    rng = np.random.default_rng(seed)
    half = 1 << (bits - 1)
    k = rng.integers(-half, half, size=(n, 2))
    x = (k[:, 0] / half + 1j * (k[:, 1] / half)).astype(np.complex64)
    return x, k


def test_raw_samples_round_trip_exactly_and_validate(tmp_path):
    x, k = _grid_samples()
    x[:2] = [1 - 1 / 2048 - 1j, -1 + 0j]  # the full-scale extremes of a 12-bit board
    k[:2] = [[2047, -2048], [-2048, 0]]
    meta = write_recording(tmp_path / "raw", x, 1e6, 2.4e9, hw="test", recorder="test", datatype="ci16_le")
    validate_file(meta)  # the sigmf package's validator, checksum included
    assert json.loads(meta.read_text())["global"]["core:datatype"] == "ci16_le"
    data = recording_paths(meta)[1]
    assert data.stat().st_size == 4 * x.size  # 2 x int16 per sample, half the cf32 size
    raw = np.fromfile(data, "<i2").reshape(-1, 2)
    assert np.array_equal(raw, 16 * k)  # the documented scale: value = sample x 32768
    back = read_recording(meta).samples
    assert back.dtype == np.complex64 and np.array_equal(back, x)


def test_samples_that_are_not_raw_are_refused_and_nothing_is_written(tmp_path):
    x, _ = _grid_samples(100)
    x[37] += np.float32(1e-6)
    with pytest.raises(ValueError, match="sample 37 .* is not a multiple of 1/32768"):
        write_recording(tmp_path / "raw", x, 1e6, 2.4e9, hw="t", recorder="t", datatype="ci16_le")
    with pytest.raises(ValueError, match="within full scale"):
        write_recording(tmp_path / "raw", np.array([1.0 + 0j], np.complex64), 1e6, 2.4e9, hw="t", recorder="t",
                        datatype="ci16_le")
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_raw_recording_is_refused(tmp_path):
    x, _ = _grid_samples(100)
    meta = write_recording(tmp_path / "raw", x, 1e6, 2.4e9, hw="t", recorder="t", datatype="ci16_le")
    data = recording_paths(meta)[1]
    data.write_bytes(data.read_bytes()[:-2])
    with pytest.raises(RecordingError, match=r"raw\.sigmf-data: truncated: 398 bytes"):
        read_recording(meta)


def test_capture_command_keeps_the_simulated_boards_raw_samples(tmp_path, capsys):
    out = tmp_path / "raw"
    assert main(["capture", "sim:", "--freq", "2140 MHz", "--rate", "15.36 MHz", "--samples", "20000",
                 "--out", str(out), "--gain", "40 dB", "--datatype", "ci16_le"]) == 0
    meta = recording_paths(out)[0]
    validate_file(meta)
    r = load_record(meta).record
    assert r.n_samples == 20000 and np.std(r.samples) > 0
    codes = np.concatenate([r.samples.real, r.samples.imag]) * 2048  # the simulated ADC has 12 bits
    assert np.array_equal(codes, np.rint(codes))
    raw = np.fromfile(recording_paths(meta)[1], "<i2")
    assert np.array_equal(raw[0::2] / 32768, r.samples.real.astype(np.float64))
