"""tools/make_samples.py as an operator runs it: camera frames in, gate samples out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from app.backends.calibration import CalibrationSet
from app.backends.onnx_model import inspect_model, resolve_profiles
from tests.helpers import REPO
from tests.verify import networks as nets

TOOL = REPO / "tools" / "make_samples.py"


def _run(*args: object, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, check=False)


def _frames(folder: Path) -> list[Path]:
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i, (size, mode) in enumerate((((80, 60), "RGB"), ((40, 40), "L"))):
        path = folder / f"frame_{i}.{'png' if i else 'jpg'}"
        shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(path)
        paths.append(path)
    return paths


def test_frames_become_samples_the_gate_reads(tmp_path):
    frames = _frames(tmp_path / "frames")
    out = tmp_path / "samples"
    proc = _run("--input", "pixels", "--size", "56x56", "--mean", "0.485,0.456,0.406",
                "--std", "0.229,0.224,0.225", "--out", out, *frames)
    assert proc.returncode == 0, proc.stderr
    files = sorted(out.iterdir())
    assert [f.name for f in files] == ["sample_000.npz", "sample_001.npz"]
    first = np.load(files[0])["pixels"]
    assert first.shape == (1, 3, 56, 56) and first.dtype == np.float32
    resized = np.asarray(Image.open(frames[0]).convert("RGB").resize(
        (56, 56), Image.Resampling.BILINEAR), np.float64) / 255
    expected = (resized - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(first[0].transpose(1, 2, 0), expected, rtol=1e-5, atol=1e-5)
    model = inspect_model(nets.make_dinov2(tmp_path / "d.onnx"), "d")
    profiles = resolve_profiles(model, nets.SHAPES["dinov2"], "d")
    batches = list(CalibrationSet(out, model, profiles, "d", what="sample").batches())
    assert len(batches) == 2  # a gray frame became three equal channels


def test_nothing_is_overwritten_and_bad_frames_are_refused_without_hanging(tmp_path):
    frames = _frames(tmp_path / "frames")
    out = tmp_path / "samples"
    out.mkdir()
    (out / "sample_000.npz").write_bytes(b"someone's")
    proc = _run("--input", "x", "--out", out, *frames)
    assert proc.returncode == 1 and "left alone" in proc.stderr
    assert (out / "sample_000.npz").read_bytes() == b"someone's"
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)  # no writer ever comes: the tool must not wait for one
    huge = tmp_path / "huge.png"
    with open(huge, "wb") as handle:
        handle.truncate(1 << 30)  # sparse: refused by its size before anything is read
    for bad, says in ((text, "cannot read it as an image"), (fifo, "FIFO"),
                      (huge, "more than the"), (Path("/dev/zero"), "device")):
        proc = _run("--input", "x", "--out", tmp_path / f"out_{bad.name}", bad, timeout=10)
        assert proc.returncode == 1, (bad, proc.stderr)
        assert says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert _run("--input", "x", "--size", "big", "--out", out, frames[0]).returncode == 2
    assert _run("--input", "x", "--std", "0", "--out", out, frames[0]).returncode == 2
