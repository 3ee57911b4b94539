"""A worker-process entry point that takes its time, to make a solve deadline pass for sure."""

from __future__ import annotations

import time
from typing import Any

from service.dispatch import _solve_in_worker


def slow_solve_in_worker(*args: Any) -> Any:
    """Sleep half a second, then solve as the real worker does."""
    time.sleep(0.5)
    return _solve_in_worker(*args)
