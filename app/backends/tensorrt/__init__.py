"""The TensorRT backend (JetPack 5.1 / TensorRT 8.5 through JetPack 7 / TensorRT 10.13+).

``tensorrt`` is imported only by :func:`app.backends.tensorrt.api.import_tensorrt`, when
:class:`~app.backends.tensorrt.runtime.TensorRTRuntime` builds or an engine is run, and every
version-dependent call goes through :mod:`app.backends.tensorrt.api`.
"""
