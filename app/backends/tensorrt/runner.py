"""Run a TensorRT engine on host arrays (the accuracy gate's runner, the warm-up), check a built
engine's I/O against the ONNX model, and the GPU buffers both use. Device, DLA core and
data-dependent outputs, with their NVIDIA sources: docs/tensorrt.md#data-dependent-outputs and
docs/tensorrt.md#gpu-and-dla-at-run-time (Polygraphy's runner.py:278-285 for host tensors).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from app.backends.onnx_model import ModelInterface
from app.backends.tensorrt.api import CallbackErrors, TrtApi, import_tensorrt, logging_to
from app.cache.fsread import open_binary
from app.errors import BackendUnavailableError, EngineBuildError
from app.host import import_cuda, select_device
from app.values import InputProfile


def load_cudart() -> ModuleType:
    module = import_cuda("runtime", "cudart")
    if module is None:
        raise BackendUnavailableError("cuda-python's runtime API is needed to build with TensorRT "
                                      "(device selection, INT8 calibration, warm-up)",
                                      hint="pip install cuda-python 12.x")
    return module


class DeviceMemory:
    """Buffers on GPU ``device``, freed by ``close``; every status checked. Each allocation makes
    ``device`` current first: TensorRT may ask for a batch from any thread (which starts on 0)."""

    def __init__(self, runtime: Any = None, device: int = 0) -> None:
        self.rt = runtime or load_cudart()
        self.device = device
        self._owned: list[int] = []
        self._stream: Any = None

    def _check(self, result: Any, what: str) -> Any:
        status, *values = result if isinstance(result, tuple) else (result,)
        if status != self.rt.cudaError_t.cudaSuccess:
            raise EngineBuildError(f"CUDA runtime call {what} failed: {getattr(status, 'name', status)}")
        return values[0] if len(values) == 1 else tuple(values)

    def alloc(self, nbytes: int) -> int:
        select_device(self.device, self.rt)
        ptr = int(self._check(self.rt.cudaMalloc(max(nbytes, 1)), "cudaMalloc"))
        self._owned.append(ptr)
        return ptr

    def upload(self, ptr: int, array: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.rt.cudaMemcpy(ptr, array.ctypes.data, array.nbytes, kind), "cudaMemcpy")

    def download(self, array: Any, ptr: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.rt.cudaMemcpy(array.ctypes.data, ptr, array.nbytes, kind), "cudaMemcpy")

    def stream(self) -> Any:
        if self._stream is None:
            self._stream = self._check(self.rt.cudaStreamCreate(), "cudaStreamCreate")
        return self._stream

    def synchronize(self) -> None:
        self._check(self.rt.cudaStreamSynchronize(self.stream()), "cudaStreamSynchronize")

    def close(self) -> None:
        for ptr in self._owned:
            self.rt.cudaFree(ptr)
        self._owned.clear()
        if self._stream is not None:
            self.rt.cudaStreamDestroy(self._stream)
            self._stream = None


def reuse_buffer(memory: Any, held: dict[str, tuple[int, int]], name: str, nbytes: int) -> int:
    """A device buffer of at least ``nbytes`` for ``name``: ``held[name]``, grown when short."""
    if name not in held or held[name][1] < nbytes:
        held[name] = (memory.alloc(max(nbytes, 1)), nbytes)
    return held[name][0]


def _output_allocator(trt: Any, memory: DeviceMemory, guard: CallbackErrors) -> Any:
    """An IOutputAllocator over ``memory``: ``buffers[name]`` is ``(pointer, bytes)``,
    ``shapes[name]`` the shape TensorRT wrote."""

    class OutputAllocator(trt.IOutputAllocator):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.IOutputAllocator.__init__(self)
            self.buffers: dict[str, tuple[int, int]] = {}
            self.shapes: dict[str, tuple[int, ...]] = {}

        def reallocate_output(self, tensor_name: str, memory_ptr: int, size: int,
                              alignment: int) -> int:
            with guard.guard("the output allocator"):
                return reuse_buffer(memory, self.buffers, tensor_name, int(size))
            return 0  # the guard kept the exception: TensorRT fails the enqueue

        def notify_shape(self, tensor_name: str, shape: Any) -> None:
            with guard.guard("the output allocator"):
                self.shapes[tensor_name] = tuple(int(d) for d in shape)

    return OutputAllocator()


class TrtRunner:
    """One engine (a path, its serialized bytes, or an ICudaEngine already deserialized), its
    execution context and its buffers; ``close`` frees them all."""

    def __init__(self, engine: Any, model_name: str = "", *, trt: Any = None,
                 memory: DeviceMemory | None = None, cudart: Any = None, cuda_device: int = 0,
                 dla_core: int | None = None) -> None:
        self.api = TrtApi(trt if trt is not None else
                          import_tensorrt("the accuracy check of a TensorRT engine"))
        self.model_name = model_name
        if isinstance(engine, Path):  # a FIFO or a device there: UnsafeFileError, not a hang
            with open_binary(engine, follow_links=True) as handle:
                engine = handle.read()
        if memory is None or cudart is not None:
            cudart = cudart if cudart is not None else load_cudart()
            select_device(cuda_device, cudart)  # the engine and its buffers on one GPU
        self._memory = memory if memory is not None else DeviceMemory(cudart, cuda_device)
        self._guard = CallbackErrors()
        # The process logger sends to this runner until close: a failed sample quotes TensorRT.
        self._logging = logging_to(self.api.trt, lambda severity, message: None, self._guard)
        logger, self._errors = self._logging.__enter__()
        if isinstance(engine, (bytes, bytearray, memoryview)):
            engine = self.api.deserialize(logger, engine, dla_core)
        self.engine = engine
        if self.engine is None:
            detail = "; ".join(self._errors)[:300] or "no reason given"
            self._logging.__exit__(None, None, None)
            raise EngineBuildError(f"{model_name}: TensorRT cannot deserialize the engine for the "
                                   f"accuracy check: {detail}")
        self.context = self.engine.create_execution_context()
        self.inputs, self.outputs = self.api.io(self.engine)
        self._allocator = _output_allocator(self.api.trt, self._memory, self._guard)
        self._buffers: dict[str, tuple[int, int]] = {}
        self._host: dict[str, Any] = {}

    def dtype(self, name: str) -> Any:
        import numpy as np

        return np.dtype(self.api.dtype_name(self.engine.get_tensor_dtype(name)))

    def _on_host(self, name: str) -> bool:
        if self.engine.get_tensor_location(name) == self.api.trt.TensorLocation.HOST:
            return True
        return name in self.inputs and bool(self.engine.is_shape_inference_io(name))


    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        missing = sorted(set(self.inputs) - set(feeds))
        if missing:
            raise EngineBuildError(f"{self.model_name}: no value for engine inputs {missing}")
        for name in self.inputs:
            array = np.ascontiguousarray(feeds[name], dtype=self.dtype(name))
            if not self.context.set_input_shape(name, tuple(array.shape)):
                raise EngineBuildError(f"{self.model_name}: the engine refuses shape "
                                       f"{list(array.shape)} for input {name!r}")
            if self._on_host(name):
                self._host[name] = array  # kept alive until the next sample
                ptr = int(array.ctypes.data)
            else:
                ptr = reuse_buffer(self._memory, self._buffers, name, array.nbytes)
                self._memory.upload(ptr, array)
            self.context.set_tensor_address(name, ptr)
        results: dict[str, Any] = {}
        for name in self.outputs:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):  # its size depends on the data
                self.context.set_output_allocator(name, self._allocator)
                continue
            results[name] = np.empty(shape, dtype=self.dtype(name))
            on_host = self._on_host(name)
            ptr = int(results[name].ctypes.data) if on_host else reuse_buffer(
                self._memory, self._buffers, name, results[name].nbytes)
            self.context.set_tensor_address(name, ptr)
        if not self.context.execute_async_v3(self._memory.stream()):
            self._guard.raise_first(self.model_name)
            detail = "; ".join(self._errors[-3:])[:300]
            raise EngineBuildError(f"{self.model_name}: the engine failed to run a sample"
                                   + (f": {detail}" if detail else ""))
        self._memory.synchronize()
        self._guard.raise_first(self.model_name)
        for name in self.outputs:
            if name not in results:
                results[name] = self._allocated(name)
            elif not self._on_host(name):
                self._memory.download(results[name], self._buffers[name][0])
        return results

    def _allocated(self, name: str) -> Any:
        """A data-dependent output: the shape TensorRT notified, read from the buffer it got."""
        import numpy as np

        shape = self._allocator.shapes.get(name)
        held = self._allocator.buffers.get(name)
        if shape is None or held is None:
            raise EngineBuildError(f"{self.model_name}: TensorRT did not report the shape of "
                                   f"data-dependent output {name!r}")
        array = np.empty(shape, dtype=self.dtype(name))
        if array.nbytes > held[1]:
            raise EngineBuildError(f"{self.model_name}: output {name!r} of shape {list(shape)} "
                                   f"does not fit the {held[1]} bytes TensorRT asked for")
        if array.nbytes:
            self._memory.download(array, held[0])
        return array

    def close(self) -> None:
        self.context = self.engine = None  # before the buffers they point into
        self._memory.close()
        self._buffers.clear()
        self._host.clear()
        self._logging.__exit__(None, None, None)


def check_engine(api: TrtApi, engine: Any, model: ModelInterface,
                 profiles: dict[str, InputProfile], model_name: str) -> None:
    """A built engine's I/O against the ONNX model and the profiles; EngineBuildError if not."""
    inputs, outputs = api.io(engine)
    names = inputs + outputs
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


def warm_up(api: TrtApi, engine: Any, profiles: dict[str, InputProfile], memory: DeviceMemory,
            model_name: str) -> None:
    """``verify: infer``: one inference on zeros at the opt shapes; every output finite."""
    import numpy as np

    runner = TrtRunner(engine, model_name, trt=api.trt, memory=memory)
    try:
        results = runner.run({n: np.zeros(profiles[n].opt, runner.dtype(n)) for n in runner.inputs})
    finally:
        runner.close()
    for name, array in results.items():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise EngineBuildError(f"{model_name}: the warm-up inference gave non-finite {name!r}")
