"""Optimization profiles: one for the engine, and one for INT8 calibration of a dynamic network.

A network with dynamic inputs needs a profile (min/opt/max per input). INT8 calibration of such
a network runs at one shape: the calibration profile's, whose MIN and MAX TensorRT replaces by
its OPT. It is set explicitly (``set_calibration_profile``, OPT everywhere) so that the shape is
the one the batches were checked against (:class:`app.backends.calibration.CalibrationSet` with
``opt_only``): a batch of another shape would be read past its end or cut short.
"""

from __future__ import annotations

from typing import Any

from app.errors import EngineBuildError
from app.values import InputProfile


def add_profiles(builder: Any, network: Any, config: Any, profiles: dict[str, InputProfile],
                 model_name: str, calibrate: bool) -> None:
    """Add the engine's profile when the network has dynamic inputs, and for ``calibrate`` the
    calibration profile at OPT."""
    tensors = [network.get_input(i) for i in range(network.num_inputs)]
    if not any(-1 in tuple(t.shape) for t in tensors):
        return  # a static network needs no profile, and calibrates at its only shape
    profile = builder.create_optimization_profile()
    for tensor in tensors:
        p = profiles[tensor.name]
        profile.set_shape(tensor.name, p.min, p.opt, p.max)
    if config.add_optimization_profile(profile) < 0:
        raise EngineBuildError(f"{model_name}: TensorRT refused the optimization profile "
                               f"{ {k: v.as_dict() for k, v in profiles.items()} }")
    if not calibrate:
        return
    at_opt = builder.create_optimization_profile()
    for tensor in tensors:
        opt = profiles[tensor.name].opt
        at_opt.set_shape(tensor.name, opt, opt, opt)
    if not config.set_calibration_profile(at_opt):
        raise EngineBuildError(f"{model_name}: TensorRT refused the calibration profile at the opt "
                               f"shapes { {k: list(v.opt) for k, v in profiles.items()} }")
