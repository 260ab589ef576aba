"""What the compiler and the checks ask of a backend (:class:`InferenceRuntime`), the runner it
opens for the accuracy gate, and the precision in effect it reads. A caller's runtime with only
``compile_engine`` (or not all the members) is wrapped in :class:`PlainRuntimeAdapter`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from app.cache.names import EngineFilenameSchema
from app.errors import EngineBuildError
from app.values import BuildConfig, EngineCacheEntry, HostCapabilities, InputProfile, PrecisionMode

if TYPE_CHECKING:
    from app.backends.onnx_model import ModelInterface


@runtime_checkable
class EngineRunner(Protocol):
    """``run``: ``{input name: array}`` -> ``{output name: array}`` for every output (a
    data-dependent one in the shape it came out in)."""

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class PrecisionInEffect:
    """What the compute nodes of a built artifact run in: ``in_precision`` of ``compute_nodes``
    in the asked precision; ``ran``: how many in each; ``ops``: every node or layer type."""

    asked: str
    compute_nodes: int
    in_precision: int
    ops: dict[str, int] = field(default_factory=dict)
    ran: dict[str, int] = field(default_factory=dict)
    dla: dict[str, Any] | None = None  # TensorRT's check_placement
    opaque: int = 0  # TensorRT 8.x: Myelin regions the inspector does not show
    myelin_fp16: int = 0  # TensorRT 10.x: Myelin GEMM kernels in fp16

    @classmethod
    def counted(cls, asked: str, ops: Counter[str], ran: Counter[str],
                **extra: Any) -> PrecisionInEffect:
        return cls(asked, sum(ran.values()), ran[asked], dict(sorted(ops.items())),
                   dict(sorted(ran.items())), **extra)

    @property
    def took_effect(self) -> bool:
        if self.asked == "fp32" or self.in_precision > 0:
            return True
        # INT8: Myelin keeping every GEMM in FP16 (#3784) is reduced precision, not ignored.
        return self.asked == "int8" and self.myelin_fp16 > 0 and \
            self.myelin_fp16 == self.ran.get("fp16", 0) == self.compute_nodes

    def describe(self) -> str:
        hidden = (f" (+{self.opaque} Myelin region(s) this TensorRT cannot inspect)"
                  if self.opaque else "")
        if self.asked == "fp32":
            return f"{self.compute_nodes} compute nodes in float32{hidden}"
        kept = (f"; Myelin kept {self.myelin_fp16} GEMM(s) in fp16" if self.myelin_fp16 and
                self.asked == "int8" else "")
        return (f"{self.in_precision} of {self.compute_nodes} compute nodes run in "
                f"{self.asked}{kept}{hidden}")

    def what_ran(self) -> str:
        return ", ".join(f"{n} in {p}" for p, n in sorted(self.ran.items(), key=lambda i: -i[1]))

    def as_dict(self) -> dict[str, Any]:
        return {"asked": self.asked, "compute_nodes": self.compute_nodes,
                "in_precision": self.in_precision, "took_effect": self.took_effect,
                "ran": dict(self.ran), "ops": dict(self.ops),
                **({"dla": dict(self.dla)} if self.dla is not None else {}),
                **({"not_inspectable": self.opaque} if self.opaque else {}),
                **({"myelin_fp16": self.myelin_fp16} if self.myelin_fp16 else {})}


class PlainRuntime(Protocol):
    def compile_engine(self, model_path: Path, build_config: BuildConfig) -> EngineCacheEntry: ...


@runtime_checkable
class InferenceRuntime(Protocol):
    """A backend: builds engines, names them, and says what it is for provenance records."""

    name: str  # recorded as ``backend``

    def version(self) -> str:
        """The full version of what builds the engines (TensorRT 10.3.0.30)."""

    def device_name(self) -> str:
        """What the engines are built for (the GPU's name, the CPU model)."""

    def artifact_name(self, model_name: str, precision: PrecisionMode) -> str: ...

    def compile_engine(self, model_path: Path, build_config: BuildConfig) -> EngineCacheEntry:
        """Build one engine and publish it at ``build_config.engine_path`` with its sidecar."""

    def precision_in_effect(self, model_path: Path, artifact: Path,
                            build_config: BuildConfig) -> PrecisionInEffect | None:
        """What the compute nodes of the built ``artifact`` run in; None: cannot say."""

    def open_runner(self, artifact: Path, build_config: BuildConfig) -> EngineRunner:
        """A runner of ``artifact`` on the device ``build_config`` names; the caller closes it."""

    def device_free_memory(self) -> int | None:
        """Free bytes of the discrete GPU builds run on; None where host memory counts."""

    def verify_artifact(self, artifact: Path, model: ModelInterface,
                        build_config: BuildConfig) -> None:
        """Check an artifact built elsewhere (a fleet candidate) as a fresh build is checked."""

    def timing_cache_path(self, cache_root: Path) -> Path | None:
        """The timing cache a build under ``cache_root`` reads and saves; None: none is kept."""

    def timing_cache_present(self, build_config: BuildConfig) -> bool | None:
        """Whether this build will load a timing cache (the ETA's basis); None: no such cache."""


class HostBackend:
    """What backends share: engines named for ``host``'s GPU and TensorRT, opaque artifacts, no
    timing cache, no free-memory figure; the published engine and its sidecar."""

    name: str
    host: HostCapabilities

    def version(self) -> str:
        return self.host.trt_full or self.host.trt

    def device_name(self) -> str:
        return self.host.device_name

    def artifact_name(self, model_name: str, precision: PrecisionMode) -> str:
        return EngineFilenameSchema.build(model_name=model_name, sm=self.host.sm,
                                          jetpack=self.host.jetpack, trt=self.host.trt,
                                          precision=precision)

    def precision_in_effect(self, model_path: Path, artifact: Path,
                            build_config: BuildConfig) -> PrecisionInEffect | None:
        return None

    def device_free_memory(self) -> int | None:
        return None

    def timing_cache_path(self, cache_root: Path) -> Path | None:
        return None

    def timing_cache_present(self, build_config: BuildConfig) -> bool | None:
        return None

    def publish(self, cfg: BuildConfig, payload: Any, version: str) -> EngineCacheEntry:
        from app.cache.hashing import Sha256Sidecar

        assert cfg.engine_path is not None  # build_inputs refused a build without one
        digest = Sha256Sidecar.write_atomic_and_sidecar(cfg.engine_path, payload)
        return EngineCacheEntry(cfg.engine_path, digest, self.host.sm, self.host.jetpack,
                                self.host.trt, cfg.precision,
                                {"backend": self.name, "backend_version": version})


def build_inputs(model_path: Path,
                 cfg: BuildConfig) -> tuple[ModelInterface, dict[str, InputProfile]]:
    """The model's interface and its profiles, for a build (which needs ``engine_path``)."""
    from app.backends.onnx_model import inspect_model, resolve_profiles

    if cfg.engine_path is None:
        raise EngineBuildError(f"{cfg.model_name}: no engine_path in the build config")
    model = inspect_model(model_path, cfg.model_name)
    return model, resolve_profiles(model, cfg.input_shapes, cfg.model_name)


class PlainRuntimeAdapter(HostBackend):
    def __init__(self, runtime: PlainRuntime, host: HostCapabilities) -> None:
        self.runtime = runtime
        self.host = host
        self.name = type(runtime).__name__

    def compile_engine(self, model_path: Path, build_config: BuildConfig) -> EngineCacheEntry:
        return self.runtime.compile_engine(model_path, build_config)

    def open_runner(self, artifact: Path, build_config: BuildConfig) -> EngineRunner:
        raise EngineBuildError(f"{build_config.model_name}: the accuracy check cannot run "
                               f"{self.name} engines",
                               hint="set verify: io for this model, or use the onnxruntime or "
                                    "tensorrt backend")

    def verify_artifact(self, artifact: Path, model: ModelInterface,
                        build_config: BuildConfig) -> None:
        raise EngineBuildError(f"the {self.name} runtime cannot check an artifact built elsewhere")


def as_inference_runtime(runtime: InferenceRuntime | PlainRuntime,
                         host: HostCapabilities) -> InferenceRuntime:
    if isinstance(runtime, InferenceRuntime):
        return runtime
    return PlainRuntimeAdapter(runtime, host)
