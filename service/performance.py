"""The performance table: per agent x contact kind outcome figures, shrunk toward the team.

A contact kind is (inquiry_type, segment, journey_stage). For each agent and kind the book
keeps sums over the agent's outcomes; the team is every agent's outcomes on the same kind.
Figures (as in docs/performance.md):

- resolution rate = resolved / outcomes; durable resolution rate = durable / outcomes;
- NPS = % promoters (9-10) - % detractors (0-6) among outcomes with an NPS answer;
- revenue per interaction = revenue in the rules' performance currency / outcomes (minor
  units; an outcome without revenue counts 0);
- handle time = mean handle seconds.

With few outcomes an agent's figure says little, so each is shrunk toward the team's:
(n * own + k * team) / (n + k), k = `performance.prior_contacts`, n = the agent's outcomes (for
NPS: answers, each worth +100, 0 or -100). The score (0-1) is the weighted mean of durable
resolution rate, resolution rate, (NPS + 100) / 200 and min(revenue per interaction /
`revenue_reference_minor`, 1), with the weights of `performance.measure`. An agent without
outcomes on a kind gets the team's figures; on a kind nobody has outcomes for, every agent
scores 0, so the score never tells agents apart there.

The book is pure and in memory: feed it outcome rows (mappings with the `outcomes` column
names) with `add`, take them back with `remove`; a replaced row is `remove(old)` then
`add(new)`, which `apply` does for the (old or None, new) pairs an outcome listener receives.
Rows completed before `since` are ignored by both, so a window stays consistent. It is safe
to feed from one thread and read from another.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from routing_rules.schema import Performance, PerformanceMeasure
from routing_rules.scoring import ContactKind, FloatArray

AgentKey = tuple[str, ContactKind]
_VERSIONS = itertools.count(1)


@dataclass(slots=True)
class Tally:
    """Sums over a set of outcomes: one agent's on one kind, or the team's."""

    contacts: int = 0
    resolved: int = 0
    durable: int = 0
    promoters: int = 0  # NPS 9-10
    detractors: int = 0  # NPS 0-6
    answers: int = 0  # outcomes with an NPS answer
    handle_seconds: float = 0.0
    revenue: dict[str, int] = field(default_factory=dict)  # minor units by currency

    @classmethod
    def of_row(cls, row: Mapping[str, Any]) -> Tally:
        """The tally of one outcome row."""
        nps = row.get("nps")
        currency, amount = row.get("currency"), int(row.get("revenue_minor") or 0)
        return cls(
            contacts=1,
            resolved=int(bool(row["resolved"])),
            durable=int(bool(row["durable"])),
            promoters=int(nps is not None and nps >= 9),
            detractors=int(nps is not None and nps <= 6),
            answers=int(nps is not None),
            handle_seconds=float(row.get("handle_seconds") or 0.0),
            revenue={currency: amount} if currency and amount else {},
        )

    def copy(self) -> Tally:
        """An independent copy."""
        return replace(self, revenue=dict(self.revenue))

    def merge(self, other: Tally, sign: int = 1) -> None:
        """Add `other` into this tally (`sign=-1`: take it out)."""
        self.contacts += sign * other.contacts
        self.resolved += sign * other.resolved
        self.durable += sign * other.durable
        self.promoters += sign * other.promoters
        self.detractors += sign * other.detractors
        self.answers += sign * other.answers
        self.handle_seconds += sign * other.handle_seconds
        for currency, amount in other.revenue.items():
            total = self.revenue.get(currency, 0) + sign * amount
            if total:
                self.revenue[currency] = total
            else:
                self.revenue.pop(currency, None)


@dataclass(frozen=True, slots=True)
class Figures:
    """The measured figures of a set of outcomes (raw, shrunk or the team's)."""

    resolution_rate: float
    durable_resolution_rate: float
    nps: float | None  # None: no NPS answer at all
    revenue_per_interaction: float  # minor units of the performance currency
    handle_seconds: float


def raw_figures(tally: Tally, currency: str) -> Figures:
    """Figures of a tally with at least one outcome, unshrunk."""
    n = tally.contacts
    return Figures(
        resolution_rate=tally.resolved / n,
        durable_resolution_rate=tally.durable / n,
        nps=_nps_points(tally) / tally.answers if tally.answers else None,
        revenue_per_interaction=tally.revenue.get(currency, 0) / n,
        handle_seconds=tally.handle_seconds / n,
    )


def shrunk_figures(tally: Tally, team: Figures, k: float, currency: str) -> Figures:
    """Each figure as (n * own + k * team) / (n + k); NPS over answers only."""
    n = tally.contacts
    nps = team.nps
    if tally.answers:
        nps = (_nps_points(tally) + k * (team.nps or 0.0)) / (tally.answers + k)
    return Figures(
        resolution_rate=(tally.resolved + k * team.resolution_rate) / (n + k),
        durable_resolution_rate=(tally.durable + k * team.durable_resolution_rate) / (n + k),
        nps=nps,
        revenue_per_interaction=(tally.revenue.get(currency, 0) + k * team.revenue_per_interaction)
        / (n + k),
        handle_seconds=(tally.handle_seconds + k * team.handle_seconds) / (n + k),
    )


def _nps_points(tally: Tally) -> float:
    """+100 per promoter, -100 per detractor (passives count 0)."""
    return 100.0 * (tally.promoters - tally.detractors)


def score(figures: Figures, measure: PerformanceMeasure, revenue_reference_minor: int) -> float:
    """The weighted mean (0-1) of the figures the measure weighs; 0 when all weights are 0.

    No NPS answer at all counts as NPS 0, the middle of the scale.
    """
    weights = (measure.durable_resolution, measure.resolution, measure.nps, measure.revenue)
    total = float(sum(weights))
    if total <= 0:
        return 0.0
    revenue = figures.revenue_per_interaction / revenue_reference_minor
    parts = (
        figures.durable_resolution_rate,
        figures.resolution_rate,
        ((figures.nps or 0.0) + 100.0) / 200.0,
        min(max(revenue, 0.0), 1.0),
    )
    return sum(w * p for w, p in zip(weights, parts, strict=True)) / total


@dataclass(frozen=True, slots=True)
class PerformanceRecord:
    """One row of the table: an agent on a contact kind, beside the team on that kind."""

    agent_id: str
    kind: ContactKind
    contacts: int
    nps_answers: int
    raw: Figures
    shrunk: Figures
    score: float
    team_contacts: int
    team_nps_answers: int
    team: Figures
    team_score: float


@dataclass(slots=True)
class _KindTable:
    """Everything the book holds on one contact kind."""

    team: Tally = field(default_factory=Tally)
    agents: dict[str, Tally] = field(default_factory=dict)
    # (team score, agent -> score), computed on first use after a change.
    scores: tuple[float, dict[str, float]] | None = None


class PerformanceBook:
    """Outcome tallies per agent and contact kind, with shrunk figures and 0-1 scores.

    `performance` holds the rules' `performance` section (shrinkage, measure, currency);
    `configure` replaces it. `version` changes whenever a score may have changed.
    """

    def __init__(self, performance: Performance | None = None, *, since: float = -math.inf):
        self._performance = performance or Performance()
        self._since = since
        self._kinds: dict[ContactKind, _KindTable] = {}
        self._version = next(_VERSIONS)
        self._lock = threading.Lock()

    @property
    def version(self) -> int:
        """Changes whenever any figure or score may have changed."""
        return self._version

    @property
    def performance(self) -> Performance:
        """The performance settings in effect."""
        return self._performance

    @property
    def since(self) -> float:
        """Outcomes completed before this (unix seconds) are not counted."""
        return self._since

    def configure(self, performance: Performance) -> None:
        """Score with new settings from now on (the tallies stay)."""
        with self._lock:
            if performance != self._performance:
                self._performance = performance
                self._changed_all()

    def add(self, row: Mapping[str, Any]) -> None:
        """Count one outcome row (ignored if it completed before `since`)."""
        with self._lock:
            self._merge(row, 1)

    def remove(self, row: Mapping[str, Any]) -> None:
        """Take back a row given to `add` earlier, exactly as it was given."""
        with self._lock:
            self._merge(row, -1)

    def apply(self, changes: Iterable[tuple[Mapping[str, Any] | None, Mapping[str, Any]]]) -> None:
        """Apply (old row or None, new row) pairs: each old row out, each new row in."""
        with self._lock:
            for old, new in changes:
                if old is not None:
                    self._merge(old, -1)
                self._merge(new, 1)

    def reset(self, tallies: Iterable[tuple[AgentKey, Tally]], *, since: float) -> None:
        """Replace everything with `tallies` (several per agent and kind add up)."""
        kinds: dict[ContactKind, _KindTable] = {}
        for (agent_id, kind), tally in tallies:
            table = kinds.setdefault(kind, _KindTable())
            table.team.merge(tally)
            table.agents.setdefault(agent_id, Tally()).merge(tally)
        with self._lock:
            self._kinds, self._since = kinds, since
            self._changed_all()

    def scores(self, kind: ContactKind, ids: Sequence[str] | npt.NDArray[np.object_]) -> FloatArray:
        """Each agent's score on `kind`, in the order of `ids` (the team's for unknown agents)."""
        with self._lock:
            table = self._kinds.get(kind)
            if table is None:
                return np.zeros(len(ids), dtype=np.float64)
            team_score, by_agent = self._scores(table)
        return np.fromiter((by_agent.get(a, team_score) for a in ids), np.float64, len(ids))

    def records(
        self,
        *,
        agent_id: str | None = None,
        inquiry_type: str | None = None,
        segment: str | None = None,
        journey_stage: str | None = None,
    ) -> list[PerformanceRecord]:
        """The table's rows that match the filters, by agent, inquiry type, segment, stage.

        References to the tallies are taken under the lock and the figures computed outside it,
        so a large table does not hold up `scores` (dispatch) or the feeding thread.
        """
        wanted = (inquiry_type, segment, journey_stage)
        with self._lock:
            p = self._performance
            # Tallies are never changed in place (see `_merge`): references are a snapshot.
            chosen = [
                (kind, table.team, list(table.agents.items()))
                for kind, table in self._kinds.items()
                if all(w is None or w == v for w, v in zip(wanted, kind, strict=True))
            ]
        out = []
        for kind, team_tally, agents in chosen:
            team = raw_figures(team_tally, p.currency)
            team_score = score(team, p.measure, p.revenue_reference_minor)
            for agent, tally in agents:
                if agent_id is not None and agent != agent_id:
                    continue
                shrunk = shrunk_figures(tally, team, p.prior_contacts, p.currency)
                out.append(
                    PerformanceRecord(
                        agent_id=agent,
                        kind=kind,
                        contacts=tally.contacts,
                        nps_answers=tally.answers,
                        raw=raw_figures(tally, p.currency),
                        shrunk=shrunk,
                        score=score(shrunk, p.measure, p.revenue_reference_minor),
                        team_contacts=team_tally.contacts,
                        team_nps_answers=team_tally.answers,
                        team=team,
                        team_score=team_score,
                    )
                )
        out.sort(key=lambda r: (r.agent_id, *r.kind))
        return out

    def _merge(self, row: Mapping[str, Any], sign: int) -> None:
        """Add or take out one row (caller holds the lock).

        Tallies are replaced, never changed in place, so `records` can take a consistent
        snapshot by reference. The kind's scores are computed here, in the feeding thread, so
        that `scores` (on the route path) only reads them.
        """
        if float(row["completed_at"]) < self._since:
            return
        kind = (str(row["inquiry_type"]), str(row["segment"]), str(row["journey_stage"]))
        agent_id = str(row["agent_id"])
        tally = Tally.of_row(row)
        table = self._kinds.setdefault(kind, _KindTable())
        team = table.team.copy()
        team.merge(tally, sign)
        table.team = team
        own = table.agents[agent_id].copy() if agent_id in table.agents else Tally()
        own.merge(tally, sign)
        if own.contacts <= 0:
            table.agents.pop(agent_id, None)
        else:
            table.agents[agent_id] = own
        if table.team.contacts <= 0:
            del self._kinds[kind]
        else:
            table.scores = None
            self._scores(table)
        self._version = next(_VERSIONS)

    def _changed_all(self) -> None:
        """Compute every kind's scores afresh (caller holds the lock)."""
        for table in self._kinds.values():
            table.scores = None
            self._scores(table)
        self._version = next(_VERSIONS)

    def _scores(self, table: _KindTable) -> tuple[float, dict[str, float]]:
        """The team's score and each agent's on one kind (caller holds the lock)."""
        if table.scores is None:
            p = self._performance
            team = raw_figures(table.team, p.currency)
            by_agent = {
                agent: score(
                    shrunk_figures(tally, team, p.prior_contacts, p.currency),
                    p.measure,
                    p.revenue_reference_minor,
                )
                for agent, tally in table.agents.items()
            }
            table.scores = (score(team, p.measure, p.revenue_reference_minor), by_agent)
        return table.scores
