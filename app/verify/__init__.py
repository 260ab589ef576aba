"""Does a built engine compute what its ONNX model computes? docs/accuracy-gate.md."""
