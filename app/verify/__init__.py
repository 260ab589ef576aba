"""Checks of a built engine beyond its bytes: does it compute what the ONNX model computes?

``report`` (figures, tolerances, JSON; no heavy import) is what a warm boot reads back;
``accuracy`` runs the check, with ``inputs``, ``measure`` (the figures of each output, with
``sets`` for points, aligned rows and argmax, ``variation`` for the error against the spread
across samples),
and loads ONNX Runtime and numpy only when it runs. ``rules`` says how each output is compared:
the config's ``accuracy.outputs`` over what ``graph`` reads in the ONNX graph (outputs ordered
by TopK, NonMaxSuppression, NonZero or ArgMax). ``accuracy`` is also what the compiler calls:
the accuracy gate, and whether the fp16 or int8 asked took effect. It asks the engine's backend
through its protocol (a runner of the artifact, the precision it reads out of it) and never
branches on which backend it is; the reference is always the ONNX model on ONNX Runtime's CPU
provider. docs/accuracy-gate.md is the user's page.
"""
