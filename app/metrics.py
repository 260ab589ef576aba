"""What the orchestrator sees of a run: the metrics textfile (docs/hardening.md#metrics-textfile:
the job's atomic writer, not prometheus_client's), filled from the job's events so that a failed
run reports what it did, and on failure the termination message (docs/deploy.md#kubernetes--k3s).

The kubelet makes ``/dev/termination-log``; elsewhere the path is absent (Docker) or something
else: the job never creates a file in a host's ``/dev`` as root, blocks on a FIFO or follows a
link there. It writes only into an existing regular file, best effort.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import stat
import threading
import time
from typing import Any

from app import events
from app.values import TERMINATION_LOG_ENV

#: The states of ``engine_init_model_outcome``; each model has one series per state, 1 for its own.
OUTCOMES = ("reused", "built", "promoted", "failed")
_OUTCOME_OF_KIND = {events.CACHE_HIT: "reused", events.ENGINE_BUILT: "built",
                    events.CANDIDATE_PROMOTED: "promoted", events.COMPILE_ERROR: "failed"}
_HOST_LABELS = ("backend", "sm", "jetpack", "l4t", "trt", "device")
TERMINATION_LOG = "/dev/termination-log"
MAX_BYTES = 4096


class RunRecorder(logging.Handler):
    """Listens to ``logger`` until :meth:`finish` writes the textfile; ``timings`` (the run's
    phase timings) is read then, not copied."""

    def __init__(self, logger: logging.Logger, timings: dict[str, float]) -> None:
        super().__init__(logging.DEBUG)
        self.logger, self.timings = logger, timings
        self.started = time.perf_counter()
        self.outcomes: dict[str, str] = {}
        self.build_s: dict[str, float] = {}
        self.engine_paths: dict[str, str] = {}
        self.host: dict[str, str] = {}
        self.compiler_phases: dict[str, float] = {}
        logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        kind, kv = events.event_fields(record)
        model = kv.get("model_name")
        if kind in _OUTCOME_OF_KIND and isinstance(model, str):
            self.outcomes[model] = _OUTCOME_OF_KIND[kind]
            if isinstance(kv.get("engine_path"), str):
                self.engine_paths[model] = kv["engine_path"]
            if isinstance(kv.get("duration_s"), (int, float)):
                self.build_s[model] = float(kv["duration_s"])
        elif kind == events.HOST_PROBED:
            self.host = {k: "" if kv.get(k) is None else str(kv[k]) for k in _HOST_LABELS}
        elif kind == events.COMPILE_SUMMARY and isinstance(kv.get("phase_timings_s"), dict):
            # A failed run never merges the compiler's phases into ``timings``: keep them here.
            self.compiler_phases = dict(kv["phase_timings_s"])

    def configured(self, config: Any) -> None:
        """With metrics on, import prometheus_client (~0.1 s of CPU) in a thread now: it overlaps
        the probe and the verification instead of delaying the exit."""
        if config.metrics_textfile is not None:
            threading.Thread(target=importlib.import_module, args=("prometheus_client",),
                             name="metrics-import", daemon=True).start()

    def finish(self, exit_code: int, config: Any = None, config_arg: str | None = None) -> None:
        """Write the textfile ``config`` (else the failed config's file or variable) names;
        never raises."""
        self.logger.removeHandler(self)
        if config is None:
            from app.loading import path_of_failed_config

            # Only what validation accepts for the key (a *.prom path), from a config that parsed.
            path = path_of_failed_config("metrics_textfile", config_arg)
        else:
            path = config.metrics_textfile
        if path is None:
            return
        started = time.perf_counter()
        try:
            from prometheus_client import generate_latest

            from app.cache.publish import atomic_write_bytes

            # Also after a signal: the file then reports the run's 130 or 143.
            atomic_write_bytes(path, generate_latest(self._registry(exit_code)), after_cancel=True,
                               outside=True)
        except Exception as exc:  # metrics must never change the run's outcome
            events.emit(self.logger, logging.WARNING, events.METRICS_UNWRITTEN,
                        f"could not write the metrics textfile {path}: {type(exc).__name__}: {exc}",
                        path=str(path), error_class=type(exc).__name__)
        else:
            events.emit(self.logger, logging.DEBUG, events.METRICS_WRITTEN,
                        f"wrote the metrics textfile {path}", path=str(path),
                        duration_s=round(time.perf_counter() - started, 4))

    def phases(self) -> dict[str, float]:
        merged = {**self.compiler_phases, **self.timings}
        merged.pop("total", None)
        return {k: float(v) for k, v in merged.items() if isinstance(v, (int, float))}

    def _registry(self, exit_code: int) -> Any:
        from prometheus_client import CollectorRegistry, Gauge, Info

        reg = CollectorRegistry(auto_describe=True)
        ended = time.time()
        Gauge("engine_init_run_timestamp_seconds", "Unix time at which the last run ended.",
              registry=reg).set(ended)
        Gauge("engine_init_run_exit_code", "Exit code of the last run (0: every engine ready).",
              registry=reg).set(exit_code)
        Gauge("engine_init_run_duration_seconds",
              "Wall time of the last run, interpreter start-up included.", registry=reg).set(
            time.perf_counter() - self.started + self.timings.get("startup", 0.0))
        phase = Gauge("engine_init_phase_seconds", "Seconds the last run spent per phase "
                      "(the marker's phase_timings_s; verify: checking cached engines).",
                      ["phase"], registry=reg)
        for name, seconds in sorted(self.phases().items()):
            phase.labels(name).set(seconds)
        outcome = Gauge("engine_init_model_outcome", "1 for what the last run did with the model: "
                        "reused, built, promoted or failed.", ["model", "outcome"], registry=reg)
        build = Gauge("engine_init_model_build_seconds",
                      "Seconds the backend took to build (and check) the model's engine.",
                      ["model"], registry=reg)
        size = Gauge("engine_init_model_engine_bytes", "Size of the model's engine file.",
                     ["model"], registry=reg)
        for model, state in sorted(self.outcomes.items()):
            for candidate in OUTCOMES:
                outcome.labels(model, candidate).set(float(candidate == state))
            if model in self.build_s:
                build.labels(model).set(self.build_s[model])
            path = self.engine_paths.get(model)
            if state != "failed" and path is not None:
                with contextlib.suppress(OSError):  # gone since: no figure rather than a wrong one
                    size.labels(model).set(os.stat(path).st_size)
        if self.host:
            Info("engine_init_host", "The host and backend the last run found.",
                 registry=reg).info(self.host)
        return reg


def process_age_s() -> float:
    """Seconds since this process started (Linux /proc; 0.0 elsewhere)."""
    from app.cache.fsread import read_small

    try:
        line = read_small("/proc/self/stat", 4096, follow_links=True, truncate=True).decode()
        start_ticks = int(line.rsplit(")", 1)[1].split()[19])
        uptime = float(read_small("/proc/uptime", 256, follow_links=True, truncate=True).split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def write_reason(line: str, exit_code: int, path: str | None = None) -> bool:
    """Whether ``line`` and ``exit_code`` went into the termination-message file; never raises
    or blocks."""
    target = path or os.environ.get(TERMINATION_LOG_ENV) or TERMINATION_LOG
    flags = os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(target, flags)  # no O_CREAT: the kubelet makes the file, nobody else should
    except (OSError, ValueError):  # absent, a link, no permission, a FIFO without reader, NUL
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO with a reader, a device, a folder
            return False
        os.ftruncate(fd, 0)  # after the check: truncating a device or FIFO would mean nothing
        # The line and the exit code in MAX_BYTES: the line is cut, never the code.
        tail = f" (exit code {exit_code})\n".encode()
        head = line.replace("\n", " ").encode("utf-8", "replace")[:MAX_BYTES - len(tail)]
        data = head.decode("utf-8", "ignore").encode() + tail
        while data:
            data = data[os.write(fd, data):]
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
