"""Checks of a built engine beyond its bytes: does it compute what the ONNX model computes?
The modules' roles are in docs/architecture.md; docs/accuracy-gate.md is the user's page."""
