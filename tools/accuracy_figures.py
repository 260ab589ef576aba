#!/usr/bin/env python3
"""Print the accuracy gate's figures for the demo corpus and for real third-party models.

Every model is built by the ONNX Runtime backend in fp32, fp16 and int8 (calibrated on its
calibration data, and once more on all-zero batches, the deliberately wrong calibration), and
each engine is profiled once (how many compute nodes run in the precision asked) and measured
by the gate against the ONNX model on ONNX Runtime's CPU provider:
with the default seeded random inputs and with sample inputs drawn apart from the calibration
data. The default tolerances in app/verify/report.py are set from these figures
(docs/accuracy-gate.md).

    python tools/accuracy_figures.py                  # the demo corpus
    python tools/accuracy_figures.py --third-party    # + PP-OCRv4 (rapidocr) and Silero VAD

The OCR inputs are words drawn with Pillow's built-in font (text-like strokes without Pillow).
``--third-party`` fetches two wheels from PyPI with pip (``rapidocr-onnxruntime==1.4.4`` ships
three PP-OCR models, ``silero-vad==6.2.3`` the Silero VAD model) into a temporary folder and
reads the ONNX files out of them; nothing is installed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.backends.onnxruntime import OnnxRuntimeBackend
from app.backends.onnxruntime.sessions import open_engine, precision_in_effect
from app.config_sections import AccuracyConfig
from app.errors import EngineInitError
from app.values import BuildConfig, InputProfile, PrecisionMode
from app.verify.accuracy import check_accuracy
from tools.demo import build_corpus

Sampler = Callable[[np.random.Generator], dict[str, Any]]


@dataclass
class Case:
    name: str
    onnx: Path
    shapes: dict[str | None, InputProfile]
    sample: Sampler  # one input dict, for calibration and for sample inputs
    random_ok: bool = True  # integer inputs: the gate refuses random inputs


def _write(folder: Path, sampler: Sampler, seed: int, count: int, *, constant: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        arrays = sampler(rng)
        if constant:
            arrays = {k: (np.zeros_like(v) if v.dtype.kind == "f" else v) for k, v in arrays.items()}
        np.savez(folder / f"s{i:03d}.npz", **arrays)
    return folder


_WORDS = ("exit", "door", "dock", "charging", "aisle", "B12", "stop", "slow", "route", "4711",
          "warehouse", "pallet", "lift", "zone", "level", "north", "gate", "07:45", "caution")


def _text_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A synthetic document crop: light paper with dark words in Pillow's built-in font, or
    text-like strokes when Pillow is not installed. Returns CHW in [0, 1]."""
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        img = np.full((3, h, w), 0.92, np.float32)
        for _ in range(int(rng.integers(6, 24))):
            y, x = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
            dy, dx = int(rng.integers(2, max(3, h // 4))), int(rng.integers(1, max(2, w // 10)))
            img[:, y:y + dy, x:x + dx] = 0.2
        return img
    page = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(200, 256, 3)))
    draw = ImageDraw.Draw(page)
    lines = 1 if h <= 64 else int(rng.integers(3, 8))
    for i in range(lines):
        size = int(rng.integers(24, 34)) if h <= 64 else int(rng.integers(14, 30))
        font = ImageFont.load_default(size=size)
        text = " ".join(str(rng.choice(_WORDS)) for _ in range(int(rng.integers(1, 4))))
        y = int(rng.integers(2, 10)) if h <= 64 else int(i * h / lines + rng.integers(0, 10))
        draw.text((int(rng.integers(2, max(3, w // 6))), y), text, font=font,
                  fill=tuple(int(v) for v in rng.integers(0, 60, 3)))
    array = np.asarray(page, np.float32) / 255.0 + rng.normal(0, 0.01, (h, w, 3)).astype(np.float32)
    return np.clip(array, 0, 1).transpose(2, 0, 1)


def _ocr(mean: float, std: float, h: int, w: int) -> Sampler:
    return lambda rng: {"x": ((_text_image(rng, h, w) - mean) / std)[None].astype(np.float32)}


def _audio(rng: np.random.Generator) -> dict[str, Any]:
    t = np.arange(512) / 16000.0
    voice = rng.uniform(0, 0.3) * np.sin(2 * np.pi * rng.uniform(100, 400) * t)
    noise = rng.normal(0, rng.uniform(0.001, 0.05), 512)
    return {"input": (voice + noise)[None].astype(np.float32),
            "state": rng.normal(0, 0.1, (2, 1, 128)).astype(np.float32),
            "sr": np.array(16000, np.int64)}


def demo_cases(root: Path) -> list[Case]:
    paths = build_corpus(root)
    dyn = InputProfile((1, 1, 64), (1, 16, 64), (1, 128, 64))
    return [
        Case("dinov2_vpr", paths["dinov2_vpr"], {None: InputProfile.fixed((1, 3, 32, 32))},
             lambda rng: {"pixels": rng.random((1, 3, 32, 32), dtype=np.float32)}),
        Case("lightglue", paths["lightglue"], {"desc0": dyn, "desc1": dyn},
             lambda rng: {"desc0": rng.standard_normal((1, 16, 64)).astype(np.float32),
                          "desc1": rng.standard_normal((1, 16, 64)).astype(np.float32)}),
        Case("aliked", paths["aliked"], {None: InputProfile.fixed((1, 3, 64, 64))},
             lambda rng: {"image": rng.random((1, 3, 64, 64), dtype=np.float32)}),
    ]


def third_party_cases(root: Path) -> list[Case]:
    wheels = root / "wheels"
    for req in ("rapidocr-onnxruntime==1.4.4", "silero-vad==6.2.3"):
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels),
                        req], check=True)
    models = root / "models"
    models.mkdir(exist_ok=True)
    for wheel in wheels.glob("*.whl"):
        with zipfile.ZipFile(wheel) as zf:
            for name in zf.namelist():
                if name.endswith(".onnx") and ("/models/" in name or name.endswith("/silero_vad.onnx")):
                    (models / Path(name).name).write_bytes(zf.read(name))
    return [
        Case("ppocrv4_det", models / "ch_PP-OCRv4_det_infer.onnx",
             {"x": InputProfile.fixed((1, 3, 320, 320))}, _ocr(0.45, 0.226, 320, 320)),
        Case("ppocr_cls", models / "ch_ppocr_mobile_v2.0_cls_infer.onnx",
             {"x": InputProfile.fixed((1, 3, 48, 192))}, _ocr(0.5, 0.5, 48, 192)),
        Case("ppocrv4_rec", models / "ch_PP-OCRv4_rec_infer.onnx",
             {"x": InputProfile.fixed((1, 3, 48, 320))}, _ocr(0.5, 0.5, 48, 320)),
        Case("silero_vad", models / "silero_vad.onnx",
             {"input": InputProfile.fixed((1, 512)), "state": InputProfile.fixed((2, 1, 128)),
              "sr": InputProfile.fixed(())}, _audio, random_ok=False),
    ]


def measure(case: Case, work: Path, samples: int) -> None:
    calib = _write(work / "calib" / case.name, case.sample, seed=11, count=8)
    wrong = _write(work / "wrong" / case.name, case.sample, seed=11, count=8, constant=True)
    held_out = _write(work / "samples" / case.name, case.sample, seed=23, count=samples)
    backend = OnnxRuntimeBackend()
    builds = [("fp32", PrecisionMode.FP32, None), ("fp16", PrecisionMode.FP16, None),
              ("int8", PrecisionMode.INT8, calib), ("int8 zeros-cal", PrecisionMode.INT8, wrong)]
    for label, precision, cal in builds:
        engine = work / "engines" / f"{case.name}.{label.replace(' ', '_')}.ort"
        engine.parent.mkdir(parents=True, exist_ok=True)
        cfg = BuildConfig(precision=precision, model_name=case.name, engine_path=engine,
                          input_shapes=case.shapes, calibration_dir=cal)
        started = time.perf_counter()
        try:
            backend.compile_engine(case.onnx, cfg)
        except EngineInitError as exc:
            print(f"{case.name:12} {label:15} build failed: {str(exc)[:120]}")
            continue
        build_s = time.perf_counter() - started
        effect = precision_in_effect(engine, case.sample(np.random.default_rng(0)), precision.value)
        print(f"{case.name:12} {label:15} precision in effect: {effect.describe()}")
        runner = open_engine(engine, case.name)
        modes = [("samples", AccuracyConfig(samples_path=held_out))]
        if case.random_ok:
            modes.insert(0, ("random", AccuracyConfig(random_samples=samples)))
        for mode, settings in modes:
            report = check_accuracy(case.onnx, runner, model_name=case.name, precision=precision,
                                    input_shapes=case.shapes, settings=settings, calibration_dir=cal)
            verdict = "pass" if report.passed else f"FAIL {report.failure.metric}"  # type: ignore[union-attr]
            for out in report.outputs:
                print(f"{case.name:12} {label:15} {mode:8} {out.name[:24]:24} rel_l2={out.rel_l2:9.3e} "
                      f"cosine={out.cosine:.6f} max_abs={out.max_abs:9.3e} nonfinite={out.nonfinite} "
                      f"variation={'-' if out.variation is None else f'{out.variation:.3g}'} "
                      f"{verdict} (build {build_s:.1f} s, check {report.duration_s:.2f} s)")
        runner.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--third-party", action="store_true", help="also PP-OCRv4 and Silero VAD")
    parser.add_argument("--samples", type=int, default=8, help="inputs per check")
    parser.add_argument("--only", nargs="*", default=None, help="measure only these models")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="accuracy-figures-") as tmp:
        work = Path(tmp)
        cases = demo_cases(work / "demo")
        if args.third_party:
            cases += third_party_cases(work)
        for case in cases:
            if args.only and case.name not in args.only:
                continue
            measure(case, work, args.samples)


if __name__ == "__main__":
    main()
