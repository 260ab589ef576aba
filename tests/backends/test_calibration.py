"""Calibration batches (and accuracy samples, read the same way) through the safe reader: a
batch swapped for a FIFO or a link to a device after the folder was listed is a clear error
naming it, never a hang."""

from __future__ import annotations

import numpy as np
import pytest

from app.backends.calibration import CalibrationSet
from app.backends.onnx_model import inspect_model, resolve_profiles
from app.errors import ModelDataError
from tests.helpers import plant, within


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
@pytest.mark.parametrize("kind", ["fifo", "link-to-dev-zero"])
def test_a_batch_swapped_for_no_file_is_refused_at_once(tmp_path, corpus, kind, suffix):
    model = inspect_model(corpus["aliked"])
    profiles = resolve_profiles(model, {}, "aliked")
    batch = np.zeros((1, 3, 64, 64), np.float32)
    path = tmp_path / f"b0{suffix}"
    np.save(path, batch) if suffix == ".npy" else np.savez(path, image=batch)
    batches = CalibrationSet(tmp_path, model, profiles, "aliked")
    assert batches.validate().files == [path]
    plant(path, kind, tmp_path / "outside")  # after the listing: the reader must refuse it
    with pytest.raises(ModelDataError, match=r"b0\.np[yz] is unreadable: .*(FIFO|device)"):
        within(2, batches.validate)
    with pytest.raises(ModelDataError, match=r"b0\.np[yz] is unreadable: .*(FIFO|device)"):
        within(2, lambda: list(batches.batches()))
