"""Checks of a built engine beyond its bytes: does it compute what the ONNX model computes?

``report`` (figures, tolerances, JSON; no heavy import) is what a warm boot reads back;
``accuracy`` runs the check, with ``inputs``, ``compare`` and the runners, and loads ONNX
Runtime and numpy only when it runs. ``precision`` says whether the fp16 or int8 asked took
effect: which precision the built artifact's compute nodes run in.
"""
