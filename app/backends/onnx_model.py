"""Read an ONNX model's interface and resolve one :class:`InputProfile` per input from the
configured shapes; a contradiction between the model and the config is a ModelDataError."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.cache.fsread import open_binary
from app.errors import ModelDataError
from app.values import InputProfile

Dim = int | str | None


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # numpy dtype name, e.g. "float32"
    dims: tuple[Dim, ...]

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.dims)


@dataclass(frozen=True)
class ModelInterface:
    path: Path
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    opset: int

    def to_json(self) -> dict[str, Any]:
        """As a provenance record keeps it (``onnx_io``, beside ``onnx_sha256``)."""
        return {"inputs": [[t.name, t.dtype, list(t.dims)] for t in self.inputs],
                "outputs": [[t.name, t.dtype, list(t.dims)] for t in self.outputs],
                "opset": self.opset}

    @classmethod
    def from_json(cls, doc: Any, path: Path) -> ModelInterface:
        def tensors(key: str) -> tuple[TensorInfo, ...]:
            out = []
            for name, dtype, dims in doc[key]:
                if not isinstance(name, str) or not isinstance(dtype, str) or not all(
                        d is None or isinstance(d, (int, str)) for d in dims):
                    raise ValueError(f"onnx_io.{key}: {name!r} is not a tensor description")
                out.append(TensorInfo(name, dtype, tuple(dims)))
            return tuple(out)

        try:
            return cls(Path(path), tensors("inputs"), tensors("outputs"), int(doc["opset"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"onnx_io is not an ONNX interface ({exc})") from exc


def _tensor_info(value_info: Any) -> TensorInfo:
    from onnx import helper

    ttype = value_info.type.tensor_type
    dims: list[Dim] = []
    for d in ttype.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or None)
    try:
        dtype = helper.tensor_dtype_to_np_dtype(ttype.elem_type).name
    except (KeyError, TypeError, ValueError):
        dtype = f"onnx:{ttype.elem_type}"
    return TensorInfo(value_info.name, dtype, tuple(dims))


#: Interfaces read in this process, by the file's stat: no second parse for the record.
_READ: dict[tuple[str, int, int, int, int], ModelInterface] = {}


def inspect_model(path: Path, model_name: str = "") -> ModelInterface:
    try:
        st = os.stat(path)
        key = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        key = None
    if key is not None and key in _READ:
        return _READ[key]
    interface = _inspect(path, model_name)
    if key is not None:
        _READ[key] = interface
    return interface


def load_onnx(path: Path, *, external_data: bool = True) -> Any:
    """The ``onnx.ModelProto`` at ``path`` through the safe reader (a link is followed)."""
    import onnx

    with open_binary(path, follow_links=True) as handle:
        model = onnx.load_model(handle, load_external_data=False)
    if external_data:  # onnx opens these itself; the pinned 1.23 refuses all but regular files
        onnx.load_external_data_for_model(model, str(Path(path).parent))
    return model


def _inspect(path: Path, model_name: str) -> ModelInterface:
    import onnx

    label = f"{model_name}: " if model_name else ""
    hint = "re-export the model, or check that the file was copied completely"
    try:
        model = load_onnx(path)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeWarning, ValueError...
        raise ModelDataError(f"{label}{path} is not a readable ONNX model "
                             f"({type(exc).__name__}: {str(exc)[:200]})", hint=hint) from exc
    if not model.graph.node and not model.graph.output:
        raise ModelDataError(f"{label}{path} holds no ONNX graph", hint=hint)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelDataError(f"{label}{path} fails the ONNX checker: {str(exc)[:300]}",
                             hint=hint) from exc
    initializers = {init.name for init in model.graph.initializer}
    inputs = tuple(_tensor_info(v) for v in model.graph.input if v.name not in initializers)
    outputs = tuple(_tensor_info(v) for v in model.graph.output)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return ModelInterface(Path(path), inputs, outputs, opset)


def resolve_profiles(
    model: ModelInterface, shapes: dict[str | None, InputProfile], model_name: str
) -> dict[str, InputProfile]:
    """One profile per model input: the configured one, else the model's static dims."""
    names = [t.name for t in model.inputs]
    given = dict(shapes)
    if None in given:
        if len(model.inputs) != 1:
            raise ModelDataError(
                f"{model_name}: expected_input_shape is for single-input models, but the model "
                f"has inputs {names}", hint="use input_shapes with one entry per input")
        given[names[0]] = given.pop(None)
    unknown = sorted(k for k in given if k not in names)  # type: ignore[type-var]
    if unknown:
        raise ModelDataError(f"{model_name}: input_shapes names {unknown}, but the model's inputs "
                             f"are {names}", hint="use the model's input names")
    resolved: dict[str, InputProfile] = {}
    for tensor in model.inputs:
        profile = given.get(tensor.name)
        if profile is None:
            if not tensor.is_static:
                raise ModelDataError(
                    f"{model_name}: input {tensor.name!r} has dynamic dimensions "
                    f"{list(tensor.dims)} that the config leaves open",
                    hint=f"add input_shapes.{tensor.name} with min/opt/max")
            resolved[tensor.name] = InputProfile.fixed(tuple(int(d) for d in tensor.dims))  # type: ignore[arg-type]
            continue
        _check_against_model(model_name, tensor, profile)
        resolved[tensor.name] = profile
    return resolved


def _check_against_model(model_name: str, tensor: TensorInfo, profile: InputProfile) -> None:
    if len(profile.opt) != len(tensor.dims):
        raise ModelDataError(
            f"{model_name}: input {tensor.name!r} has {len(tensor.dims)} dimensions "
            f"{list(tensor.dims)} but the config gives {len(profile.opt)}: {list(profile.opt)}",
            hint="make the configured shape match the model")
    for i, dim in enumerate(tensor.dims):
        if isinstance(dim, int) and not (profile.min[i] == profile.opt[i] == profile.max[i] == dim):
            raise ModelDataError(
                f"{model_name}: input {tensor.name!r} dimension {i} is fixed to {dim} in the "
                f"model, but the config asks for {profile.min[i]}..{profile.max[i]}",
                hint=f"set dimension {i} to {dim}, or export the model with that axis dynamic")
