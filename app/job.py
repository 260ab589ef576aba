"""One boot's work (``engine-init run``) and ``engine-init prune``, which removes artifacts whose
name parses and names another host; names that do not parse (the user's files) stay."""

from __future__ import annotations

import logging
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app import events
from app.backends.base import InferenceRuntime
from app.backends.registry import AUTO, BACKENDS, create_backend, resolve_backend_name
from app.cache import hashing as prehash
from app.cache.hashing import EarlyDigests
from app.cache.lock import CacheLock
from app.cache.names import COMPANION_SUFFIXES, HINT_NAME, EngineFilenameSchema, OrtFilenameSchema, companion
from app.cache.publish import os_error_to_cache_error
from app.cache.signing import load_key, robot_key
from app.cancel import call_cancellable, checkpoint
from app.compiler import EngineCompiler
from app.config import EngineCompileRequest, EngineInitConfig
from app.errors import CacheWriteError, ConfigError
from app.host.identity import identity_of
from app.host.probe import HostReport, declared_version, probe_host
from app.readiness import clear_marker, current_boot_id, write_marker
from app.values import EngineCompileResult


@dataclass(frozen=True)
class Prepared:
    report: HostReport
    backend: InferenceRuntime
    compiler: EngineCompiler


def check_folders(config: EngineInitConfig) -> None:
    marker_dir = config.readiness_marker.parent
    if not marker_dir.is_dir():
        raise CacheWriteError(f"readiness_marker: folder {marker_dir} does not exist",
                              hint="create it, or mount a per-boot folder there (e.g. host /run)")
    if not os.access(marker_dir, os.W_OK | os.X_OK):
        raise CacheWriteError(f"readiness_marker: folder {marker_dir} is not writable by uid "
                              f"{os.getuid()}", hint="make it writable by the job's user")
    root = config.cache_root
    try:
        st = os.stat(root)
    except FileNotFoundError:
        return  # created by the compiler, with the parents
    except OSError as exc:
        raise os_error_to_cache_error(exc, root) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise CacheWriteError(f"cache_root {root} exists and is not a folder",
                              hint="point cache_root at a folder (the engine-cache volume)")
    if st.st_mode & stat.S_IWOTH and not config.allow_world_writable_cache:
        raise ConfigError(f"cache_root {root} is world-writable: anyone could plant an engine",
                          hint="chmod o-w it, or set allow_world_writable_cache: true")
    if not os.access(root, os.W_OK | os.X_OK):
        raise CacheWriteError(f"cache_root {root} is not writable by uid {os.getuid()}",
                              hint="chown it to the job's user or give its group write access "
                              "(docs/deploy.md: Permissions)")


def prepare(config: EngineInitConfig, logger: logging.Logger, *,
            make_robot_key: bool = False) -> Prepared:
    """Probe the host and pick the backend; no file is touched but, with ``make_robot_key``,
    the robot's record key."""
    def probe(need_gpu: bool) -> HostReport:
        # In a worker: the driver may hang, and a signal must still end the run.
        return call_cancellable(lambda: probe_host(need_gpu=need_gpu, cuda_device=config.cuda_device,
                                                   jetpack_override=config.jetpack))

    report = probe(config.backend != AUTO and BACKENDS[config.backend].needs_gpu)
    name = resolve_backend_name(config.backend, report.gpu is not None)
    if config.backend == AUTO:
        from app.backends.tensorrt.api import check_auto_choice

        check_auto_choice(report, name, logger)
    if BACKENDS[name].needs_gpu and report.gpu is None:
        report = probe(True)
    for warning in report.warnings:
        events.emit(logger, logging.WARNING, events.HOST_WARNING, warning)
    caps = report.capabilities
    # A CPU-only config: why the GPU could not be probed is no problem of this run's.
    gpu_unused = config.backend != AUTO and not BACKENDS[name].needs_gpu
    events.emit(logger, logging.INFO, events.HOST_PROBED,
                f"host sm{caps.sm} jp{caps.jetpack} trt{caps.trt} backend {name}",
                sm=caps.sm, jetpack=caps.jetpack, l4t=caps.l4t, trt=caps.trt_full or caps.trt,
                device=caps.device_name, backend=name,
                gpu_error=None if gpu_unused else report.gpu_error or None)
    if gpu_unused and report.gpu_error:
        events.emit(logger, logging.DEBUG, events.HOST_GPU_UNUSED,
                    f"no GPU probed (backend {name} needs none): {report.gpu_error}",
                    gpu_error=report.gpu_error)
    supported = BACKENDS[name].precisions
    for b in config.backbones:
        precision = b.precision or config.precision
        if precision not in supported:
            raise ConfigError(f"backbones[{b.model_name}].precision: {precision.value} is not "
                              f"supported by the {name} backend",
                              hint=f"use one of {sorted(p.value for p in supported)}")
    backend = create_backend(name, caps)
    key = load_key(config.signing_key_file) if config.signing_key_file else None
    if key is None and not config.trust_untracked_engines:
        # Only this robot's own records are trusted: sign them with its own key (run makes
        # it; the read-only commands only read it).
        key = robot_key(config.cache_root, create=make_robot_key)
    identity = identity_of(report, name)
    return Prepared(report, backend, EngineCompiler(
        backend, logger, signing_key=key, identity=identity,
        trust_untracked=config.trust_untracked_engines))


