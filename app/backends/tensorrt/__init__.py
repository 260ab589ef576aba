"""The TensorRT backend (docs/tensorrt.md); ``tensorrt`` is imported only by :mod:`.api`."""
