"""The build half of the TensorRT stand-in: parser, network, profiles, builder config, timing
cache and ``build_serialized_network``. See :mod:`tests.backends.tensorrt.fake_tensorrt`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from app.backends.onnx_model import inspect_model
from tests.backends.tensorrt.fake_tensorrt import ITEM, FakeTensorRT, Strict, get

_ONNX_TO_TRT = {"float32": "FLOAT", "float16": "HALF", "float64": "FLOAT", "int32": "INT32",
                "int64": "INT64", "int8": "INT8", "uint8": "UINT8", "bool": "BOOL"}
_TIMING_MAGIC = b"TC1|"
#: ONNX node -> the layer type TensorRT's inspector reports for it (others: PointWiseV2).
_LAYER_TYPES = {"Conv": "CaskConvolution", "MatMul": "CaskGemmMatrixMultiply",
                "Gemm": "CaskGemmMatrixMultiply"}
#: ONNX nodes that TensorRT hands to its Myelin compiler in a transformer
_MYELIN = {"MatMul", "Gemm", "Softmax", "LayerNormalization", "ReduceMean", "Pow", "Sqrt", "Div",
           "Erf", "Add", "Sub", "Mul", "Transpose", "Reshape"}
#: Formats as the inspector words them (with an execution context it gives the long forms).
_FORMATS = {"INT8": "Four wide channel vectorized row major Int8 format",
            "FP16": "Channel major FP16 format where channel % 8 == 0",
            "FP32": "Row major linear FP32"}


class ITensor(Strict):
    """``dims`` per axis: an int, ``[input, axis]`` for a size that follows an input's, or
    None where the size depends on the data."""

    def __init__(self, fake: FakeTensorRT, name: str, dims: list[Any], dtype: str) -> None:
        super().__init__(fake)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "shape", tuple(d if isinstance(d, int) else -1 for d in dims))
        object.__setattr__(self, "dtype", getattr(get(fake.module, "DataType"), dtype))
        object.__setattr__(self, "_dims", dims)


class ILayer(Strict):
    """A layer named after its ONNX node, as the parser names them; ``precision`` and the
    output types are what precision constraints set."""

    _settable = frozenset({"precision"})

    def __init__(self, fake: FakeTensorRT, name: str, op: str) -> None:
        super().__init__(fake)
        object.__setattr__(self, "_op", op)  # the ONNX node's
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "precision", get(fake.module, "DataType").FLOAT)
        object.__setattr__(self, "_precision_set", False)
        object.__setattr__(self, "_output_types", {})

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "precision":
            object.__setattr__(self, "_precision_set", True)

    @property
    def num_outputs(self) -> int:
        return 1

    def set_output_type(self, index: int, dtype: Any) -> None:
        get(self, "_output_types")[index] = dtype.name

    def _fp32(self) -> bool:
        """Constrained to FP32: its precision set to FLOAT and its output too."""
        return bool(get(self, "_precision_set") and get(self, "precision").name == "FLOAT"
                    and get(self, "_output_types").get(0) == "FLOAT")


class INetworkDefinition(Strict):
    def __init__(self, fake: FakeTensorRT, flags: int) -> None:
        super().__init__(fake)
        object.__setattr__(self, "_flags", flags)
        object.__setattr__(self, "_inputs", [])
        object.__setattr__(self, "_outputs", [])
        object.__setattr__(self, "_nodes", [])
        object.__setattr__(self, "_layers", [])
        object.__setattr__(self, "_topk", [])

    @property
    def num_inputs(self) -> int:
        return len(get(self, "_inputs"))

    def get_input(self, index: int) -> ITensor:
        return get(self, "_inputs")[index]  # type: ignore[no-any-return]

    @property
    def num_layers(self) -> int:
        return len(get(self, "_nodes"))

    def get_layer(self, index: int) -> ILayer:
        return get(self, "_layers")[index]  # type: ignore[no-any-return]


class ParserError(Strict):
    def __init__(self, fake: FakeTensorRT, code: int, node: int, desc: str) -> None:
        super().__init__(fake)
        object.__setattr__(self, "_error", (code, node, desc))

    def code(self) -> int:
        return get(self, "_error")[0]  # type: ignore[no-any-return]

    def node(self) -> int:
        return get(self, "_error")[1]  # type: ignore[no-any-return]

    def desc(self) -> str:
        return get(self, "_error")[2]  # type: ignore[no-any-return]


class OnnxParser(Strict):
    def __init__(self, fake: FakeTensorRT, network: INetworkDefinition, logger: Any) -> None:
        super().__init__(fake)
        object.__setattr__(self, "_network", network)
        object.__setattr__(self, "_logger", logger)
        object.__setattr__(self, "_errors", [])

    def _dtype(self, onnx_dtype: str) -> str:
        fake = get(self, "_fake")
        mapped = _ONNX_TO_TRT[onnx_dtype]
        if mapped == "INT64" and fake.version < (10, 0):
            mapped = "INT32"  # TensorRT 8 has no INT64: onnx-tensorrt casts down
            fake.log(get(self, "_logger"), "WARNING", "Your ONNX model has been generated with "
                     "INT64 weights, while TensorRT does not natively support INT64. Attempting "
                     "to cast down to INT32.")
        return mapped

    def parse_from_file(self, path: str) -> bool:
        fake, network = get(self, "_fake"), get(self, "_network")
        fake.calls.append(("parse_from_file", path))
        if fake.parser_errors:
            object.__setattr__(self, "_errors", [ParserError(fake, *e) for e in fake.parser_errors])
            return False
        if fake.version < (10, 0) and not get(network, "_flags") & 1:
            object.__setattr__(self, "_errors", [ParserError(fake, 4, -1, "network must be explicit batch")])
            return False
        model = inspect_model(Path(path))
        symbols = {d: [t.name, i] for t in model.inputs for i, d in enumerate(t.dims) if isinstance(d, str)}
        inputs = [ITensor(fake, t.name, [d if isinstance(d, int) else [t.name, i]
                                         for i, d in enumerate(t.dims)], self._dtype(t.dtype))
                  for t in model.inputs]
        outputs = [ITensor(fake, t.name, [d if isinstance(d, int) else symbols.get(d) for d in t.dims],
                           self._dtype(t.dtype)) for t in model.outputs]
        object.__setattr__(network, "_inputs", inputs)
        object.__setattr__(network, "_outputs", outputs)
        object.__setattr__(network, "_source", path)  # what a computing engine runs
        import onnx
        from onnx import numpy_helper

        graph = onnx.load(path, load_external_data=False).graph
        if not self._plugins(graph.node):
            return False
        named = [(n.name or f"node{i}", n.op_type) for i, n in enumerate(graph.node)]
        object.__setattr__(network, "_nodes", named)
        object.__setattr__(network, "_layers", [ILayer(fake, *node) for node in named])
        ks = {t.name: int(numpy_helper.to_array(t).reshape(-1)[0]) for t in graph.initializer
              if t.dims in ([1], [])}
        object.__setattr__(network, "_topk", [ks[n.input[1]] for n in graph.node
                                              if n.op_type == "TopK" and n.input[1] in ks])
        return True

    def _plugins(self, nodes: Any) -> bool:
        """``DeformConv``: no importer on 8.x, so the parser's plugin fallback looks for a
        plugin named DeformConv and finds none (onnx-tensorrt 8.6-GA ModelImporter.cpp:167,
        builtin_op_importers.cpp:5405); from 10.1 the ModulatedDeformConv2d plugin, which
        the registry holds only after init_libnvinfer_plugins (10.1-GA
        importerUtils.cpp:1101-1129)."""
        fake = get(self, "_fake")
        for index, node in enumerate(nodes):
            if node.op_type != "DeformConv":
                continue
            if fake.version < (10, 1):
                fake.log(get(self, "_logger"), "INFO", "No importer registered for op: "
                         "DeformConv. Attempting to import as plugin.")
                desc = ("Assertion failed: creator && \"Plugin not found, are the plugin name, "
                        "version, and namespace correct?\"")
            elif "ModulatedDeformConv2d" not in fake.plugin_registry:
                desc = "ModulatedDeformConv2d plugin was not found in the plugin registry!"
            else:
                continue
            object.__setattr__(self, "_errors", [ParserError(fake, 8, index, desc)])
            return False
        return True

    @property
    def num_errors(self) -> int:
        return len(get(self, "_errors"))

    def get_error(self, index: int) -> ParserError:
        return get(self, "_errors")[index]  # type: ignore[no-any-return]


class IOptimizationProfile(Strict):
    def __init__(self, fake: FakeTensorRT) -> None:
        super().__init__(fake)
        object.__setattr__(self, "_shapes", {})

    def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
        get(self, "_fake").calls.append(("set_shape", name, tuple(lo), tuple(opt), tuple(hi)))
        get(self, "_shapes")[name] = (tuple(lo), tuple(opt), tuple(hi))


class ITimingCache(Strict):
    def __init__(self, fake: FakeTensorRT, device: bytes, entries: list[bytes]) -> None:
        super().__init__(fake)
        object.__setattr__(self, "_device", device)
        object.__setattr__(self, "_entries", entries)

    def combine(self, other: ITimingCache, ignore_mismatch: bool) -> bool:
        get(self, "_fake").calls.append(("combine", get(other, "_entries")))
        if get(other, "_device") != get(self, "_device") and not ignore_mismatch:
            return False
        get(self, "_entries").extend(get(other, "_entries"))
        return True

    def serialize(self) -> bytes:
        return _TIMING_MAGIC + get(self, "_device") + b"|" + b",".join(get(self, "_entries"))


class IBuilderConfig(Strict):
    _settable = frozenset({"int8_calibrator", "DLA_core", "default_device_type", "progress_monitor",
                           "builder_optimization_level", "max_workspace_size",
                           "profiling_verbosity"})

    def __init__(self, fake: FakeTensorRT, logger: Any) -> None:
        super().__init__(fake)
        for name, value in {"_logger": logger, "_flags": {"TF32"}, "_profiles": [], "_timing": None,
                            "_calibration_profile": None, "int8_calibrator": None, "DLA_core": -1,
                            "default_device_type": get(fake.module, "DeviceType").GPU,
                            "builder_optimization_level": 3, "progress_monitor": None,
                            "profiling_verbosity":
                                get(fake.module, "ProfilingVerbosity").LAYER_NAMES_ONLY}.items():
            object.__setattr__(self, name, value)

    def set_memory_pool_limit(self, pool: Any, size: int) -> None:
        get(self, "_fake").calls.append(("set_memory_pool_limit", pool.name, size))

    def set_flag(self, flag: Any) -> None:
        get(self, "_flags").add(flag.name)

    def clear_flag(self, flag: Any) -> None:
        get(self, "_flags").discard(flag.name)

    def get_flag(self, flag: Any) -> bool:
        return flag.name in get(self, "_flags")

    def get_device_type(self, layer: ILayer) -> Any:
        return get(self, "default_device_type")  # no layer is placed on its own

    def can_run_on_DLA(self, layer: ILayer) -> bool:
        """A DLA runs FP16/INT8 layers, of the ops it has (``not_on_dla``: the ops it lacks)."""
        return bool(get(self, "_flags") & {"FP16", "INT8"}) and get(layer, "_op") not in get(
            self, "_fake").not_on_dla

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        get(self, "_profiles").append(profile)
        return len(get(self, "_profiles")) - 1

    def set_calibration_profile(self, profile: IOptimizationProfile) -> bool:
        get(self, "_fake").calls.append(("set_calibration_profile", dict(get(profile, "_shapes"))))
        object.__setattr__(self, "_calibration_profile", profile)
        return True

    def get_calibration_profile(self) -> IOptimizationProfile | None:
        return get(self, "_calibration_profile")  # type: ignore[no-any-return]

    def create_timing_cache(self, blob: Any) -> ITimingCache | None:
        fake, data = get(self, "_fake"), bytes(memoryview(blob))
        fake.calls.append(("create_timing_cache", data))
        if not data:
            return ITimingCache(fake, fake.device_props.encode(), [])
        if not data.startswith(_TIMING_MAGIC) or data.count(b"|") < 2:
            fake.log(get(self, "_logger"), "ERROR", "Timing cache: the serialized data is corrupt")
            return None
        device, _, entries = data[len(_TIMING_MAGIC):].partition(b"|")
        return ITimingCache(fake, device, [e for e in entries.split(b",") if e])

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        fake = get(self, "_fake")
        if get(cache, "_device") != fake.device_props.encode() and not ignore_mismatch:
            return False  # made on a device with other properties: not attached
        object.__setattr__(self, "_timing", cache)
        return True

    def get_timing_cache(self) -> ITimingCache | None:
        return get(self, "_timing")  # type: ignore[no-any-return]


def _volume(shape: tuple[int, ...]) -> int:
    total = 1
    for dim in shape:
        total *= dim
    return total


class Builder(Strict):
    def __init__(self, fake: FakeTensorRT, logger: Any) -> None:
        super().__init__(fake)
        object.__setattr__(self, "_logger", fake.logger_for(self, logger))
        object.__setattr__(self, "_device", fake.gpu.current())
        fake.calls.append(("builder", fake.gpu.current()))

    @property
    def num_DLA_cores(self) -> int:
        return get(self, "_fake").dla_cores  # type: ignore[no-any-return]

    def create_network(self, flags: int) -> INetworkDefinition:
        get(self, "_fake").calls.append(("create_network", flags))
        return INetworkDefinition(get(self, "_fake"), flags)

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig(get(self, "_fake"), get(self, "_logger"))

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile(get(self, "_fake"))

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> bytes | None:
        fake, logger = get(self, "_fake"), get(self, "_logger")
        flags = get(config, "_flags")
        fake.calls.append(("build", sorted(flags)))
        fake.calls.append(("build_device", get(self, "_device"), fake.gpu.current()))
        if fake.on_build is not None:
            fake.on_build()
        fake.log(logger, "INFO", "[MemUsageChange] Init builder kernel library: CPU +1, GPU +0")
        for tactic in range(3):  # a real build logs thousands of these
            fake.log(logger, "VERBOSE", f"Tactic: 0x{tactic:016x} Time: 0.0123")
        inputs = get(network, "_inputs")
        profiles = get(config, "_profiles")
        if any(-1 in t.shape for t in inputs) and not profiles:
            fake.log(logger, "ERROR", "Network has dynamic or shape inputs, but no optimization profile")
            return None
        if "INT8" in flags and get(config, "int8_calibrator") is not None \
                and not self._calibrate(network, config):
            return None
        monitor = get(config, "progress_monitor") if fake.has_monitor else None
        if monitor is not None and not self._monitor(monitor):
            fake.log(logger, "ERROR", "Builder was cancelled by the progress monitor")
            return None
        if fake.fail_build:
            fake.log(logger, "ERROR", "out of memory while building")
            return None
        if not self._checks(network, flags):
            return None
        dla = self._dla_core(config)
        if dla is None:
            return None
        timing = get(config, "_timing")
        if timing is not None:
            get(timing, "_entries").append(b"[timings]")
        first = get(profiles[0], "_shapes") if profiles else {}
        return json.dumps({
            "inputs": [[t.name, get(t, "_dims"), t.dtype.name] for t in inputs],
            "outputs": [[t.name, get(t, "_dims"), t.dtype.name] for t in get(network, "_outputs")],
            "profiles": {k: [list(s) for s in v] for k, v in first.items()},
            "flags": sorted(flags), "dla": dla, "device": get(self, "_device"),
            "verbosity": get(config, "profiling_verbosity").name,
            "layers": self._layers(network, flags),
            "plugins": ["ModulatedDeformConv2d"] if any(
                op == "DeformConv" for _, op in get(network, "_nodes")) else [],
            "onnx": get(network, "_source"),
        }).encode()

    def _checks(self, network: INetworkDefinition, flags: set[str]) -> bool:
        """TopK's K limit (TensorRT v8.6.1 include/NvInfer.h:3546 "up to 3840"; onnx-tensorrt
        10.1-GA docs/operators.md:207 "less than 3840"), and TensorRT's layernorm warning for a
        decomposed LayerNorm left in FP16 (NVIDIA/TensorRT#2781)."""
        fake, logger = get(self, "_fake"), get(self, "_logger")
        limit = 3839 if fake.version >= (10, 0) else 3840
        if any(k > limit for k in get(network, "_topk")):
            fake.log(logger, "ERROR", "ITopKLayer: K exceeds the maximum value allowed (3840)")
            return False
        layers = get(network, "_layers")
        ops = [get(layer, "_op") for layer in layers]
        chain = ["ReduceMean", "Sub", "Pow", "ReduceMean", "Add", "Sqrt", "Div"]
        starts = [i for i in range(len(ops)) if ops[i:i + len(chain)] == chain]
        constrained = bool(flags & {"OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"})
        if "FP16" in flags and any(not (constrained and all(
                layer._fp32() for layer in layers[i:i + len(chain)])) for i in starts):
            fake.log(logger, "WARNING", "Running layernorm after self-attention in FP16 may cause "
                     "overflow. Exporting the model to the latest available ONNX opset (later "
                     "than opset 17) to use the INormalizationLayer, or forcing layernorm layers "
                     "to run in FP32 precision can help with preserving accuracy.")
        return True

    def _layers(self, network: INetworkDefinition, flags: set[str]) -> list[dict[str, Any]]:
        """What the inspector shows of each layer: compute layers in the narrowest precision
        the flags allow (or ``layer_format``), the others in FP16 when allowed. A network with
        attention (Softmax) goes to Myelin: on 8.x one opaque ``Myelin`` ForeignNode layer for
        its MatMul/Softmax/normalization nodes (NVIDIA/TensorRT#2576); on 10.x ``gemm`` and
        ``kgen`` kernels with bare formats ("Half", "Float", "Int8"; TREx trex/colors.py:66,78-79,
        activations.py:75-92), GEMMs in ``gemm_format`` when given."""
        fake = get(self, "_fake")
        narrow = "INT8" if "INT8" in flags else "FP16" if "FP16" in flags else "FP32"
        wide = "FP16" if "FP16" in flags else "FP32"
        nodes = get(network, "_nodes")
        myelin = any(op == "Softmax" for _, op in nodes)
        bare = {"INT8": "Int8", "FP16": "Half", "FP32": "Float"}
        layers: list[dict[str, Any]] = []
        fused: list[str] = []
        for name, op in nodes:
            if myelin and op in _MYELIN and fake.version < (10, 0):
                fused.append(name)
                continue
            if myelin and op in _MYELIN:
                kind = "gemm" if op in _LAYER_TYPES else "kgen"
                fmt = (fake.gemm_format or bare[narrow]) if op in _LAYER_TYPES else bare[wide]
            else:
                kind = _LAYER_TYPES.get(op, "PointWiseV2")
                fmt = (fake.layer_format or _FORMATS[narrow]) if op in _LAYER_TYPES else _FORMATS[wide]
            layers.append({"Name": name, "LayerType": kind,
                           "Inputs": [{"Name": f"{name}:0", "Format/Datatype": fmt}]})
        if fused:
            layers.append({"Name": "{ForeignNode[" + fused[0] + "..." + fused[-1] + "]}",
                           "LayerType": "Myelin", "Inputs": [{"Name": f"{fused[0]}:0",
                                                               "Format/Datatype": _FORMATS[wide]}]})
        return layers

    def _monitor(self, monitor: Any) -> bool:
        fake = get(self, "_fake")
        fake.callback(monitor, "IProgressMonitor", "phase_start", None, "Building engine", None, fake.steps)
        for step in range(fake.steps):
            if fake.on_step is not None:
                fake.on_step(step)
            if not fake.callback(monitor, "IProgressMonitor", "step_complete", False,
                                 "Building engine", step):
                return False
        fake.callback(monitor, "IProgressMonitor", "phase_finish", None, "Building engine")
        return True

    def _dla_core(self, config: IBuilderConfig) -> int | None:
        """The DLA core the engine runs on, -1 for the GPU, None when the build fails. A DLA runs
        FP16/INT8 on fixed shapes (a profile's min = max) only."""
        fake, flags = get(self, "_fake"), get(config, "_flags")
        if get(config, "default_device_type").name != "DLA":
            return -1
        profiles = get(config, "_profiles")
        ranges = get(profiles[0], "_shapes").values() if profiles else ()
        if flags & {"FP16", "INT8"} and all(lo == hi for lo, _, hi in ranges):
            return get(config, "DLA_core")  # type: ignore[no-any-return]
        if "GPU_FALLBACK" in flags:
            fake.log(get(self, "_logger"), "WARNING", "Layer cannot run on DLA, falling back to GPU")
            return -1  # every layer on the GPU, and nothing says so but that warning
        fake.log(get(self, "_logger"), "ERROR", "DLA supports FP16/INT8 static shapes only")
        return None

    def _calibrate(self, network: INetworkDefinition, config: IBuilderConfig) -> bool:
        """Feed batches as TensorRT does: at the calibration profile's (else profile 0's) OPT
        shape, reading each buffer through its device pointer, whatever its real size."""
        import numpy as np

        fake, logger, calib = get(self, "_fake"), get(self, "_logger"), get(config, "int8_calibrator")
        profile = get(config, "_calibration_profile") or (get(config, "_profiles") or [None])[0]
        shapes = {t.name: (get(profile, "_shapes")[t.name][1] if -1 in t.shape else t.shape)
                  for t in get(network, "_inputs")}
        dtypes = {t.name: t.dtype.name for t in get(network, "_inputs")}
        owner = "IInt8EntropyCalibrator2"
        fake.callback(calib, owner, "get_batch_size", -1)
        cached = fake.callback(calib, owner, "read_calibration_cache", None,
                               convert=lambda r: None if r is None else bytes(memoryview(r)))
        if cached:
            return True
        fed = 0
        while True:
            pointers = fake.callback(calib, owner, "get_batch", None, list(shapes),
                                     convert=lambda r: None if not r else [int(p) for p in r])
            if pointers is None:
                break
            for (name, shape), ptr in zip(shapes.items(), pointers, strict=True):
                size, np_dtype = ITEM[dtypes[name]]
                data, have = fake.gpu.read(ptr, _volume(shape) * size)
                if have < len(data):
                    fake.calls.append(("overread", name, have, len(data)))
                batch = np.frombuffer(data, dtype=np_dtype).reshape(shape)
                fake.calibration_seen.setdefault(name, []).append(batch)
            fed += 1
        fake.batches += fed
        if fed == 0:
            fake.log(logger, "ERROR", "Calibration failure occurred with no scaling factors detected")
            return False
        fake.callback(calib, owner, "write_calibration_cache", None,
                      memoryview(b"calibration-table-" + str(fed).encode()))
        return True
