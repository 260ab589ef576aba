"""The ETA as ``engine-init run`` shows it, from the history kept in the provenance records.

The history has no file of its own. An artifact's record holds its last build
(``build_duration_s``, ``timing_cache``) and ``past_builds``, the builds of that artifact
before it on the same SKU, backend release and device. The artifact's name already tells
models, precisions and backend releases apart, so a record's history is exactly the builds an
estimate may compare. Before a rebuild, a pending record replaces the stored one: the stored
record's own build goes into ``past_builds`` first (:meth:`Timeline.noted`), so the history
survives the rebuild, and a killed build too. At most 4 are kept, which with the record's own
build makes the 5 that :mod:`app.governor.eta` takes the median of.

:class:`Timeline` reads the records of the run's misses once, before any pending record is
written. Before each build it emits one ``c10.build.eta`` event with what is left (that model
and those after it, in the config's order), and the build's progress events carry the same
ETA, counting down.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app import events
from app.backends.base import InferenceRuntime
from app.cache.record import BUILT, ProvenanceRecord, read_record
from app.governor.eta import PastBuild, past_build, remaining, rounded
from app.values import BuildConfig

__all__ = ["Timeline"]

#: Earlier builds a record keeps besides its own.
_KEEP = 4
#: eta.py's SKU key: every history given to it here is already this host's.
_HERE = "this host"


def _machine(record: ProvenanceRecord) -> tuple[Any, ...]:
    return record.sku, record.backend, record.backend_version, record.device_name


def _history(stored: ProvenanceRecord | None, expected: ProvenanceRecord,
             name: str) -> list[PastBuild]:
    """The builds ``stored`` vouches for, oldest first; none when it was made elsewhere."""
    if stored is None or _machine(stored) != _machine(expected):
        return []
    entries = list(stored.past_builds)
    if stored.status == BUILT:  # a pending record's own build never finished
        entries.append({"build_duration_s": stored.build_duration_s,
                        "timing_cache": stored.timing_cache})
    builds = (past_build({**e, "model_name": name}, _HERE) for e in entries if isinstance(e, dict))
    return [b for b in builds if b is not None]


class Timeline:
    """The builds of one run, in order. ``logger`` None: history is kept, nothing is shown
    (the governor is off). ``key``: the signing key; with one, only the history of records
    that verify with it is used (a forged record must not steer the ETA either)."""

    def __init__(self, builds: Sequence[tuple[str, Path, ProvenanceRecord]],
                 logger: logging.Logger | None, key: bytes | None = None) -> None:
        self.order = [name for name, _, _ in builds]
        self.history = {name: _history(read_record(artifact, key).record, expected, name)
                        for name, artifact, expected in builds}
        self.logger = logger
        self.timing_cache: dict[str, bool | None] = {}

    def noted(self, name: str) -> dict[str, Any]:
        """The record fields of ``name``'s build: the timing-cache state it started with and
        the earlier builds its record keeps."""
        kept = [{"build_duration_s": b.duration_s, "timing_cache": b.timing_cache}
                for b in self.history[name][-_KEEP:]]
        return {"timing_cache": self.timing_cache.get(name), "past_builds": kept}

    def start(self, name: str, runtime: InferenceRuntime, config: BuildConfig) -> BuildConfig:
        """Right before ``name``'s build: note whether a timing cache is there (the runtime's
        ``timing_cache_present(build_config)``), emit ``c10.build.eta``, and return
        ``config`` with the ETA fields for the build's progress events."""
        state = runtime.timing_cache_present(config)
        self.timing_cache[name] = state
        if self.logger is None:
            return config
        # Every build writes the timing cache, so the builds after this one will find one.
        later = None if state is None else True
        states = {m: state if m == name else later for m in self.order}
        history = [b for builds in self.history.values() for b in builds]
        now = remaining(self.order, _HERE, history, states)[self.order.index(name)]
        events.emit(self.logger, logging.INFO, events.BUILD_ETA, f"{name}: {now.describe()}",
                    **now.as_event(), timing_cache=state)
        started = time.monotonic()

        def progress_fields() -> dict[str, Any]:
            left = now.countdown(time.monotonic() - started)
            return {"eta_s": rounded(left),
                    "models_left": now.models_left}

        return dataclasses.replace(config, progress_fields=progress_fields)
