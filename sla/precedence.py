"""Who goes first at dispatch: the fast lane, within the standard tier's two protections.

Precedence is a small integer that dispatch turns into score points larger than any
match-quality difference (see `routing_rules.scoring`):

- 1 for a fast-lane contact: the fast lane is served first;
- 0 for a standard contact, except
- 1 for a standard contact while the **share cap** is engaged: at least `max_fast_lane_share` of
  the channel's contacts answered over the rolling window were fast-lane ones, so waiting
  standard contacts go first (and fast-lane contacts drop to 0);
- 2 for a standard contact that has waited `standard_max_wait_seconds` (the **starvation
  guard**): it goes ahead of everyone, fast lane included.

Both protections are work-conserving: they only reorder who is served, they never leave an agent
idle while somebody eligible waits. Their cost is made visible: every standard contact they put
ahead of a waiting fast-lane contact is counted (`promoted_by`) and reported, and the fast lane's
waits are measured beside the standard tier's.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from sla.config import Protection, Tier

SHARE_CAP = "share_cap"
STARVATION_GUARD = "starvation_guard"


@dataclass(frozen=True, slots=True)
class Precedence:
    """A contact's precedence at one dispatch, and the protection that raised it (if any)."""

    level: int
    promoted_by: str | None = None


FAST_FIRST = Precedence(1)
NORMAL = Precedence(0)


def precedence_of(
    tier: Tier, wait_seconds: float, *, cap_engaged: bool, protection: Protection
) -> Precedence:
    """The precedence of one waiting contact (see the module docstring)."""
    if tier == "fast_lane":
        return NORMAL if cap_engaged else FAST_FIRST
    limit = protection.standard_max_wait_seconds
    if limit is not None and wait_seconds >= limit:
        return Precedence(2, STARVATION_GUARD)
    if cap_engaged:
        return Precedence(1, SHARE_CAP)
    return NORMAL


class ShareLedger:
    """Answered contacts per channel and tier over a rolling window (the share cap's measure).

    Answers, not offers: a fast-lane contact whose offer is rejected twice takes one share.
    """

    def __init__(self) -> None:
        self._events: dict[str, deque[tuple[float, bool]]] = {}
        self._fast: dict[str, int] = {}

    def record(self, channel: str, tier: Tier, now: float) -> None:
        """One contact of `tier` was answered on `channel` at `now` (in time order)."""
        self._events.setdefault(channel, deque()).append((now, tier == "fast_lane"))
        if tier == "fast_lane":
            self._fast[channel] = self._fast.get(channel, 0) + 1

    def fast_share(self, channel: str, now: float, window_seconds: float) -> float | None:
        """The fast lane's share of the channel's answered contacts in the window; None if none."""
        events = self._events.get(channel)
        if not events:
            return None
        horizon = now - window_seconds
        while events and events[0][0] < horizon:
            _, fast = events.popleft()
            if fast:
                self._fast[channel] -= 1
        if not events:
            return None
        return self._fast.get(channel, 0) / len(events)

    def cap_engaged(self, channel: str, now: float, protection: Protection) -> bool:
        """Whether the fast lane has reached its share cap on `channel`."""
        if protection.max_fast_lane_share >= 1:
            return False
        share = self.fast_share(channel, now, protection.share_window_seconds)
        return share is not None and share >= protection.max_fast_lane_share
