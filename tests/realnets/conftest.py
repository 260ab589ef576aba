"""The real networks' tier: skipped unless ``ENGINE_INIT_REAL_NETWORKS`` names a folder with
the exports of tools/export_networks.py (docs/realnets.md). The samples are scikit-image's
photographs, made into samples by tools/make_samples.py as an operator makes them from camera
frames; LightGlue's are the exported ALIKED's features of image pairs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.verify.photos import make_samples, write_photos

ENV = "ENGINE_INIT_REAL_NETWORKS"
FILES = ("aliked.onnx", "lightglue.onnx", "dinov2_vpr.onnx")
#: ALIKED's image as the exporter fixes it; DINOv2-VPR's (ImageNet-normalised).
ALIKED_SIZE, DINO_SIZE = (640, 480), (224, 224)
IMAGENET = ("--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225")


def _models() -> Path | None:
    folder = os.environ.get(ENV)
    return Path(folder) if folder else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    folder = _models()
    if folder is None:
        reason = (f"the real networks' tier: set {ENV} to a folder exported by "
                  "tools/export_networks.py (docs/realnets.md)")
    else:
        missing = [name for name in FILES if not (folder / name).is_file()]
        if not missing:
            return
        reason = (f"{ENV}={folder} lacks {', '.join(missing)}: export them with "
                  f"python tools/export_networks.py --out {folder}")
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def models() -> Path:
    folder = _models()
    assert folder is not None
    return folder


def _zoomed(folder: Path, name: str) -> Path:
    """The photograph's centre, 80%, enlarged back to 640x480: the same scene from nearer."""
    from PIL import Image

    with Image.open(folder / f"{name}.png") as image:
        width, height = image.size
        box = (width // 10, height // 10, width - width // 10, height - height // 10)
        out = folder / f"{name}_zoomed.png"
        image.crop(box).resize((width, height), Image.Resampling.BILINEAR).save(out)
    return out


def _features(session: object, sample: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(sample) as data:
        keypoints, _, descriptors = session.run(None, {"image": data["image"]})  # type: ignore[attr-defined]
    return keypoints, descriptors


@pytest.fixture(scope="session")
def data(models: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Samples per model, and a constant grey frame's calibration per model."""
    import onnxruntime as ort
    from PIL import Image

    root = tmp_path_factory.mktemp("realnets")
    photos = write_photos(root / "photos")
    grey_png = root / "grey" / "grey.png"
    grey_png.parent.mkdir()
    Image.new("RGB", ALIKED_SIZE, (128, 128, 128)).save(grey_png)
    paths = {"aliked": make_samples(photos, root / "samples" / "aliked", "image", ALIKED_SIZE),
             "dinov2_vpr": make_samples(photos, root / "samples" / "dinov2_vpr", "pixels",
                                        DINO_SIZE, IMAGENET)}
    calibration = root / "calibration"
    make_samples([grey_png], calibration / "aliked", "image", ALIKED_SIZE)
    make_samples([grey_png], calibration / "dinov2_vpr", "pixels", DINO_SIZE, IMAGENET)
    paths["grey_calibration"] = calibration

    # LightGlue: the exported ALIKED's keypoints and descriptors of image pairs: the
    # motorcycle stereo pair, and two photographs each with a nearer view of itself.
    frames = [photos[4], photos[5], photos[0], _zoomed(root / "photos", "astronaut"),
              photos[2], _zoomed(root / "photos", "chelsea")]
    images = make_samples(frames, root / "pair_images", "image", ALIKED_SIZE)
    session = ort.InferenceSession(str(models / "aliked.onnx"), providers=["CPUExecutionProvider"])
    features = [_features(session, s) for s in sorted(images.glob("*.npz"))]
    pairs = root / "samples" / "lightglue"
    pairs.mkdir()
    for i in range(0, len(features), 2):
        (k0, d0), (k1, d1) = features[i], features[i + 1]
        np.savez(pairs / f"pair_{i // 2}.npz", kpts0=k0, kpts1=k1, desc0=d0, desc1=d1)
    paths["lightglue"] = pairs
    # Its wrong calibration: the grey frame's features, matched with themselves.
    with np.load(calibration / "aliked" / "sample_000.npz") as grey:
        keypoints, _, descriptors = session.run(None, {"image": grey["image"]})
    (calibration / "lightglue").mkdir()
    np.savez(calibration / "lightglue" / "grey.npz", kpts0=keypoints, kpts1=keypoints,
             desc0=descriptors, desc1=descriptors)
    return paths
