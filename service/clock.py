"""Wall-clock time for routing decisions (unix seconds); tests replace `now` to move time."""

from __future__ import annotations

import time


def now() -> float:
    """The current time in unix seconds."""
    return time.time()