def run_job(config: EngineInitConfig, logger: logging.Logger,
            timings: dict[str, float] | None = None, *,
            early: EarlyDigests | None = None) -> dict[str, Any]:
    """The whole boot; returns the marker document it wrote."""
    timings = {} if timings is None else timings
    t = time.perf_counter()
    if clear_marker(config.readiness_marker):
        events.emit(logger, logging.INFO, events.MARKER_CLEARED,
                    f"removed the previous marker {config.readiness_marker}")
    check_folders(config)
    checkpoint()
    prepared = prepare(config, logger, make_robot_key=True)
    checkpoint()
    timings["probe"] = time.perf_counter() - t
    caps = prepared.report.capabilities
    # The marker is written under the same lock as the engines, so that no other run can
    # replace an engine between our check and our marker.
    with CacheLock(config.cache_root, config.lock_timeout_s, logger) as lock:
        results = prepared.compiler.compile_engines_for_corpus(
            EngineCompileRequest.from_config(config, caps), held_lock=lock, early=early)
        timings.update(prepared.compiler.last_phase_timings)
        timings["lock_wait"] = lock.waited_s
        timings.pop("total", None)
        t = time.perf_counter()
        try:
            prehash.write_hint(config.cache_root, [Path(r.entry.engine_path).name for r in results])
        except OSError as exc:  # a lost hint costs the next boot some speed, nothing else
            events.emit(logger, logging.DEBUG, events.HINT_UNWRITTEN,
                        f"could not write {HINT_NAME}: {exc}")
        doc = write_marker(config.readiness_marker, {
            "boot_id": current_boot_id(),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": {"sm": caps.sm, "jetpack": caps.jetpack, "l4t": caps.l4t, "trt": caps.trt,
                     "trt_full": caps.trt_full, "device_name": caps.device_name},
            "backend": prepared.backend.name,
            "backend_version": prepared.backend.version(),
            "engines": [_engine_item(r) for r in results],
            "phase_timings_s": {k: round(v, 4) for k, v in timings.items()},
        }, prepared.compiler.signing_key)
    timings["marker"] = time.perf_counter() - t
    events.emit(logger, logging.INFO, events.MARKER_WRITTEN,
                f"ready: {len(results)} engine(s), marker {config.readiness_marker}",
                marker=str(config.readiness_marker), engines=len(results),
                phase_timings_s={k: round(v, 4) for k, v in timings.items()})
    return doc


def _engine_item(result: EngineCompileResult) -> dict[str, Any]:
    entry = result.entry
    return {
        "model_name": Path(entry.engine_path).name.split("__", 1)[0],
        "engine_path": str(Path(entry.engine_path).resolve()),
        "sha256": entry.sha256_hex,
        "precision": entry.precision.value,
        "outcome": result.outcome.value,
        "compile_duration_s": result.compile_duration_s,
        **({"accuracy": result.accuracy} if result.accuracy is not None else {}),
        **({"precision_in_effect": result.precision_in_effect}
           if result.precision_in_effect is not None else {}),
    }


def stale_artifacts(root: Path, prepared: Prepared) -> list[Path]:
    from app.backends.onnxruntime import cpu_identity

    caps = prepared.report.capabilities
    version = declared_version("onnxruntime")
    # No version: which ONNX Runtime models are current cannot be told, so they stay.
    ort = (".".join(version.split(".")[:2]), cpu_identity()[0]) if version else None
    stale: list[Path] = []
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    for name in names:
        try:
            trt = EngineFilenameSchema.parse(name)
            if (trt.sm, trt.jetpack, trt.trt) != (caps.sm, caps.jetpack, caps.trt):
                stale.append(root / name)
            continue
        except ValueError:
            pass
        try:
            parsed = OrtFilenameSchema.parse(name)
        except ValueError:
            continue
        if ort is not None and (parsed.ort, parsed.cpu) != ort:
            stale.append(root / name)
    return stale


def prune_cache(config: EngineInitConfig, prepared: Prepared, logger: logging.Logger,
                *, dry_run: bool) -> list[Path]:
    root = config.cache_root
    if not root.is_dir():
        return []
    with CacheLock(root, config.lock_timeout_s, logger):
        victims: list[Path] = []
        for artifact in stale_artifacts(root, prepared):
            for path in [artifact] + [companion(artifact, s) for s in COMPANION_SUFFIXES]:
                # A folder under an artifact's name may hold someone's data: never removed.
                if path.is_symlink() or (path.exists() and not path.is_dir()):
                    victims.append(path)
        if not dry_run:
            for path in victims:
                path.unlink(missing_ok=True)
                events.emit(logger, logging.INFO, events.PRUNED, f"removed {path.name}",
                            path=str(path))
    return victims
