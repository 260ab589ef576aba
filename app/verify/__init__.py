"""Checks of a built engine beyond its bytes: does it compute what the ONNX model computes?

``report`` (figures, tolerances, JSON; no heavy import) is what a warm boot reads back;
``accuracy`` runs the check (the accuracy gate, and whether the fp16 or int8 asked took effect),
asking the engine's backend through its protocol and never branching on which backend it is;
the reference is always the ONNX model on ONNX Runtime's CPU provider. ``rules`` says how each
output is compared, ``inputs`` what is fed, ``measure`` and ``sets`` the figures. numpy, onnx
and ONNX Runtime load only when a check runs. docs/accuracy-gate.md is the user's page.
"""
