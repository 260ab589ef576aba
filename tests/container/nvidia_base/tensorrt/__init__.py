"""Stand-in for the TensorRT Python bindings of NVIDIA's Jetson bases, installed system-wide in
engine-init's CI base image (tests/container/images.py). It is not TensorRT: it has no API.

It reproduces what matters to the image: the real package's ``from .tensorrt import *`` loads
libnvinfer, which needs driver-level libraries such as ``libnvdla_compiler.so``; in the Jetson
images those are empty placeholders that the NVIDIA runtime replaces with the host's by a bind
mount at ``docker run``. So ``import tensorrt`` fails in the dynamic loader during ``docker
build`` (and under ``--runtime runc``), and works once a real library is mounted over the
placeholder. The version is a literal line, as in the real ``__init__.py``.
"""

import ctypes
import sys

DRIVER_LIBRARY = f"/usr/lib/{sys.implementation._multiarch}/tegra/libnvdla_compiler.so"

try:
    ctypes.CDLL(DRIVER_LIBRARY)
except OSError as exc:
    # A Python extension whose shared-library dependency fails to load raises ImportError with
    # the loader's message; the real bindings fail that way.
    raise ImportError(str(exc), name="tensorrt") from None

__version__ = "10.3.0"
