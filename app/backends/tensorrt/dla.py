"""Deep Learning Accelerator cores (Xavier, Orin AGX/NX): what a ``dla_core`` build needs.

A DLA runs FP16 and INT8 layers on fixed shapes only. With GPU fallback on (it is: a layer the
DLA lacks must run somewhere), TensorRT builds an FP32 network, or one whose input shapes vary,
for the GPU alone and says nothing but a warning: the engine would be named and recorded as a
DLA engine and use no DLA at all. So ``dla_core`` with ``precision: fp32`` or with an input
whose min and max differ is refused as a config error naming the field, before any build.
The runtime that deserializes a DLA engine must be told its core (``Runtime.DLA_core``).
Before the build, :func:`check_placement` asks the builder config which layers will run on the
DLA (the others fall back to the GPU, silently): none is an error, some a warning.
"""

from __future__ import annotations

import logging
from typing import Any

from app import events
from app.errors import BackendUnavailableError, ConfigError, EngineBuildError
from app.values import InputProfile, PrecisionMode


def check_dla_request(model_name: str, dla_core: int | None, precision: PrecisionMode,
                      profiles: dict[str, InputProfile]) -> None:
    """ConfigError when ``dla_core`` asks for what a DLA cannot run."""
    if dla_core is None:
        return
    field = f"backbones[{model_name}].dla_core"
    if precision is PrecisionMode.FP32:
        raise ConfigError(f"{field}: a DLA runs fp16 or int8 only, and this model is built in "
                          "fp32: TensorRT would silently build it for the GPU",
                          hint="set precision: fp16 (or int8) for this backbone, or remove dla_core")
    varying = sorted(name for name, p in profiles.items() if not p.is_fixed)
    if varying:
        raise ConfigError(f"{field}: a DLA runs fixed shapes only, and input(s) {varying} have a "
                          "min..max range: TensorRT would silently build it for the GPU",
                          hint="give those inputs one shape (min = opt = max), or remove dla_core")


def require_core(builder: Any, model_name: str, dla_core: int) -> None:
    """BackendUnavailableError when this device has no DLA core ``dla_core``."""
    available = int(builder.num_DLA_cores)
    if dla_core >= available:
        raise BackendUnavailableError(
            f"{model_name}: dla_core {dla_core} requested, but this device has {available} DLA "
            "core(s)", hint="remove dla_core or pick an existing core")


def check_placement(trt: Any, network: Any, config: Any, model_name: str, dla_core: int,
                    logger: logging.Logger) -> dict[str, Any]:
    """How many of ``network``'s layers ``config`` (set for the DLA) places on the DLA and the
    DLA can run, for the record; EngineBuildError (exit 70) when none: a GPU engine named DLA."""
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    on_dla = sum(1 for layer in layers if config.get_device_type(layer) == trt.DeviceType.DLA
                 and config.can_run_on_DLA(layer))
    figures = {"dla_core": dla_core, "layers": len(layers), "on_dla": on_dla}
    fields = {"model_name": model_name, **figures}
    said = f"{model_name}: {on_dla} of {len(layers)} layers on DLA core {dla_core}"
    if layers and not on_dla:
        message = (f"{model_name}: dla_core {dla_core} was asked, but TensorRT can run none of its "
                   f"{len(layers)} layers on DLA core {dla_core}: all would run on the GPU")
        events.emit(logger, logging.ERROR, events.DLA_IGNORED, message, **fields)
        raise EngineBuildError(message, hint=f"remove dla_core from {model_name} (it runs on the "
                               "GPU), or change its layers to ones a DLA supports")
    if on_dla < len(layers):
        events.emit(logger, logging.WARNING, events.DLA_PARTIAL,
                    f"{said}, the other {len(layers) - on_dla} on the GPU", **fields)
    else:
        events.emit(logger, logging.INFO, events.DLA_CHECKED, said, **fields)
    return figures
