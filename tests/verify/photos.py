"""Real photographs for the gate's tests: scikit-image's bundled sample images, written as PNG
files and turned into samples by tools/make_samples.py, as an operator turns camera frames."""

from __future__ import annotations

import contextlib
import importlib.util
import io
from pathlib import Path

from tests.helpers import REPO

#: Six photographs (skimage.data) the gate checks on: a portrait, a cup, a cat, a man with a
#: camera (gray), and a stereo pair of a motorcycle.
NAMES = ("astronaut", "coffee", "chelsea", "camera", "motorcycle_left", "motorcycle_right")


def write_photos(folder: Path, *, mirrored: bool = False) -> list[Path]:
    """The photographs as PNG files in ``folder``; ``mirrored``: flipped left to right, other
    frames of the same scenes (INT8 calibration, which the gate's samples must not be)."""
    import skimage.data
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    left, right, _ = skimage.data.stereo_motorcycle()
    arrays = {"astronaut": skimage.data.astronaut(), "coffee": skimage.data.coffee(),
              "chelsea": skimage.data.chelsea(), "camera": skimage.data.camera(),
              "motorcycle_left": left, "motorcycle_right": right}
    paths = []
    for name in NAMES:
        path = folder / f"{name}.png"
        # At 640x480, as a robot's camera gives them (and quick to write: the stereo pair
        # is 2964x1988).
        image = Image.fromarray(arrays[name][:, ::-1] if mirrored else arrays[name])
        image.resize((640, 480), Image.Resampling.BILINEAR).save(path, compress_level=1)
        paths.append(path)
    return paths


def make_samples(frames: list[Path], out: Path, input_name: str, size: int | tuple[int, int],
                 options: tuple[str, ...] = ()) -> Path:
    """tools/make_samples.py on ``frames`` (in this process; its own test runs it as one),
    resized to ``size`` (a side, or width and height), with more of its ``options``;
    returns ``out``."""
    spec = importlib.util.spec_from_file_location("make_samples", REPO / "tools" / "make_samples.py")
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    width, height = (size, size) if isinstance(size, int) else size
    args = ["--input", input_name, "--size", f"{width}x{height}", "--out", str(out), *options,
            *map(str, frames)]
    with contextlib.redirect_stdout(io.StringIO()):
        assert tool.main(args) == 0
    return out
