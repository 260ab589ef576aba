"""The gate's inputs: seeded random ones at the opt shapes, sample folders, and refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.backends.onnx_model import inspect_model, resolve_profiles
from app.errors import ModelDataError
from app.values import InputProfile
from app.verify.inputs import gate_inputs
from tests.verify.models import make_embedding, make_masked

DYN = InputProfile((1, 1, 64), (1, 16, 64), (1, 64, 64))


def _model(path: Path, shapes=None):
    model = inspect_model(path)
    return model, resolve_profiles(model, shapes or {}, "m")


def test_random_inputs_are_seeded_dtype_correct_at_the_opt_shape(corpus):
    model, profiles = _model(corpus["lightglue"], {"desc0": DYN, "desc1": DYN})
    first = list(gate_inputs(model, profiles, "lightglue", count=3, seed=7).samples())
    again = list(gate_inputs(model, profiles, "lightglue", count=3, seed=7).samples())
    other = list(gate_inputs(model, profiles, "lightglue", count=3, seed=8).samples())
    assert len(first) == 3
    for sample, same in zip(first, again, strict=True):
        for name in ("desc0", "desc1"):
            assert sample[name].shape == (1, 16, 64) and sample[name].dtype == np.float32
            assert sample[name].min() >= 0.0 and sample[name].max() < 1.0
            np.testing.assert_array_equal(sample[name], same[name])
    assert not np.array_equal(first[0]["desc0"], other[0]["desc0"])
    wide = next(gate_inputs(model, profiles, "lightglue", value_range=(-3.0, 3.0)).samples())
    assert wide["desc0"].min() < -1.0 < 1.0 < wide["desc0"].max()


def test_boolean_inputs_get_random_masks(tmp_path):
    model, profiles = _model(make_masked(tmp_path / "masked.onnx"))
    sample = next(gate_inputs(model, profiles, "masked", seed=1).samples())
    assert sample["keep"].dtype == np.bool_ and sample["x"].dtype == np.float32


def test_integer_inputs_need_samples(tmp_path):
    model, profiles = _model(make_embedding(tmp_path / "emb.onnx"))
    with pytest.raises(ModelDataError) as caught:
        gate_inputs(model, profiles, "emb")
    assert "'ids' is int64" in str(caught.value) and "sample inputs" in str(caught.value)
    assert "samples_path" in caught.value.hint


def test_sample_folder_in_the_calibration_format(tmp_path, corpus):
    model, profiles = _model(corpus["lightglue"], {"desc0": DYN, "desc1": DYN})
    folder = tmp_path / "samples"
    folder.mkdir()
    for i in range(2):
        np.savez(folder / f"s{i}.npz", desc0=np.full((1, 5, 64), i, np.float32),
                 desc1=np.ones((1, 9, 64), np.float32))
    inputs = gate_inputs(model, profiles, "lightglue", samples_dir=folder)
    assert inputs.used.kind == "samples" and inputs.used.count == 2 and inputs.used.digest
    samples = list(inputs.samples())
    assert [s["desc0"][0, 0, 0] for s in samples] == [0.0, 1.0]
    np.savez(folder / "s1.npz", desc0=np.zeros((1, 5, 64), np.float32), desc1=np.ones((1, 9, 64), np.float32))
    assert gate_inputs(model, profiles, "lightglue", samples_dir=folder).used.digest != inputs.used.digest


@pytest.mark.parametrize(("write", "words"), [
    (lambda f: np.savez(f / "a.npz", desc0=np.zeros((1, 5, 64), np.float64),
                        desc1=np.zeros((1, 5, 64), np.float32)), ["sample", "float64"]),
    (lambda f: np.savez(f / "a.npz", desc0=np.zeros((1, 500, 64), np.float32),
                        desc1=np.zeros((1, 5, 64), np.float32)), ["shape", "[1, 500, 64]"]),
    (lambda f: (f / "a.npz").write_bytes(b"junk"), ["sample file", "unreadable"]),
])
def test_bad_samples_are_refused_with_the_calibration_checks(tmp_path, corpus, write, words):
    model, profiles = _model(corpus["lightglue"], {"desc0": DYN, "desc1": DYN})
    write(tmp_path)
    with pytest.raises(ModelDataError) as caught:
        list(gate_inputs(model, profiles, "lightglue", samples_dir=tmp_path).samples())
    for word in words:
        assert word in str(caught.value)


def test_empty_sample_folder_and_bad_settings(tmp_path, corpus):
    model, profiles = _model(corpus["aliked"])
    with pytest.raises(ModelDataError, match="no sample inputs in"):
        gate_inputs(model, profiles, "aliked", samples_dir=tmp_path)
    with pytest.raises(ModelDataError, match="at least one sample"):
        gate_inputs(model, profiles, "aliked", count=0)
    with pytest.raises(ModelDataError, match="is empty"):
        gate_inputs(model, profiles, "aliked", value_range=(1.0, 1.0))


def test_the_calibration_batches_are_never_the_samples(tmp_path, corpus):
    model, profiles = _model(corpus["aliked"])
    calibration = corpus["calibration"] / "aliked"
    with pytest.raises(ModelDataError, match="are the INT8 calibration batches"):
        gate_inputs(model, profiles, "aliked", samples_dir=calibration, calibration_dir=calibration)
    copies = tmp_path / "copies"
    copies.mkdir()
    for batch in sorted(calibration.iterdir())[:2]:
        (copies / f"renamed_{batch.name}").write_bytes(batch.read_bytes())
    with pytest.raises(ModelDataError, match="are the INT8 calibration batches"):
        gate_inputs(model, profiles, "aliked", samples_dir=copies, calibration_dir=calibration)
    np.save(copies / "fresh.npy", np.zeros((1, 3, 64, 64), np.float32))  # one new sample: fine
    assert gate_inputs(model, profiles, "aliked", samples_dir=copies,
                       calibration_dir=calibration).used.count == 3
