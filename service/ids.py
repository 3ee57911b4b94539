"""Identifiers for reservations and decisions: unique across processes and restarts, cheap.

A random 64-bit prefix drawn at import plus a counter: one `os.urandom` per process instead of
one per id (uuid4 costs a system call each, on the route hot path twice).
"""

from __future__ import annotations

import itertools
import os

_PREFIX = os.urandom(8).hex()
_COUNTER = itertools.count(1)


def _reseed() -> None:
    # A forked worker must not repeat its parent's ids.
    global _PREFIX, _COUNTER
    _PREFIX = os.urandom(8).hex()
    _COUNTER = itertools.count(1)


os.register_at_fork(after_in_child=_reseed)


def new_id() -> str:
    """A new 32-hex-character identifier."""
    return f"{_PREFIX}{next(_COUNTER):016x}"
