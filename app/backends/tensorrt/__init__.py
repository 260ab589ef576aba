"""The TensorRT backend (JetPack 5.1 / TensorRT 8.5 through JetPack 7 / TensorRT 10.13+).

``tensorrt`` is imported only when :class:`app.backends.tensorrt.runtime.TensorRTRuntime` builds
(:func:`app.backends.tensorrt.loader.import_tensorrt`); every version-dependent call goes through
:mod:`app.backends.tensorrt.api`.
"""
