"""The readiness marker (its fields: docs/events.md#metrics-operating-a-fleet), removed first
and written last by ``run``, and ``wait-ready``. The only file the job removes or replaces outside
the cache, and only when it is an engine-init marker: anything else at that path (someone's file
named by a typo, a folder, a link, a FIFO) is refused by :func:`check_replaceable` and left."""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from app import events
from app.cache import signing
from app.cache.fsread import UnsafeFileError, parse_json, read_small
from app.cache.hashing import hash_file
from app.cache.publish import atomic_write_bytes, fsync_dir, os_error_to_cache_error
from app.cancel import call_cancellable, cancellable_sleep
from app.errors import CacheWriteError, MarkerError

SCHEMA = 1
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
_MAX = 4 << 20


def current_boot_id(path: Path = BOOT_ID_FILE) -> str:
    """The kernel's per-boot UUID (shared with containers), or ''."""
    try:
        return read_small(path, 256, follow_links=True, truncate=True).decode("ascii", "replace").strip()
    except OSError:
        return ""


def check_replaceable(path: Path) -> bool:
    """True: a marker stands at ``path``; False: nothing does; else CacheWriteError."""
    what = "a file that is not an engine-init marker"
    try:
        doc = parse_json(read_small(path, _MAX))
        if isinstance(doc, dict) and doc.get("schema") == SCHEMA and isinstance(doc.get("engines"),
                                                                                 list):
            return True
    except ValueError:  # not JSON: someone's file
        pass
    except FileNotFoundError:
        return False
    except UnsafeFileError as exc:  # a link (not followed), a folder, a FIFO, a huge file
        what = f"not a marker: {exc.strerror}"
    except OSError as exc:
        raise os_error_to_cache_error(exc, path) from exc
    raise CacheWriteError(
        f"readiness_marker {path} is {what}: engine-init removes or replaces only its own "
        "marker, and leaves this as it is", hint="fix readiness_marker (a typo?), or move that "
        "file away")


def clear_marker(path: Path) -> bool:
    """Remove the marker (:func:`check_replaceable`); True if there was one."""
    if not check_replaceable(path):
        return False
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise os_error_to_cache_error(exc, path) from exc
    fsync_dir(path.parent)
    return True


def clear_stale_marker(marker: Path, logger: logging.Logger, *, report_refusal: bool) -> None:
    """Remove an earlier run's marker when this one failed; never raises (the run's own error
    is what the user must see)."""
    try:
        if clear_marker(marker):
            events.emit(logger, logging.WARNING, events.MARKER_CLEARED,
                        f"removed the previous marker {marker}: this run cannot start")
    except CacheWriteError as exc:
        if report_refusal:  # someone's file at that path: the user must hear of it too
            events.emit(logger, logging.WARNING, events.MARKER_REFUSED, str(exc),
                        marker=str(marker), hint=exc.hint)
    except OSError:
        pass


def write_marker(path: Path, doc: dict[str, Any], key: bytes | None) -> dict[str, Any]:
    check_replaceable(path)
    body = signing.signed(key, {"schema": SCHEMA, **doc})
    atomic_write_bytes(path, json.dumps(body, indent=2).encode())
    return body


def read_marker(path: Path) -> dict[str, Any]:
    try:
        raw = read_small(path, _MAX)
    except FileNotFoundError:
        raise MarkerError(f"no readiness marker at {path}", hint="engine-init run has not "
                          "finished successfully in this boot") from None
    except OSError as exc:
        raise MarkerError(f"cannot read marker {path}: {exc.strerror}") from None
    try:
        doc = parse_json(raw)
    except ValueError as exc:
        raise MarkerError(f"marker {path} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not _well_formed(doc):
        raise MarkerError(f"marker {path} has an unknown layout")
    return doc


def _well_formed(doc: dict[str, Any]) -> bool:
    # Whoever can write the marker's folder may have written it.
    engines = doc.get("engines")
    return isinstance(doc.get("boot_id", ""), str) and isinstance(engines, list) and all(
        isinstance(e, dict) and isinstance(e.get("engine_path"), str)
        and isinstance(e.get("sha256"), str) for e in engines)


def check_marker(doc: dict[str, Any], *, key: bytes | None, boot_id: str,
                 verify_engines: bool) -> None:
    """MarkerError unless the marker is for this boot, signed (if keyed) and true."""
    if boot_id and doc.get("boot_id") != boot_id:
        raise MarkerError(f"marker is from boot {doc.get('boot_id')!r}, not this boot {boot_id!r}",
                          hint="wait for this boot's engine-init run")
    if key is not None and not signing.is_signed_by(key, doc):
        raise MarkerError("marker signature does not verify", hint="the marker was not written "
                          "by engine-init with this key; do not trust its engine paths")
    if verify_engines:
        for item in doc["engines"]:  # read_marker checked the layout
            path = Path(item["engine_path"])
            try:
                ok = hash_file(path) == item.get("sha256")
            except (OSError, ValueError):
                ok = False
            if not ok:
                raise MarkerError(f"engine {path} does not match the digest in the marker")


def wait_ready(path: Path, *, timeout_s: float, key: bytes | None, verify_engines: bool,
               poll_s: float = 0.2) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    boot_id = current_boot_id()
    while True:
        try:
            doc = read_marker(path)
            # In a worker: --verify hashes every engine, and a signal must still end the wait.
            call_cancellable(functools.partial(check_marker, doc, key=key, boot_id=boot_id,
                                               verify_engines=verify_engines))
            return doc
        except MarkerError as exc:
            if time.monotonic() >= deadline:
                raise MarkerError(f"not ready after {timeout_s:g} s: {exc.message}",
                                  hint=exc.hint) from None
        cancellable_sleep(poll_s)
