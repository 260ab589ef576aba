"""Every TensorRT call whose shape differs between releases, in one place.

=================  ==============================  =============================
what               TensorRT 8.5 / 8.6              TensorRT 10.x
=================  ==============================  =============================
network flags      EXPLICIT_BATCH required         0 (EXPLICIT_BATCH deprecated)
optimization lvl   8.6 only (absent in 8.5)        ``builder_optimization_level``
progress monitor   absent                          ``IProgressMonitor``
ONNX INT64         parsed as INT32 (no INT64)      INT64
ONNX DOUBLE        parsed as FLOAT                 FLOAT
=================  ==============================  =============================

What each release's ONNX parser can import (DeformConv, TopK's K, the opset) is in
:mod:`app.backends.tensorrt.opsupport`. The contract test (tests/backends/tensorrt/
test_contract.py) checks every name used here against the identifiers of the real bindings of
each release.
"""

from __future__ import annotations

import re
from typing import Any

from app.values import PrecisionMode

_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8",
           "UINT8": "uint8", "INT32": "int32", "INT64": "int64", "BOOL": "bool"}


def parse_version(text: str) -> tuple[int, ...]:
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    if match is None:
        raise ValueError(f"not a TensorRT version: {text!r}")
    return tuple(int(g) for g in match.groups() if g is not None)


class TrtApi:
    """The ``tensorrt`` module plus the version it reports."""

    def __init__(self, trt: Any) -> None:
        self.trt = trt
        self.full_version = str(trt.__version__)
        self.version = parse_version(self.full_version)
        self.major = self.version[0]

    @property
    def major_minor(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"

    @property
    def has_progress_monitor(self) -> bool:
        return self.major >= 10

    def create_network(self, builder: Any) -> Any:
        if self.major < 10:
            flag = self.trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH
            return builder.create_network(1 << int(flag))
        return builder.create_network(0)

    def configure(self, config: Any, precision: PrecisionMode, workspace_bytes: int,
                  optimization_level: int) -> None:
        config.set_memory_pool_limit(self.trt.MemoryPoolType.WORKSPACE, workspace_bytes)
        if self.version >= (8, 6):
            config.builder_optimization_level = optimization_level
        if precision in (PrecisionMode.FP16, PrecisionMode.INT8):
            # INT8 keeps FP16 on: layers without INT8 kernels then run in FP16, not FP32.
            config.set_flag(self.trt.BuilderFlag.FP16)
        if precision is PrecisionMode.INT8:
            config.set_flag(self.trt.BuilderFlag.INT8)
        if precision is not PrecisionMode.FP32:
            # Layer types and formats kept in the engine: the engine inspector can then tell
            # which precision each layer runs in (app.backends.tensorrt.inspector). The default keeps names.
            config.profiling_verbosity = self.trt.ProfilingVerbosity.DETAILED
        if precision is PrecisionMode.FP32:
            # TF32 is on by default (Ampere and later, Orin included): 10-bit mantissas in
            # "fp32" matrix products. fp32 means fp32.
            config.clear_flag(self.trt.BuilderFlag.TF32)

    def use_dla(self, config: Any, core: int) -> None:
        config.default_device_type = self.trt.DeviceType.DLA
        config.DLA_core = core
        config.set_flag(self.trt.BuilderFlag.GPU_FALLBACK)

    def engine_dtype(self, onnx_dtype: str) -> str:
        """The numpy dtype name TensorRT's ONNX parser gives a tensor of ``onnx_dtype``."""
        if onnx_dtype == "float64":
            return "float32"
        if onnx_dtype == "int64" and self.major < 10:
            return "int32"
        return onnx_dtype

    def dtype_name(self, dtype: Any) -> str:
        name = str(getattr(dtype, "name", dtype)).rsplit(".", 1)[-1]
        return _DTYPES.get(name, name.lower())

    def is_input(self, engine: Any, name: str) -> bool:
        return bool(engine.get_tensor_mode(name) == self.trt.TensorIOMode.INPUT)
