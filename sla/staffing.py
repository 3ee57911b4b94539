"""Staffing from the capacity plan: how many agents are planned, as agent-seconds over time."""

from __future__ import annotations

import datetime as dt
from bisect import bisect_right
from collections import defaultdict
from zoneinfo import ZoneInfo

from sla.config import WEEKDAYS, ChannelPlan


class PlannedStaffing:
    """Planned agents of one channel over time: agent-seconds between any two instants."""

    def __init__(self, plan: ChannelPlan, zone: ZoneInfo, start: float, end: float) -> None:
        changes: defaultdict[float, int] = defaultdict(int)
        # A day either side: a plan day in the plan's zone may start before the window's first
        # local day (and end after its last) in the window's own offset.
        day = dt.datetime.fromtimestamp(start, zone).date() - dt.timedelta(days=1)
        last = dt.datetime.fromtimestamp(end, zone).date() + dt.timedelta(days=1)
        while day <= last:
            weekday = WEEKDAYS[day.weekday()]
            for interval in plan.intervals:
                if interval.agents and weekday in interval.days:
                    # Overlapping intervals add up, as overlapping shifts do.
                    changes[plan_time(day, interval.start, zone)] += interval.agents
                    changes[plan_time(day, interval.end, zone)] -= interval.agents
            day += dt.timedelta(days=1)
        self._times = sorted(changes)
        self._integral: list[float] = []  # agent-seconds from the first change to each time
        self._level: list[int] = []  # agents from each time on
        total, level = 0.0, 0
        for index, at in enumerate(self._times):
            if index:
                total += level * (at - self._times[index - 1])
            level += changes[at]
            self._integral.append(total)
            self._level.append(level)

    def _until(self, at: float) -> float:
        index = bisect_right(self._times, at) - 1
        if index < 0:
            return 0.0
        return self._integral[index] + self._level[index] * (at - self._times[index])

    def agent_seconds(self, start: float, end: float) -> float:
        """Planned agent-seconds in [start, end)."""
        return self._until(end) - self._until(start)


def plan_time(day: dt.date, clock_time: str, zone: ZoneInfo) -> float:
    """A plan's HH:MM on a local day as unix seconds; 24:00 is the next day's midnight."""
    hours, minutes = (int(part) for part in clock_time.split(":"))
    if hours == 24:
        day, hours = day + dt.timedelta(days=1), 0
    return dt.datetime.combine(day, dt.time(hours, minutes), tzinfo=zone).timestamp()
