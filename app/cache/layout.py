"""Every name under the cache root, in one place: the modules that read or write them take
their names from here.

::

    <cache_root>/
    ├── <model>__sm87_jp6.2_trt10.3_fp16.engine    an engine (names: app.cache.names)
    ├── <model>__ort1.20_x86_64-3fa4c2d1_fp32.ort  an ONNX Runtime model
    ├── <artifact>.sha256                          its sha256 sidecar (app.cache.sidecar)
    ├── <artifact>.record.json                     its provenance record (app.cache.record)
    ├── .<name>.tmp-<pid>-<random>                 being published (app.cache.publish)
    ├── .engine-init.lock                          the cache lock (app.cache.lock)
    ├── .engine-init.warm.json                     the hint: engines to hash early (app.cache.prehash)
    ├── .engine-init.robot-key                     the key records are signed with (app.cache.signing)
    ├── timing/                                    TensorRT timing caches (app.backends.tensorrt.caches)
    ├── calibration/                               INT8 calibration caches (same)
    └── candidates/                                fleet.candidates_dir's default (app.fleet.candidates)
        ├── .<sku>.lock                            one import or pull of a SKU at a time
        ├── <sku>/                                 a verified bundle's files
        └── tuf/                                   this robot's trusted TUF metadata (app.fleet.tuf_client)

The readiness marker (``readiness_marker``) and the calibration batches (``calibration_path``)
live where the config says, not under the cache root.
"""

from __future__ import annotations

from pathlib import Path

#: An artifact's companions, published after it: its sha256 sidecar, then its provenance record.
SIDECAR_SUFFIX = ".sha256"
RECORD_SUFFIX = ".record.json"
LOCK_NAME = ".engine-init.lock"
HINT_NAME = ".engine-init.warm.json"
ROBOT_KEY_NAME = ".engine-init.robot-key"
TIMING_FOLDER = "timing"
CALIBRATION_FOLDER = "calibration"
#: The subfolders of caches a bundle carries beside the engines.
CACHE_SUBFOLDERS = (TIMING_FOLDER, CALIBRATION_FOLDER)
CANDIDATES_FOLDER = "candidates"
#: Under the candidates root, beside the SKUs' folders.
TUF_FOLDER = "tuf"


def timing_folder(cache_root: Path) -> Path:
    return Path(cache_root) / TIMING_FOLDER


def calibration_folder(cache_root: Path) -> Path:
    return Path(cache_root) / CALIBRATION_FOLDER


def default_candidates_root(cache_root: Path) -> Path:
    """Where candidates go when ``fleet.candidates_dir`` is unset."""
    return Path(cache_root) / CANDIDATES_FOLDER
