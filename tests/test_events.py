"""The terminal's progress bar: one line redrawn per progress event, with the governor's ETA."""

from __future__ import annotations

import io
import logging

from app import events


def _bar(**kv):
    stream = io.StringIO()
    logger = logging.getLogger(f"test.bar.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(events.ProgressBarHandler(stream))
    events.emit(logger, logging.INFO, events.COMPILE_PROGRESS, "x", model_name="aliked",
                phase="Building engine", step=2, total=4, **kv)
    return stream.getvalue()


def test_the_bar_shows_the_eta_when_there_is_one():
    assert "[###############---------------] 2/4  ~250 s left" in _bar(eta_s=250.4, models_left=1)
    assert "left" not in _bar(eta_s=None, models_left=1)


def _text_lines(*records):
    stream = io.StringIO()
    logger = logging.getLogger(f"test.text.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = events.ProgressBarHandler(stream)
    logger.addHandler(handler)
    for level, kind, message in records:
        events.emit(logger, level, kind, message)
    handler.close()
    return stream.getvalue().splitlines()


def test_text_mode_leaves_a_failure_to_the_closing_error_line():
    """The CLI ends a failed run with one ``engine-init: error:`` line saying the same."""
    lines = _text_lines((logging.INFO, events.COMPILE_START, "aliked: compiling"),
                        (logging.ERROR, events.ACCURACY_FAILED, "aliked: fails the check"),
                        (logging.INFO, events.COMPILE_SUMMARY, "0 built, 0 reused of 3"),
                        (logging.WARNING, events.MARKER_CLEARED, "removed the previous marker"),
                        (logging.ERROR, events.RUN_FAILED, "aliked: fails the check"))
    assert lines == [
        "aliked: compiling", "0 built, 0 reused of 3", "removed the previous marker"]


def test_text_mode_shows_a_failure_the_run_goes_on_after():
    """A rejected candidate's gate failure: the run goes on, the failure is shown, in order."""
    lines = _text_lines((logging.ERROR, events.ACCURACY_FAILED, "aliked: fails the check"),
                        (logging.WARNING, events.CANDIDATE_REJECTED, "aliked: candidate rejected"),
                        (logging.ERROR, events.DLA_IGNORED, "last words"))
    assert lines == [
        "aliked: fails the check", "aliked: candidate rejected", "last words"]
