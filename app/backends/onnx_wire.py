"""An ONNX model's inputs and outputs read from its protobuf encoding, without ``onnx``.

Checking a fleet candidate needs only the model's interface, and the model is the one the
reference robot built from (same sha256), which ``onnx.checker`` passed there. Loading it with
``onnx`` would cost the import (0.6-0.9 s, most of it ml_dtypes) and a parse and copy of every
weight; here the file is walked field by field and each weight is skipped with a seek, so a
200 MB model costs a few small reads. Gives the :class:`ModelInterface` that
:func:`app.backends.onnx_model.inspect_model` gives for the same file (tests compare both).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from app.backends.onnx_model import Dim, ModelInterface, TensorInfo
from app.errors import ModelDataError

__all__ = ["read_interface"]

# TensorProto.DataType -> the numpy dtype name onnx.helper.tensor_dtype_to_np_dtype gives.
_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
           8: "object", 9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64",
           14: "complex64", 15: "complex128", 16: "bfloat16", 17: "float8_e4m3fn",
           18: "float8_e4m3fnuz", 19: "float8_e5m2", 20: "float8_e5m2fnuz", 21: "uint4", 22: "int4",
           23: "float4_e2m1fn", 24: "float8_e8m0fnu", 25: "uint2", 26: "int2", 27: "float6_e2m3fn",
           28: "float6_e3m2fn"}  # onnx 1.23; a later type reads as "onnx:<number>"
# Field numbers of onnx.proto: ModelProto.graph and .opset_import; GraphProto.initializer,
# .input, .output and .sparse_initializer; TensorProto.name; SparseTensorProto.values.
_GRAPH, _OPSET = 7, 8
_INITIALIZER, _INPUT, _OUTPUT, _SPARSE = 5, 11, 12, 15
_TENSOR_NAME, _SPARSE_VALUES = 8, 1
_LEN = 2
Message = dict[int, list[int | bytes]]


def _varint(data: BinaryIO) -> int:
    value = shift = 0
    while True:
        byte = data.read(1)
        if not byte or shift > 63:
            raise ValueError("a truncated or overlong varint")
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7


def _fields(data: BinaryIO, end: int) -> Iterator[tuple[int, int, int]]:
    """(field number, wire type, value) up to offset ``end``: the value of a varint, else the
    size of the bytes that follow; the caller may read them, else they are skipped."""
    while data.tell() < end:
        key = _varint(data)
        number, wire = key >> 3, key & 7
        size = {0: 0, 1: 8, 2: -1, 5: 4}.get(wire)
        if size is None:
            raise ValueError(f"unknown wire type {wire}")
        value = _varint(data) if size <= 0 else size
        start = data.tell()
        yield number, wire, value
        if wire != 0 and data.tell() == start:
            data.seek(value, io.SEEK_CUR)
        if data.tell() > end:
            raise ValueError("a field runs past the end of its message")


def _parse(raw: bytes) -> Message:
    """A small message: its varints and the bytes of its length-delimited fields."""
    data, out = io.BytesIO(raw), Message()
    for number, wire, value in _fields(data, len(raw)):
        out.setdefault(number, []).append(data.read(value) if wire == _LEN else value)
    return out


def _bytes(message: Message, number: int) -> bytes:
    found = [v for v in message.get(number, []) if isinstance(v, bytes)]
    return found[-1] if found else b""


def _int(message: Message, number: int) -> int | None:
    found = [v for v in message.get(number, []) if isinstance(v, int)]
    return found[-1] if found else None


def _tensor(raw: bytes) -> TensorInfo:
    """A ValueInfoProto: name (1), type (2) .tensor_type (1) .elem_type (1) and .shape (2)
    .dim (1), each dim_value (1) or dim_param (2)."""
    info = _parse(raw)
    tensor = _parse(_bytes(_parse(_bytes(info, 2)), 1))
    dims: list[Dim] = []
    for dim_raw in _parse(_bytes(tensor, 2)).get(1, []):
        dim = _parse(dim_raw) if isinstance(dim_raw, bytes) else {}
        value = _int(dim, 1)
        dims.append(value if value is not None and value > 0 else _bytes(dim, 2).decode() or None)
    elem = _int(tensor, 1) or 0
    return TensorInfo(_bytes(info, 1).decode(), _DTYPES.get(elem, f"onnx:{elem}"), tuple(dims))


def _initializer_name(data: BinaryIO, size: int, sparse: bool) -> str:
    """The name of a (sparse) initializer, its data skipped."""
    for number, wire, value in _fields(data, data.tell() + size):
        if wire == _LEN and number == (_SPARSE_VALUES if sparse else _TENSOR_NAME):
            return _initializer_name(data, value, False) if sparse else data.read(value).decode()
    return ""


def _walk(data: BinaryIO, size: int) -> tuple[list[bytes], list[bytes], set[str], int]:
    inputs: list[bytes] = []
    outputs: list[bytes] = []
    initializers: set[str] = set()
    opset = 0
    for number, wire, value in _fields(data, size):
        if wire == _LEN and number == _OPSET:
            entry = _parse(data.read(value))
            if _bytes(entry, 1) in (b"", b"ai.onnx"):
                opset = max(opset, _int(entry, 2) or 0)
        elif wire == _LEN and number == _GRAPH:
            for field, kind, length in _fields(data, data.tell() + value):
                if kind == _LEN and field in (_INPUT, _OUTPUT):
                    (inputs if field == _INPUT else outputs).append(data.read(length))
                elif kind == _LEN and field in (_INITIALIZER, _SPARSE):
                    initializers.add(_initializer_name(data, length, field == _SPARSE))
    return inputs, outputs, initializers, opset


def read_interface(path: Path, model_name: str = "") -> ModelInterface:
    """The inputs (initializers excluded), outputs and default-domain opset of ``path``."""
    try:
        with open(path, "rb") as data:
            inputs, outputs, initializers, opset = _walk(data, os.fstat(data.fileno()).st_size)
        tensors = [_tensor(raw) for raw in inputs]
        found = ModelInterface(Path(path), tuple(t for t in tensors if t.name not in initializers),
                               tuple(_tensor(raw) for raw in outputs), opset)
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        label = f"{model_name}: " if model_name else ""
        raise ModelDataError(f"{label}{path} is not a readable ONNX model ({exc})",
                             hint="re-export the model, or check that the file was copied "
                             "completely") from None
    if not found.outputs:
        raise ModelDataError(f"{model_name}: {path} holds no ONNX graph",
                             hint="re-export the model")
    return found
