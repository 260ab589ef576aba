"""The inputs the accuracy gate feeds to the engine and the ONNX model: a sample folder's files
(the calibration format), or seeded random inputs at the ``opt`` shapes; integer inputs and the
calibration batches refused (docs/accuracy-gate.md#settings-and-inputs)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.backends.onnx_model import ModelInterface
from app.cache.hashing import hash_file, sha256_bytes
from app.cache.names import calibration_files
from app.config_sections import DEFAULT_COUNT, DEFAULT_RANGE, DEFAULT_SEED
from app.errors import ModelDataError
from app.values import InputProfile
from app.verify.report import InputsUsed


@dataclass(frozen=True)
class GateInputs:
    used: InputsUsed
    model: ModelInterface
    profiles: dict[str, InputProfile]
    model_name: str

    def samples(self) -> Iterator[dict[str, Any]]:
        if self.used.kind == "samples":
            from app.backends.calibration import CalibrationSet

            folder = Path(self.used.folder or ".")
            yield from CalibrationSet(folder, self.model, self.profiles, self.model_name,
                                      what="sample").batches()
            return
        yield from _random_samples(self.model, self.profiles, self.used)


def gate_inputs(model: ModelInterface, profiles: dict[str, InputProfile], model_name: str, *,
                samples_dir: Path | None = None, calibration_dir: Path | None = None,
                count: int = DEFAULT_COUNT, seed: int = DEFAULT_SEED,
                value_range: Sequence[float] = DEFAULT_RANGE) -> GateInputs:
    if samples_dir is not None:
        files = tuple(calibration_files(samples_dir))
        if not files:
            raise ModelDataError(
                f"{model_name}: no sample inputs in {samples_dir} for the accuracy check",
                hint="add .npz files (one array per input, named after it), or .npy for a "
                     "single-input model")
        _refuse_calibration_copies(model_name, files, calibration_dir)
        digest = _digest(files)
        used = InputsUsed("samples", len(files), folder=str(samples_dir), digest=digest)
        return GateInputs(used, model, profiles, model_name)
    if count < 1:
        raise ModelDataError(f"{model_name}: the accuracy check needs at least one sample, "
                             f"{count} asked", hint="set accuracy.random_samples to 1 or more")
    low, high = float(value_range[0]), float(value_range[1])
    if not low < high:
        raise ModelDataError(f"{model_name}: random input range [{low}, {high}) is empty",
                             hint="give the range as [low, high] with low < high")
    for tensor in model.inputs:
        kind = _kind(tensor.dtype)
        if kind == "int":
            raise ModelDataError(
                f"{model_name}: input {tensor.name!r} is {tensor.dtype}: random values are no "
                "safe input for it (indices, ids or sizes), so the accuracy check needs sample "
                "inputs", hint="set accuracy.samples_path to a folder of .npz files with one "
                               "array per input (the calibration format)")
        if kind == "other":
            raise ModelDataError(
                f"{model_name}: input {tensor.name!r} is {tensor.dtype}, which the accuracy "
                "check cannot generate", hint="give sample inputs (accuracy.samples_path)")
    used = InputsUsed("random", count, seed=seed, low=low, high=high)
    return GateInputs(used, model, profiles, model_name)


def _kind(dtype: str) -> str:
    if dtype in {"float32", "float16", "float64", "bfloat16"}:
        return "float"
    if dtype == "bool":
        return "bool"
    if dtype.startswith(("int", "uint")):
        return "int"
    return "other"


def _random_samples(model: ModelInterface, profiles: dict[str, InputProfile],
                    used: InputsUsed) -> Iterator[dict[str, Any]]:
    import numpy as np

    rng = np.random.default_rng(used.seed)
    low, high = float(used.low or 0.0), float(used.high if used.high is not None else 1.0)
    for _ in range(used.count):
        sample: dict[str, Any] = {}
        for tensor in model.inputs:
            shape = tuple(profiles[tensor.name].opt)
            if _kind(tensor.dtype) == "bool":
                sample[tensor.name] = rng.random(shape) < 0.5
            else:
                values = low + (high - low) * rng.random(shape, dtype=np.float64)
                sample[tensor.name] = values.astype(tensor.dtype)
        yield sample


def _refuse_calibration_copies(model_name: str, files: tuple[Path, ...],
                               calibration_dir: Path | None) -> None:
    calibration = calibration_files(calibration_dir)
    if not calibration or calibration_dir is None:
        return
    try:
        same = os.path.samefile(files[0].parent, calibration_dir)
    except OSError:
        same = False
    if not same:
        known = {_hash(p) for p in calibration}
        same = all(_hash(p) in known for p in files)
    if same:
        raise ModelDataError(
            f"{model_name}: the accuracy samples are the INT8 calibration batches; a check on "
            "the data the scales were fitted to proves nothing about other inputs",
            hint="give samples that were not used for calibration, or leave accuracy.samples_path "
                 "unset for seeded random inputs")


def _hash(path: Path) -> str:
    return hash_file(path, follow_links=True)  # samples a user names: a link to a file is fine


def _digest(files: tuple[Path, ...]) -> str:
    return sha256_bytes("".join(f"{path.name}\0{_hash(path)}\n" for path in files))
