"""What a TensorRT engine's layers run in, read from the engine inspector's JSON as each release
writes it (through the compiler and the TensorRT stand-in: tests/verify/test_gate_precision.py)."""

from __future__ import annotations

import json

from app.backends.tensorrt.runtime import precision_in_effect


def _layer(kind, fmt):
    return {"Name": kind, "LayerType": kind, "Inputs": [{"Name": "t", "Format/Datatype": fmt}]}


def test_tensorrt_layers_are_counted_in_their_first_inputs_format():
    info = json.dumps({"Layers": [
        _layer("CaskConvolution", "Four wide channel vectorized row major Int8 format"),
        _layer("CaskGemmMatrixMultiply", "Half"),  # the short form, without a context
        _layer("gemm", "Row major linear FP32"),
        _layer("PointWiseV2", "Int8"), _layer("Reformat", "Float")]})
    effect = precision_in_effect(info, "int8")
    assert effect is not None
    assert (effect.compute_nodes, effect.in_precision) == (3, 1)
    assert effect.ran == {"fp16": 1, "fp32": 1, "int8": 1} and effect.ops["Reformat"] == 1
    assert effect.what_ran() == "1 in fp16, 1 in fp32, 1 in int8"


def test_an_engine_with_layer_names_only_cannot_say():
    assert precision_in_effect(json.dumps({"Layers": ["conv1", "relu1"]}), "fp16") is None
    assert precision_in_effect("conv1\nrelu1", "fp16") is None


def test_bfloat16_and_uint8_are_counted_as_what_they_are():
    info = json.dumps({"Layers": [_layer("CaskConvolution", "Row major linear BFloat16 format"),
                                  _layer("gemm", "UInt8"), _layer("gemm", "Int8")]})
    effect = precision_in_effect(info, "int8")
    assert effect is not None and effect.ran == {"bf16": 1, "int8": 1, "uint8": 1}


def test_a_myelin_foreign_node_of_8_6_is_counted_apart_as_not_inspectable():
    info = json.dumps({"Layers": [
        _layer("CaskConvolution", "Channel major FP16 format where channel % 8 == 0"),
        {"Name": "{ForeignNode[/blocks.0/norm1/ReduceMean.../head/gem]}", "LayerType": "Myelin",
         "Inputs": [{"Name": "x", "Format/Datatype": "Row major linear FP32"}]}]})
    effect = precision_in_effect(info, "fp16")
    assert effect is not None and (effect.compute_nodes, effect.opaque) == (1, 1)
    assert effect.describe() == ("1 of 1 compute nodes run in fp16 (+1 Myelin region(s) this "
                                 "TensorRT cannot inspect)")
    assert effect.as_dict()["not_inspectable"] == 1
