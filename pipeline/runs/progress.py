"""Readable progress for long runs: which component runs, and what our own code reports.

TFX, Beam and TensorFlow log thousands of INFO lines; a person running `make demo` wants to see components
start and finish, training epochs and errors. This filter passes exactly that.
"""

from __future__ import annotations

import logging
import os
import re

from absl import logging as absl_logging

_COMPONENT_EVENT = re.compile(r"Component (\S+) is (running|finished)|Execution \d+ (succeeded|failed)")
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout
_PROJECT_DIRS = tuple(
    os.path.join(_ROOT, package) + os.sep
    for package in ("pipeline", "components", "trainer", "serving")
)


class ProgressFilter(logging.Filter):
    """Passes errors, TFX component lifecycle lines, and INFO+ records logged from this project's code."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        if record.pathname.startswith(_PROJECT_DIRS):
            return record.levelno >= logging.INFO
        return bool(_COMPONENT_EVENT.search(record.getMessage()))


def show_progress() -> None:
    """Routes absl and stdlib logging through one stderr handler with ProgressFilter."""
    absl_logging.set_verbosity(absl_logging.INFO)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    handler.addFilter(ProgressFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
