"""Check a freshly built engine against the ONNX model before it is published.

Deserialize it, compare its I/O tensors (names, modes, dtypes as the release's ONNX parser maps
them, shapes or profile ranges) with the ONNX model's inputs and outputs and the configured
profiles, and optionally run one warm-up inference on zeros at the ``opt`` shapes
(``verify: infer``).

An output whose size depends on the data (NonZero, NMS...) has -1 dimensions even once the
input shapes are set; the warm-up gives it an output allocator, as the accuracy runner does
(:mod:`app.backends.tensorrt.outputs`).
"""

from __future__ import annotations

from typing import Any

from app.backends.onnx_model import ModelInterface
from app.backends.tensorrt.api import TrtApi
from app.errors import EngineBuildError
from app.values import InputProfile


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
    """One inference on zeros at the opt shapes; every output must be finite. An output whose
    size depends on the data gets an output allocator (app.backends.tensorrt.outputs), and its
    notified shape is read back; a host-located tensor gets host memory."""
    import numpy as np

    from app.backends.tensorrt.callbacks import CallbackErrors
    from app.backends.tensorrt.outputs import make_output_allocator, on_host

    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    guard = CallbackErrors()
    allocator = make_output_allocator(api.trt, memory, guard)
    held: list[Any] = []  # host arrays TensorRT reads or writes: alive until it is done
    outputs: dict[str, Any] = {}
    for name in (n for n in names if api.is_input(engine, n)):
        array = np.zeros(profiles[name].opt, dtype=np.dtype(api.dtype_name(engine.get_tensor_dtype(name))))
        context.set_input_shape(name, profiles[name].opt)
        held.append(array)
        context.set_tensor_address(name, _address(api, engine, name, array, memory, True, on_host))
    for name in (n for n in names if not api.is_input(engine, n)):
        shape = tuple(context.get_tensor_shape(name))
        if -1 in shape:
            context.set_output_allocator(name, allocator)
            continue
        array = np.empty(shape, dtype=np.dtype(api.dtype_name(engine.get_tensor_dtype(name))))
        held.append(array)
        ptr = _address(api, engine, name, array, memory, False, on_host)
        context.set_tensor_address(name, ptr)
        outputs[name] = (array, None if on_host(api.trt, engine, name, False) else ptr)
    launched = context.execute_async_v3(memory.stream())
    guard.raise_first(model_name)
    if not launched:
        raise EngineBuildError(f"{model_name}: the warm-up inference failed to launch")
    memory.synchronize()
    guard.raise_first(model_name)
    for name, (array, ptr) in outputs.items():
        if ptr is not None:
            memory.download(array, ptr)
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise EngineBuildError(f"{model_name}: the warm-up inference gave non-finite {name!r}")
    unreported = [n for n in names if not api.is_input(engine, n) and n not in outputs
                  and n not in allocator.shapes]
    if unreported:
        raise EngineBuildError(f"{model_name}: TensorRT did not report the shape of "
                               f"data-dependent outputs {unreported}")


def _address(api: TrtApi, engine: Any, name: str, array: Any, memory: Any, is_input: bool,
             on_host: Any) -> int:
    """A host pointer for a host-located tensor, else a device buffer (with the array in it)."""
    if on_host(api.trt, engine, name, is_input):
        return int(array.ctypes.data)
    ptr = int(memory.alloc(array.nbytes))
    if is_input:
        memory.upload(ptr, array)
    return ptr
