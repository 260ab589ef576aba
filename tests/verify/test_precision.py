"""Whether the asked precision took effect, read from ONNX Runtime's profile of one real run."""

from __future__ import annotations

import numpy as np
import pytest

from app.errors import EngineBuildError
from app.values import PrecisionMode
from app.verify.precision import ort_precision_in_effect
from tests.verify.models import build_ort

IMAGE = {"image": np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)}


def test_an_int8_build_runs_its_convolutions_in_int8(tmp_path, corpus):
    engine = build_ort(tmp_path, corpus["aliked"], "aliked", PrecisionMode.INT8,
                    corpus["calibration"] / "aliked")
    effect = ort_precision_in_effect(engine, IMAGE, "int8", "aliked")
    assert (effect.compute_nodes, effect.in_precision, effect.took_effect) == (2, 2, True)
    assert effect.describe() == "2 of 2 compute nodes run in int8"
    assert effect.ops.get("QLinearConv") == 2


def test_an_fp32_artifact_asked_as_int8_did_not_take_effect(tmp_path, corpus):
    """What a silently ignored INT8 flag looks like: accurate, and nothing in int8."""
    engine = build_ort(tmp_path, corpus["aliked"], "aliked", PrecisionMode.FP32)
    effect = ort_precision_in_effect(engine, IMAGE, "int8", "aliked")
    assert (effect.in_precision, effect.took_effect) == (0, False)
    assert effect.as_dict()["took_effect"] is False and effect.compute_nodes == 2
    fp32 = ort_precision_in_effect(engine, IMAGE, "fp32", "aliked")
    assert fp32.took_effect and fp32.describe() == "2 compute nodes in float32"


def test_a_file_that_is_no_artifact_is_a_build_error(tmp_path):
    junk = tmp_path / "x.ort"
    junk.write_bytes(b"junk")
    with pytest.raises(EngineBuildError, match=r"cannot profile x\.ort"):
        ort_precision_in_effect(junk, IMAGE, "int8", "aliked")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.ort"]  # no profile left behind
