"""Figures of a simulated day, and their confidence intervals over seeds.

Definitions match the SLA report's (docs/fast-lane.md), so a simulated figure and a measured
one can be compared:

- **% within SLA** (per tier) = answered within the tier's answer target / (answered +
  abandoned after the target + still unanswered past it at the end); short abandons count in
  neither part.
- **mean wait** = mean time to answer of answered contacts; **abandonment** = abandoned /
  offered; **occupancy** = handle seconds inside shifts / staffed slot-seconds (a two-slot chat
  agent offers twice an agent's time); **resolution rate** =
  resolved / answered; **revenue per contact** = revenue / offered (minor units).

Contacts that arrive during the warm-up are not counted. Intervals are 95 % Student-t
intervals over seeds; a comparison uses the paired difference per seed (both runs of a seed
see the same customers), which is much tighter than the difference of two intervals.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from simulator.engine import DayResult
from simulator.scenario import seconds_of_day

# Two-sided 95 % Student-t quantiles for 1..30 degrees of freedom; the normal value beyond.
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip

METRICS: dict[str, str] = {
    "offered": "contacts offered",
    "sla_standard": "% within SLA, standard",
    "sla_fast_lane": "% within SLA, fast lane",
    "mean_wait_standard": "mean wait (s), standard",
    "mean_wait_fast_lane": "mean wait (s), fast lane",
    "mean_wait": "mean wait (s), all",
    "abandonment": "% abandoned",
    "occupancy": "% occupancy",
    "resolution_rate": "% resolved (of answered)",
    "revenue_per_contact": "revenue per contact (minor units)",
}


def t95(df: int) -> float:
    """The two-sided 95 % Student-t quantile for `df` degrees of freedom."""
    return _T95[df - 1] if df <= len(_T95) else 1.96


def _pct(num: float, den: float) -> float:
    return math.nan if den == 0 else 100.0 * num / den


def _mean(values: npt.NDArray[np.float64]) -> float:
    return float(values.mean()) if values.size else math.nan


def _counted(day: DayResult) -> npt.NDArray[np.bool_]:
    """Contacts that arrived after the warm-up."""
    start = seconds_of_day(day.scenario.start) + 60.0 * day.scenario.warmup_minutes
    return day.demand.arrival >= start


def _within_and_late(
    day: DayResult,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Per contact: answered within its target, and late (answered after it, abandoned after
    it, or still unanswered past it at the end). Short abandons are neither."""
    d = day.demand
    answered = ~np.isnan(day.answered_at)
    abandoned = ~np.isnan(day.abandoned_at)
    wait = np.where(answered, day.answered_at - d.arrival, np.inf)
    within = answered & (wait <= day.target)
    late = (
        (answered & (wait > day.target))
        | (abandoned & (day.abandoned_at - d.arrival > day.target))
        | (~answered & ~abandoned & (day.end_time - d.arrival > day.target))
    )
    return within, late


def day_figures(day: DayResult) -> dict[str, float]:
    """Every figure of METRICS for one simulated day."""
    d = day.demand
    counted = _counted(day)
    answered = ~np.isnan(day.answered_at)
    abandoned = ~np.isnan(day.abandoned_at)
    wait = np.where(answered, day.answered_at - d.arrival, np.nan)
    within, late = _within_and_late(day)
    figures: dict[str, float] = {"offered": float(counted.sum())}
    for tier, fast in (("standard", False), ("fast_lane", True)):
        mine = counted & (d.fast_lane == fast)
        good, bad = float((mine & within).sum()), float((mine & late).sum())
        figures[f"sla_{tier}"] = _pct(good, good + bad)
        figures[f"mean_wait_{tier}"] = _mean(wait[mine & answered])
    figures["mean_wait"] = _mean(wait[counted & answered])
    figures["abandonment"] = _pct(float((counted & abandoned).sum()), float(counted.sum()))
    figures["occupancy"] = _pct(day.busy_seconds, day.staffed_seconds)
    figures["resolution_rate"] = _pct(
        float((counted & day.resolved).sum()), float((counted & answered).sum())
    )
    figures["revenue_per_contact"] = (
        float(day.revenue[counted].sum()) / float(counted.sum()) if counted.any() else math.nan
    )
    return figures


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds with its 95 % interval half-width (nan with one seed)."""

    mean: float
    half_width: float
    n: int

    @property
    def low(self) -> float:
        """Lower end of the interval."""
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        """Upper end of the interval."""
        return self.mean + self.half_width

    def covers(self, value: float) -> bool:
        """Whether `value` lies in the interval."""
        return self.low <= value <= self.high


def estimate(values: list[float]) -> Estimate:
    """Mean and 95 % t-interval of per-seed values (nan values, e.g. no fast lane, dropped)."""
    kept = [v for v in values if not math.isnan(v)]
    if not kept:
        return Estimate(math.nan, math.nan, 0)
    if len(kept) == 1:
        return Estimate(kept[0], math.nan, 1)
    half = t95(len(kept) - 1) * statistics.stdev(kept) / math.sqrt(len(kept))
    return Estimate(statistics.fmean(kept), half, len(kept))


def summarise(days: list[DayResult]) -> dict[str, Estimate]:
    """Every figure as an estimate over the given days (one per seed)."""
    per_day = [day_figures(day) for day in days]
    return {name: estimate([f[name] for f in per_day]) for name in METRICS}


def paired_difference(base: list[DayResult], other: list[DayResult]) -> dict[str, Estimate]:
    """other - base per figure, paired by seed (both lists in the same seed order)."""
    assert [d.seed for d in base] == [d.seed for d in other], "pair runs by seed"
    a = [day_figures(day) for day in base]
    b = [day_figures(day) for day in other]
    return {
        name: estimate([y[name] - x[name] for x, y in zip(a, b, strict=True)]) for name in METRICS
    }


def hourly(days: list[DayResult], tier: str) -> dict[int, tuple[float, float]]:
    """Hour of arrival -> (mean wait s, % within SLA) of one tier, pooled over the days, with
    the same warm-up and lateness rules as `day_figures`."""
    waits: dict[int, list[float]] = {}
    good: dict[int, int] = {}
    bad: dict[int, int] = {}
    fast = tier == "fast_lane"
    for day in days:
        d = day.demand
        mine = _counted(day) & (d.fast_lane == fast)
        answered = ~np.isnan(day.answered_at)
        within, late = _within_and_late(day)
        hours = (d.arrival // 3600).astype(np.int64)
        for i in np.flatnonzero(mine).tolist():
            hour = int(hours[i])
            if answered[i]:
                waits.setdefault(hour, []).append(float(day.answered_at[i] - d.arrival[i]))
            good[hour] = good.get(hour, 0) + int(within[i])
            bad[hour] = bad.get(hour, 0) + int(late[i])
    out: dict[int, tuple[float, float]] = {}
    for hour in sorted(set(waits) | set(good)):
        w = waits.get(hour, [])
        total = good.get(hour, 0) + bad.get(hour, 0)
        out[hour] = (
            statistics.fmean(w) if w else math.nan,
            100.0 * good.get(hour, 0) / total if total else math.nan,
        )
    return out
