"""Check a freshly built engine against the ONNX model before it is published.

Deserialize it, compare its I/O tensors (names, modes, dtypes as the release's ONNX parser maps
them, shapes or profile ranges) with the ONNX model's inputs and outputs and the configured
profiles, and optionally run one warm-up inference on zeros at the ``opt`` shapes
(``verify: infer``).

An output whose size depends on the data (NonZero, NMS...) has -1 dimensions even once the
input shapes are set; its buffer is sized by ``get_max_output_size`` (TensorRT's upper bound
for the current input shapes, 8.5+), and its values are not checked: their count is known only
to an output allocator.
"""

from __future__ import annotations

from typing import Any

from app.backends.onnx_model import ModelInterface
from app.backends.tensorrt.api import TrtApi
from app.errors import EngineBuildError
from app.values import InputProfile

__all__ = ["check_engine", "warm_up"]


def check_engine(api: TrtApi, engine: Any, model: ModelInterface,
                 profiles: dict[str, InputProfile], model_name: str) -> None:
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if api.is_input(engine, n)]
    outputs = [n for n in names if n not in inputs]
    want_in, want_out = {t.name: t for t in model.inputs}, {t.name: t for t in model.outputs}
    problems: list[str] = []
    if set(inputs) != set(want_in) or set(outputs) != set(want_out):
        problems.append(f"engine I/O {sorted(inputs)} -> {sorted(outputs)} differs from the ONNX "
                        f"model's {sorted(want_in)} -> {sorted(want_out)}")
    for name in set(names) & (set(want_in) | set(want_out)):
        got = api.dtype_name(engine.get_tensor_dtype(name))
        want = api.engine_dtype((want_in.get(name) or want_out[name]).dtype)
        if got != want:
            problems.append(f"tensor {name!r} is {got} in the engine, {want} in the ONNX model")
    for name in set(inputs) & set(profiles):
        profile = profiles[name]
        shape = tuple(engine.get_tensor_shape(name))
        if -1 in shape:
            lo, opt, hi = (tuple(s) for s in engine.get_tensor_profile_shape(name, 0))
            if (lo, opt, hi) != (profile.min, profile.opt, profile.max):
                problems.append(f"input {name!r} accepts {list(lo)}..{list(hi)}, the config "
                                f"asked for {list(profile.min)}..{list(profile.max)}")
        elif shape != profile.opt:
            problems.append(f"input {name!r} is fixed to {list(shape)}, the config asked for "
                            f"{list(profile.opt)}")
    if problems:
        raise EngineBuildError(f"{model_name}: the built engine does not match: " + "; ".join(problems),
                               hint="check the model's I/O and the configured shapes")


def warm_up(api: TrtApi, engine: Any, profiles: dict[str, InputProfile], memory: Any,
            model_name: str) -> None:
    """One inference on zeros at the opt shapes; every output must be finite."""
    import numpy as np

    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    outputs: dict[str, Any] = {}
    for name in names:
        dtype = np.dtype(api.dtype_name(engine.get_tensor_dtype(name)))
        if api.is_input(engine, name):
            array = np.zeros(profiles[name].opt, dtype=dtype)
            context.set_input_shape(name, profiles[name].opt)
            ptr = memory.alloc(array.nbytes)
            memory.upload(ptr, array)
            context.set_tensor_address(name, ptr)
    for name in names:
        if api.is_input(engine, name):
            continue
        shape = tuple(context.get_tensor_shape(name))
        if -1 in shape:
            bound = int(context.get_max_output_size(name))
            if bound < 0:
                raise EngineBuildError(f"{model_name}: TensorRT gives no size bound for output "
                                       f"{name!r} of shape {list(shape)}")
            context.set_tensor_address(name, memory.alloc(bound))
            continue
        array = np.empty(shape, dtype=np.dtype(api.dtype_name(engine.get_tensor_dtype(name))))
        ptr = memory.alloc(array.nbytes)
        context.set_tensor_address(name, ptr)
        outputs[name] = (array, ptr)
    if not context.execute_async_v3(memory.stream()):
        raise EngineBuildError(f"{model_name}: the warm-up inference failed to launch")
    memory.synchronize()
    for name, (array, ptr) in outputs.items():
        memory.download(array, ptr)
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise EngineBuildError(f"{model_name}: the warm-up inference gave non-finite {name!r}")
