"""The TensorRT backend (JetPack 5.1 / TensorRT 8.5 through JetPack 7 / TensorRT 10.13+).

``tensorrt`` is imported only by :class:`app.backends.tensorrt.runtime.TensorRTRuntime` when
it builds; every version-dependent call goes through :mod:`app.backends.tensorrt.api`.
"""
