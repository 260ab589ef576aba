"""What :class:`app.compiler.EngineCompiler` is asked to make ready: the request types.

A request is built from the job's config (:meth:`EngineCompileRequest.from_config`) or in
Python (docs/python-api.md). The settings it carries are the config's own sections
(:class:`~app.config_sections.AccuracyConfig`, :class:`~app.config_sections.GovernorConfig`),
used as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from app.values import KEEP_FP32_DEFAULT, HostCapabilities, InputProfile, PrecisionMode, Shape

if TYPE_CHECKING:
    from app.config import BackboneConfig, EngineInitConfig
    from app.config_sections import AccuracyConfig, GovernorConfig


@dataclass(frozen=True)
class BackboneSpec:
    """One model of the corpus.

    ``expected_input_shape`` is the single-input shorthand; ``input_shapes`` names each input
    (fixed or min/opt/max). ``precision`` overrides the request's precision for this model.
    """

    model_name: str
    onnx_path: Path
    expected_input_shape: Shape | None = None
    input_shapes: dict[str, InputProfile] = field(default_factory=dict)
    precision: PrecisionMode | None = None
    dla_core: int | None = None
    verify: str = "io"
    #: The accuracy gate's settings when ``verify`` is ``accuracy`` (None: the defaults).
    accuracy: AccuracyConfig | None = None
    #: TensorRT: layers kept in float32 under fp16/int8 (node names, op types, "layernorm").
    keep_fp32: tuple[str, ...] = KEEP_FP32_DEFAULT

    @classmethod
    def from_config(cls, backbone: BackboneConfig, verify: str = "io",
                    accuracy: AccuracyConfig | None = None) -> BackboneSpec:
        """``backbone`` as the compiler takes it; ``verify``/``accuracy``: the job's defaults."""
        from app.config_sections import AccuracyConfig

        b = backbone
        shapes = {
            name: InputProfile.fixed(tuple(s)) if isinstance(s, list)
            else InputProfile(tuple(s.min), tuple(s.opt), tuple(s.max))
            for name, s in (b.input_shapes or {}).items()
        }
        fixed = tuple(b.expected_input_shape) if b.expected_input_shape else None
        verify = b.verify or verify
        gate = AccuracyConfig.merged(accuracy, b.accuracy) if verify == "accuracy" else None
        keep = KEEP_FP32_DEFAULT if b.keep_fp32 is None else tuple(b.keep_fp32)
        return cls(b.model_name, b.onnx_path, fixed, shapes, b.precision, b.dla_core, verify,
                   gate, keep)

    def shapes(self) -> dict[str | None, InputProfile]:
        """The configured profiles, ``None`` keying the single-input shorthand."""
        shapes: dict[str | None, InputProfile] = {k: v for k, v in self.input_shapes.items()}
        if self.expected_input_shape is not None:
            shapes[None] = InputProfile.fixed(tuple(self.expected_input_shape))
        return shapes


@dataclass(frozen=True)
class EngineCompileRequest:
    """A whole corpus to make ready on one host."""

    backbones: tuple[BackboneSpec, ...]
    calibration_path: Path | None
    cache_root: Path
    precision: PrecisionMode
    host: HostCapabilities
    workspace_mb: int = 4096
    optimization_level: int = 3
    lock_timeout_s: float = 600.0
    strict_onnx_hash: bool = False
    #: The build governor's settings; None (a config's ``enabled: false``): builds start
    #: without it.
    governor: GovernorConfig | None = None
    #: The Ed25519 public key (PEM file) fleet candidates must be signed with; None: no
    #: candidate is promoted (app.fleet.candidates).
    fleet_public_key: Path | None = None
    #: The fleet's provisioned TUF root (app.fleet.tuf_client); set: only candidates the fleet
    #: released, in metadata bound to ``fleet_repository``, are promoted.
    fleet_trusted_root: Path | None = None
    fleet_repository: str | None = None
    #: Where pull and import store candidates (``EngineInitConfig.candidates_root``: untrusted
    #: input, app.fleet.candidates); None: nothing is promoted.
    fleet_candidates: Path | None = None

    @classmethod
    def from_config(cls, config: EngineInitConfig, host: HostCapabilities) -> EngineCompileRequest:
        """The job's config on the probed ``host``."""
        return cls(
            backbones=tuple(BackboneSpec.from_config(b, config.verify, config.accuracy)
                            for b in config.backbones),
            calibration_path=config.calibration_path, cache_root=config.cache_root,
            precision=config.precision, host=host, workspace_mb=config.workspace_mb,
            optimization_level=config.optimization_level, lock_timeout_s=config.lock_timeout_s,
            strict_onnx_hash=config.strict_onnx_hash,
            governor=config.governor if config.governor.enabled else None,
            fleet_public_key=config.fleet.public_key_file,
            fleet_trusted_root=config.fleet.trusted_root_file,
            fleet_repository=config.fleet.repository,
            fleet_candidates=config.candidates_root,
        )
