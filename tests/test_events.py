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
