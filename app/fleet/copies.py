"""Candidates copied into the cache ahead of their promotion, while the run checks and loads
the ones before them (:mod:`app.fleet.promote` publishes or abandons each copy).

A promotion copies its engine while it hashes it (one read, the bytes hashed are the bytes
written), then the backend loads the copy. Done one model after the other, a run waits for
each copy and then for each load. Here the copies start as soon as the run knows which engines
it misses, one after the other in the order the run promotes them, each in a thread of its own
inside the atomic writer (:func:`app.cache.publish.atomic_writer`): the copy is written to a
temp file of the cache, hashed on the way and fsync'd, and the thread then waits for the
promotion's verdict. Publish: the writer renames it into place; abandon (a rejection, a run
that ends or is cancelled): the writer removes it. Nothing is published but by promotion,
under the cache lock, and only a copy whose digest and size are the signed ones.

Each copy reads at most one byte more than the signed size: a candidate that holds or grows to
more fills no disk.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from app.cache.hashing import copy_hashed
from app.cache.publish import atomic_writer
from app.cancel import CANCEL, cancelled_error
from app.fleet.candidates import candidate_folder, open_candidate
from app.fleet.trust import trust_folder

_POLL_S = 0.05


class _Abandoned(Exception):
    pass


class StagedCopy:
    """One candidate being copied to a temp file beside ``artifact``; see the module docstring."""

    def __init__(self, candidates: Path, sku: str, artifact: Path, size: int,
                 before: StagedCopy | None) -> None:
        self.digest: str | None = None
        self.size = 0
        #: What stopped the copy or its publishing; None when it went through.
        self.error: BaseException | None = None
        self._copied = threading.Event()
        self._decided = threading.Event()
        self._done = threading.Event()
        self._publish = False
        threading.Thread(target=self._run, args=(candidates, sku, artifact, size, before),
                         name=f"copy-{artifact.name}", daemon=True).start()

    def _run(self, candidates: Path, sku: str, artifact: Path, size: int,
             before: StagedCopy | None) -> None:
        try:
            if before is not None:
                before._copied.wait()  # one copy at a time: the first promoted is ready first
            source = open_candidate(candidates, sku, artifact.name)
            try:
                with atomic_writer(artifact, size_hint=size) as out:
                    self.digest, self.size = copy_hashed(source, out.fileno(), limit=size)
                    os.fsync(out.fileno())  # now, while the run works: publishing then waits less
                    self._copied.set()
                    while not self._decided.wait(_POLL_S):
                        if CANCEL.is_set():
                            raise cancelled_error()
                    if not self._publish:
                        raise _Abandoned
            finally:
                os.close(source)
        except _Abandoned:
            pass
        except BaseException as exc:  # handed to the promotion, which decides what it means
            self.error = exc
        finally:
            self._copied.set()
            self._done.set()

    def wait_copied(self) -> None:
        self._copied.wait()

    def publish(self) -> None:
        """Rename the copy into place (raises what stopped it)."""
        self._publish = True
        self._decided.set()
        self._done.wait()
        if self.error is not None:
            raise self.error

    def abandon(self) -> None:
        """Remove the copy (at once if copied; else as soon as its copy ends)."""
        self._decided.set()


class EarlyCopies:
    """The copies of a run's candidates, by artifact path; start with the artifacts in the
    order the run will promote them."""

    def __init__(self, candidates: Path, sku: str, public_key: Path | None,
                 artifacts: list[Path]) -> None:
        self._copies: dict[Path, StagedCopy] = {}
        folder = candidate_folder(candidates, sku)
        trust = trust_folder(folder, sku, public_key)
        if trust.reason:
            return  # promotion rejects every candidate of the folder, with that reason
        before = None
        for artifact in artifacts:
            described = trust.files.get(artifact.name)
            if described is None or not os.path.lexists(folder / "files" / artifact.name):
                continue
            before = StagedCopy(candidates, sku, artifact, described.size, before)
            self._copies[artifact] = before

    def take(self, artifact: Path) -> StagedCopy | None:
        return self._copies.pop(artifact, None)

    def abandon(self) -> None:
        """Remove every copy no promotion took (the run is ending)."""
        for copy in self._copies.values():
            copy.abandon()
        self._copies.clear()
