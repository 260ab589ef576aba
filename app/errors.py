"""The user-facing errors: a one-line message and a hint; :mod:`app.cli` maps them to exit
codes. Each also inherits the closest standard exception (``OSError``, ``ValueError``...)."""

from __future__ import annotations


class EngineInitError(Exception):
    """Base of every error engine-init reports to its user."""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(EngineInitError, ValueError):
    """The configuration (file, environment or command line) is invalid."""


class ModelDataError(EngineInitError, ValueError):
    """An ONNX model or calibration data is unreadable or contradicts the configuration."""


class BundleError(ModelDataError):
    """A fleet bundle or registry artifact failed a check: signature, digest, SKU, layout."""


class HostProbeError(EngineInitError, RuntimeError):
    """The GPU or another host fact the backend needs cannot be read."""


class BackendUnavailableError(EngineInitError, RuntimeError):
    """The requested backend (TensorRT, ONNX Runtime) cannot be used on this host."""


class EngineBuildError(EngineInitError, RuntimeError):
    """A runtime failed to build or verify an engine."""


class AccuracyError(EngineBuildError):
    """A built engine's outputs differ from the ONNX model's beyond the accuracy tolerance."""


class BuildConditionsError(BackendUnavailableError):
    """The host cannot take a build now: too little memory, or too hot for too long."""


class CalibrationCacheError(EngineInitError, RuntimeError):
    """INT8 was asked for without usable calibration data or calibration cache."""


class BuildCancelledError(EngineInitError):
    """The build was cancelled by a signal; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        import signal

        name = signal.Signals(signum).name
        super().__init__(f"interrupted by {name}", hint="the next run resumes the work")
        self.signum = signum


class CacheWriteError(EngineInitError, OSError):
    """A file in the cache or the marker folder cannot be written (permissions, read-only)."""


class CacheIOError(CacheWriteError):
    """An I/O error other than permissions while writing (EIO, a full disk...)."""


class DiskFullError(CacheIOError):
    """The filesystem ran out of space while publishing a file."""


class RegistryError(EngineInitError, ConnectionError):
    """The fleet registry cannot be reached or refused a request (not a verification failure)."""


class LockTimeoutError(EngineInitError, TimeoutError):
    """Another run held the cache lock longer than the configured wait."""


class MarkerError(EngineInitError, RuntimeError):
    """The readiness marker is absent, stale, unsigned or contradicts the engines."""
