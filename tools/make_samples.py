#!/usr/bin/env python3
"""Turn camera frames (PNG, JPEG, any image Pillow reads) into accuracy-gate samples.

Each frame becomes one ``sample_NNN.npz`` holding one array named after the model's input:
the frame resized to ``--size``, in ``--layout`` (``nchw``: ``[1, 3, H, W]``, the layout of the
robot's networks; ``nhwc``: ``[1, H, W, 3]``), RGB (or ``--gray``), multiplied by ``--scale``,
then ``(x - mean) / std`` per channel. That is the calibration format, so the folder is what
``accuracy.samples_path`` names (docs/accuracy-gate.md). Frames for the gate must not be the
INT8 calibration frames.

    python tools/make_samples.py --input image --size 640x480 --out /data/gate frames/*.png

Exit codes: 0 written; 1 a frame unreadable or a sample file already there (nothing is ever
overwritten; what was written before stays); 2 bad arguments. Needs numpy and Pillow.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.cache.fsread import read_small
from app.cache.publish import atomic_write_bytes

#: A frame larger than this is refused unread (a 4K PNG is about 25 MB).
MAX_FRAME_BYTES = 256 << 20


def convert(data: bytes, *, size: tuple[int, int] | None, layout: str, gray: bool,
            scale: float, mean: list[float], std: list[float], dtype: str) -> object:
    """One frame's bytes as the model's input array."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("L" if gray else "RGB")
        if size is not None and image.size != size:
            image = image.resize(size, Image.Resampling.BILINEAR)
        pixels = np.asarray(image, dtype=np.float64)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    channels = pixels.shape[2]
    mean_a = np.resize(np.asarray(mean, dtype=np.float64), channels)
    std_a = np.resize(np.asarray(std, dtype=np.float64), channels)
    values = (pixels * scale - mean_a) / std_a
    values = values.transpose(2, 0, 1) if layout == "nchw" else values
    return values[None].astype(dtype)


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give WIDTHxHEIGHT, e.g. 640x480") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: both sides must be positive")
    return width, height


def _floats(text: str) -> list[float]:
    try:
        return [float(_number(v)) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give numbers, comma-separated") from None


def _number(text: str) -> float:
    """``"1/255"`` or ``"0.5"``."""
    top, _, bottom = text.strip().partition("/")
    return float(top) / float(bottom) if bottom else float(top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("frames", nargs="+", type=Path, help="image files, one sample each")
    parser.add_argument("--out", type=Path, required=True, help="the samples folder (created)")
    parser.add_argument("--input", required=True, help="the model input's name")
    parser.add_argument("--size", type=_size, help="WIDTHxHEIGHT to resize to (default: as is)")
    parser.add_argument("--layout", choices=("nchw", "nhwc"), default="nchw")
    parser.add_argument("--gray", action="store_true", help="one channel instead of RGB")
    parser.add_argument("--scale", type=_number, default=1 / 255,
                        help="multiplies the 0-255 pixel values (default 1/255)")
    parser.add_argument("--mean", type=_floats, default=[0.0], help="per channel, after scale")
    parser.add_argument("--std", type=_floats, default=[1.0], help="per channel, after scale")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    args = parser.parse_args(argv)
    if any(s == 0 for s in args.std):
        parser.error("--std: a channel's std is 0")
    import numpy as np

    args.out.mkdir(parents=True, exist_ok=True)
    for number, frame in enumerate(args.frames):
        target = args.out / f"sample_{number:03d}.npz"
        if target.exists() or target.is_symlink():
            print(f"make_samples: {target} exists; it is left alone (choose an empty --out)",
                  file=sys.stderr)
            return 1
        try:
            data = read_small(frame, MAX_FRAME_BYTES, follow_links=True)
            array = convert(data, size=args.size, layout=args.layout, gray=args.gray,
                            scale=args.scale, mean=args.mean, std=args.std, dtype=args.dtype)
        except (OSError, ValueError) as exc:  # PIL's UnidentifiedImageError is an OSError
            print(f"make_samples: {frame}: cannot read it as an image: {exc}", file=sys.stderr)
            return 1
        buffer = io.BytesIO()
        np.savez(buffer, **{args.input: array})
        atomic_write_bytes(target, buffer.getvalue())
        print(f"{target}: {args.input} {list(array.shape)} from {frame}")  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
