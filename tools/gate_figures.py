#!/usr/bin/env python3
"""Print the accuracy gate's figures on networks built like the robot's three.

The networks of tests/verify/networks.py (ALIKED-like, LightGlue-like with a NonZero matches
output, DINOv2-like) are built by the ONNX Runtime backend in fp32, fp16 and int8 (calibrated
on mirrored photographs, and on a constant grey image: the deliberately wrong calibration),
plus an fp32 engine of a copy with one weight changed, and measured by the gate with default
settings on seeded random inputs and on six photographs (scikit-image's). The defaults of the
set and variation figures (app/verify/report.py) are set from these (docs/accuracy-gate.md).

    python tools/gate_figures.py              # the table
    python tools/gate_figures.py --counts     # + the variation figures per sample count

Needs the dev extra (scikit-image for the photographs).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.backends.onnxruntime.sessions import open_engine
from app.config_sections import AccuracyConfig
from app.values import PrecisionMode
from app.verify.accuracy import check_accuracy
from app.verify.report import AccuracyReport
from tests.verify import networks as nets
from tests.verify.models import build_ort
from tests.verify.photos import make_samples, write_photos

FP32, FP16, INT8 = PrecisionMode.FP32, PrecisionMode.FP16, PrecisionMode.INT8
IMAGE = {"aliked": ("image", 32), "dinov2": ("pixels", 56)}


def _data(root: Path) -> dict[str, dict[str, Path]]:
    photos, mirrored = write_photos(root / "photos"), write_photos(root / "mirrored", mirrored=True)
    data: dict[str, dict[str, Path]] = {}
    for name, (tensor, side) in IMAGE.items():
        grey = root / f"{name}_grey"
        grey.mkdir()
        np.save(grey / "grey.npy", np.full((1, 3, side, side), 0.5, np.float32))
        data[name] = {"photos": make_samples(photos, root / f"{name}_photos", tensor, side),
                      "calibration": make_samples(mirrored, root / f"{name}_cal", tensor, side),
                      "grey": grey}
    grey = root / "lightglue_grey"
    grey.mkdir()
    np.savez(grey / "grey.npz", desc0=np.full((1, 24, 16), 0.5, np.float32),
             desc1=np.full((1, 24, 16), 0.5, np.float32))
    data["lightglue"] = {"photos": nets.write_pairs(root / "pairs", 4, seed=1),
                         "calibration": nets.write_pairs(root / "pairs_cal", 3, seed=2), "grey": grey}
    return data


def _measure(root: Path, name: str, onnx: Path, source: Path, precision: PrecisionMode,
             calibration: Path | None, settings: AccuracyConfig) -> AccuracyReport:
    engine = build_ort(root, source, name, precision, calibration, shapes=nets.SHAPES[name])
    runner = open_engine(engine, name)
    try:
        return check_accuracy(onnx, runner, model_name=name, precision=precision,
                              input_shapes=nets.SHAPES[name], settings=settings,
                              calibration_dir=calibration)
    finally:
        runner.close()


def _row(label: str, report: AccuracyReport) -> str:
    cells = []
    for o in report.outputs:
        if o.compare == "points":
            cells.append(f"{o.name} matched {o.matched:.3f}/{o.matched_engine:.3f}")
        else:
            cell = f"{o.name} rel_l2 {o.rel_l2:.2g}"
            if o.variation is not None:
                cell += f" var {o.variation:.2g}"
            if o.neighbours is not None:
                cell += f" nn {o.neighbours:.2f}"
            cells.append(cell)
    verdict = "pass" if report.passed else f"FAIL ({report.failure.output} {report.failure.metric})"  # type: ignore[union-attr]
    return f"| {label} | {'; '.join(cells)} | {verdict} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", action="store_true", help="variation per sample count")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = _data(root)
        models = {"aliked": nets.make_aliked(root / "aliked.onnx"),
                  "lightglue": nets.make_lightglue(root / "lightglue.onnx", matches=True),
                  "dinov2": nets.make_dinov2(root / "dinov2.onnx")}
        print("| network, engine, inputs | figures (worst over samples) | gate |\n|---|---|---|")
        for name, onnx in models.items():
            bad = nets.corrupt(onnx, root / f"{name}_bad.onnx")
            for inputs in ("random", "photos"):
                if name == "lightglue" and inputs == "random":
                    continue  # random descriptors match nothing: the pairs are its samples
                settings = AccuracyConfig(samples_path=data[name]["photos"]
                                            if inputs == "photos" else None)
                for label, source, precision, calibration in (
                        ("fp32", onnx, FP32, None), ("fp16", onnx, FP16, None),
                        ("int8", onnx, INT8, data[name]["calibration"]),
                        ("int8 grey-calibrated", onnx, INT8, data[name]["grey"]),
                        ("fp32, one weight changed", bad, FP32, None)):
                    report = _measure(root, name, onnx, source, precision, calibration, settings)
                    print(_row(f"{name} {label}, {inputs}", report))
        if args.counts:
            print("\n| random samples | dinov2 int8 variation | grey-calibrated |\n|---|---|---|")
            for count in (2, 3, 4, 6, 8, 12):
                settings = AccuracyConfig(random_samples=count)
                good, grey = (_measure(root, "dinov2", models["dinov2"], models["dinov2"], INT8,
                                       data["dinov2"][c], settings)
                              for c in ("calibration", "grey"))
                print(f"| {count} | {good.outputs[0].variation} | {grey.outputs[0].variation} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
