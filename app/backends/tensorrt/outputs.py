"""Where an engine's I/O tensors live, and outputs whose size depends on the data.

An output made by ``NonZero`` (LightGlue's matches) or an NMS has -1 dimensions even once every
input shape is set; "each output must have a non-null address or an IOutputAllocator"
(TensorRT v10.3.0 include/NvInferRuntime.h:3988-3998). Its real shape is known only to an
``IOutputAllocator``: TensorRT calls ``reallocate_output(name, current, size, alignment)`` for a
buffer of the size it needs and ``notify_shape(name, dims)`` with the shape it wrote. On 10.x
the bindings' ``reallocate_output_async`` falls back to ``reallocate_output`` when the subclass
does not define it (v10.3.0 python/src/infer/pyCore.cpp:537-551); 8.6 knows only
``reallocate_output``. Polygraphy's runner installs one for every output the same way
(``tools/Polygraphy/polygraphy/backend/trt/runner.py:57-85,318-322``).

A tensor whose location is HOST (a shape tensor) takes a host pointer: "If the TensorLocation of
the tensor is kHOST, the pointer must point to a host buffer" (NvInferRuntime.h:3991);
Polygraphy passes host memory for ``is_shape_inference_io`` inputs (runner.py:278-285).
"""

from __future__ import annotations

from typing import Any


def on_host(trt: Any, engine: Any, name: str, is_input: bool) -> bool:
    """Whether ``name`` must be given a host pointer, not a device one."""
    if engine.get_tensor_location(name) == trt.TensorLocation.HOST:
        return True
    return is_input and bool(engine.is_shape_inference_io(name))


def make_output_allocator(trt: Any, memory: Any, guard: Any) -> Any:
    """An IOutputAllocator over ``memory`` (DeviceMemory's ``alloc``): ``buffers[name]`` is
    ``(pointer, bytes)``, ``shapes[name]`` the shape TensorRT wrote. Exceptions never cross into
    TensorRT (its wrapper would print them and return null): they go to ``guard``."""

    class OutputAllocator(trt.IOutputAllocator):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.IOutputAllocator.__init__(self)
            self.buffers: dict[str, tuple[int, int]] = {}
            self.shapes: dict[str, tuple[int, ...]] = {}

        def reallocate_output(self, tensor_name: str, memory_ptr: int, size: int,
                              alignment: int) -> int:
            with guard.guard("the output allocator"):
                held = self.buffers.get(tensor_name)
                if held is None or held[1] < size:
                    held = (memory.alloc(max(int(size), 1)), int(size))
                    self.buffers[tensor_name] = held
                return held[0]
            return 0  # the guard kept the exception: TensorRT fails the enqueue

        def notify_shape(self, tensor_name: str, shape: Any) -> None:
            with guard.guard("the output allocator"):
                self.shapes[tensor_name] = tuple(int(d) for d in shape)

    return OutputAllocator()
