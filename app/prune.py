"""``engine-init prune``: remove artifacts built for other hardware or software releases.

An artifact is "for this host" when its name parses and its hardware part equals what this host
would produce: ``sm``/``jp``/``trt`` for TensorRT engines, the ONNX Runtime release and CPU token
for ``.ort`` models. Names that do not parse (the user's own files) are never touched.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from app import events
from app.cache.lock import CacheLock
from app.cache.names import COMPANION_SUFFIXES, EngineFilenameSchema, OrtFilenameSchema, companion
from app.config import EngineInitConfig
from app.job import Prepared


def _ort_token() -> tuple[str, str] | None:
    from app.backends.onnxruntime import cpu_identity
    from app.host.packages import declared_version

    version = declared_version("onnxruntime")
    if not version:
        return None  # cannot tell which ONNX Runtime models are current: keep them
    return ".".join(version.split(".")[:2]), cpu_identity()[0]


def stale_artifacts(root: Path, prepared: Prepared) -> list[Path]:
    caps = prepared.report.capabilities
    ort = _ort_token()
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
