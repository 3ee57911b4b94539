"""A discrete-event simulation of one day, driving the service's own state and dispatch code.

Every contact is routed exactly as `POST /v1/route` routes it (the rule it matches, its
relaxation stages, its tier) into the in-process real-time state; the route fast path places it
or it waits; every completion, shift start and relaxation timer runs a dispatch of the channel.
Offers are accepted at once (the simulated agents never reject). The random draws of a contact
(arrival, handle time, patience, resolution and sale draws) are made up front from the seed,
so two runs with the same seed see the same customers (common random numbers): differences
between two rule sets or policies are not noise from different demand.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from routing_rules.compiled import CompiledRule, CompiledRules, ContactFacts
from service.performance import PerformanceBook
from service.state.memory import MemoryState
from service.state.records import AgentRecord, Reservation, WaitingEntry
from simulator.policies import Policy, PolicyDispatcher
from simulator.scenario import Distribution, Scenario, seconds_of_day
from sla.config import Tier

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
OutcomeHook = Callable[[dict[str, Any]], None]

# Event kinds, in the order they run when they fall on the same instant: capacity first.
_DONE, _SHIFT_ON, _ARRIVAL, _ABANDON, _SHIFT_OFF, _TICK = range(6)
TICK_SECONDS = 1.0  # as the service's timer: relaxation stages start within a second
DEFAULT_TARGET_SECONDS = 20.0  # answer target of a channel without an SLA in the rules


@dataclass(slots=True)
class Demand:
    """Every contact of a simulated day with its random draws, in arrival order."""

    arrival: FloatArray
    stream: IntArray
    fast_lane: npt.NDArray[np.bool_]
    handle: FloatArray
    patience: FloatArray  # inf: never abandons
    resolve_draw: FloatArray
    sale_draw: FloatArray
    sale_amount: IntArray

    @property
    def size(self) -> int:
        """Number of contacts."""
        return int(self.arrival.size)


@dataclass(slots=True)
class Floor:
    """The simulated agents: ids, channels, shifts and resolution probability per inquiry."""

    ids: list[str]
    records: list[AgentRecord]
    shift: list[tuple[float, float]]
    resolution: list[dict[str, float]]
    channels: list[list[str]]


@dataclass(slots=True)
class DayResult:
    """What happened to every contact of one simulated day."""

    scenario: Scenario
    policy: Policy
    seed: int
    demand: Demand
    answered_at: FloatArray  # nan: not answered
    abandoned_at: FloatArray  # nan: did not abandon
    agent: IntArray  # -1: not answered
    resolved: npt.NDArray[np.bool_]
    revenue: IntArray
    busy_seconds: float
    staffed_seconds: float
    end_time: float
    target: FloatArray = field(default_factory=lambda: np.zeros(0))  # answer target per contact
    resolution_probability: FloatArray = field(default_factory=lambda: np.zeros(0))


def _draw(rng: np.random.Generator, dist: Distribution | None, n: int) -> FloatArray:
    if dist is None:
        return np.full(n, math.inf)
    mean = float(dist.mean_seconds)
    if dist.distribution == "fixed":
        return np.full(n, mean)
    if dist.distribution == "exponential":
        return rng.exponential(mean, n)
    sigma2 = math.log1p(float(dist.cv) ** 2)
    return rng.lognormal(math.log(mean) - sigma2 / 2, math.sqrt(sigma2), n)


def make_demand(scenario: Scenario, seed: int) -> Demand:
    """Draw the day's contacts: Poisson arrivals per stream and hour, then their draws."""
    rng = np.random.default_rng([seed, 1])
    start, end = seconds_of_day(scenario.start), seconds_of_day(scenario.end)
    times: list[FloatArray] = []
    streams: list[IntArray] = []
    for index, stream in enumerate(scenario.streams):
        for hour, rate in sorted(scenario.hourly_rates(stream).items()):
            lo, hi = max(start, hour * 3600.0), min(end, (hour + 1) * 3600.0)
            if hi <= lo:
                continue
            count = int(rng.poisson(rate * (hi - lo) / 3600.0))
            times.append(rng.uniform(lo, hi, count))
            streams.append(np.full(count, index, dtype=np.int64))
    arrival = np.concatenate(times) if times else np.zeros(0)
    stream_of = np.concatenate(streams) if streams else np.zeros(0, dtype=np.int64)
    order = np.argsort(arrival, kind="stable")
    arrival, stream_of = arrival[order], stream_of[order]
    n = arrival.size
    shares = np.array([float(s.fast_lane_share) for s in scenario.streams])
    fast = rng.random(n) < (shares[stream_of] if n else 0.0)
    handle = np.empty(n)
    sale_amount = np.zeros(n, dtype=np.int64)
    for index, stream in enumerate(scenario.streams):
        mine = stream_of == index
        handle[mine] = _draw(rng, scenario.handle_time.of(stream.inquiry_type), int(mine.sum()))
        revenue = scenario.revenue.get(stream.inquiry_type)
        if revenue is not None and revenue.mean_minor > 0:
            amounts = rng.exponential(revenue.mean_minor, int(mine.sum()))
            sale_amount[mine] = np.maximum(1, np.rint(amounts)).astype(np.int64)
    patience = np.where(
        fast,
        _draw(rng, scenario.patience.fast_lane, n),
        _draw(rng, scenario.patience.standard, n),
    )
    return Demand(
        arrival=arrival,
        stream=stream_of,
        fast_lane=fast,
        handle=np.maximum(handle, 1e-3),
        patience=patience,
        resolve_draw=rng.random(n),
        sale_draw=rng.random(n),
        sale_amount=sale_amount,
    )


def make_floor(scenario: Scenario, seed: int) -> Floor:
    """The agents of every group, their shift, and their own resolution probabilities."""
    rng = np.random.default_rng([seed, 2])
    floor = Floor([], [], [], [], [])
    for group in scenario.agent_groups:
        bounds = np.cumsum([0.0, *(float(s.share) for s in group.shifts)]) * group.count
        cuts = np.rint(bounds).astype(int)
        for k in range(group.count):
            agent_id = f"{group.name}-{k + 1:04d}"
            shift = group.shifts[int(np.searchsorted(cuts, k, side="right")) - 1]
            spread = float(group.resolution_spread)
            offset = float(rng.uniform(-spread, spread)) if spread else 0.0
            floor.ids.append(agent_id)
            floor.records.append(
                AgentRecord(
                    agent_id,
                    agent_id,
                    dict(group.skills),
                    list(group.languages),
                    dict(group.capacity),
                )
            )
            floor.shift.append((seconds_of_day(shift.start), seconds_of_day(shift.end)))
            floor.resolution.append(
                {k: min(0.99, max(0.01, float(p) + offset)) for k, p in group.resolution.items()}
            )
            floor.channels.append(sorted(group.capacity))
    return floor


class DaySimulation:
    """One simulated day under one rule set, policy and seed."""

    def __init__(
        self,
        scenario: Scenario,
        rules: CompiledRules,
        *,
        policy: Policy = "optimal",
        seed: int = 1,
        on_outcome: OutcomeHook | None = None,
        progress: Callable[[int], None] | None = None,
        performance: PerformanceBook | None = None,
        floor_seed: int | None = None,
    ) -> None:
        self.scenario, self.rules, self.policy, self.seed = scenario, rules, policy, seed
        self.state = MemoryState(rules)
        self.dispatcher = PolicyDispatcher(self.state, policy=policy)
        # Outcome-based routing learns as the day goes: every outcome goes into the book the
        # dispatcher scores with (the service feeds its book from recorded outcomes the same way).
        self.dispatcher.performance = performance
        self._book = performance
        self.demand = make_demand(scenario, seed)
        # The agents (and their resolution skill) come from `floor_seed`: a history day has
        # other customers but the same agents as the day it precedes.
        self.floor = make_floor(scenario, seed if floor_seed is None else floor_seed)
        self._row = {agent_id: i for i, agent_id in enumerate(self.floor.ids)}
        self._on_outcome = on_outcome
        self._progress = progress
        n = self.demand.size
        self.answered_at = np.full(n, np.nan)
        self.abandoned_at = np.full(n, np.nan)
        self.agent = np.full(n, -1, dtype=np.int64)
        self.resolved = np.zeros(n, dtype=np.bool_)
        self.revenue = np.zeros(n, dtype=np.int64)
        self._p_resolve = np.zeros(n)
        self._events: list[tuple[float, int, int, int]] = []
        self._seq = 0
        self._busy = 0.0
        self._pending = 0  # events other than timer ticks
        self._facts = [
            ContactFacts(
                s.channel, s.segment, s.inquiry_type, s.journey_stage, s.language, s.attributes
            )
            for s in scenario.streams
        ]
        self._rule: list[CompiledRule] = [rules.rule_for(f) for f in self._facts]

    def _push(self, at: float, kind: int, index: int) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at, kind, self._seq, index))
        if kind != _TICK:
            self._pending += 1

    async def run(self) -> DayResult:
        """Simulate until every contact has been served or has left; the day's result."""
        for i, agent in enumerate(self.floor.records):
            await self.state.put_agent(agent)
            on, off = self.floor.shift[i]
            self._push(on, _SHIFT_ON, i)
            self._push(off, _SHIFT_OFF, i)
        for i, at in enumerate(self.demand.arrival.tolist()):
            self._push(at, _ARRIVAL, i)
        first = min(e[0] for e in self._events)
        self._push(first, _TICK, 0)
        now = first
        handlers = {
            _DONE: self._done,
            _SHIFT_ON: self._shift_on,
            _ARRIVAL: self._arrive,
            _ABANDON: self._abandon,
            _SHIFT_OFF: self._shift_off,
        }
        while self._events:
            now, kind, _, index = heapq.heappop(self._events)
            if kind == _TICK:
                if self._pending == 0:
                    continue  # nothing can happen any more: contacts still waiting stay so
                await self._tick(now)
                self._push(now + TICK_SECONDS, _TICK, 0)
                continue
            self._pending -= 1
            await handlers[kind](index, now)
        # Slot-seconds: a chat agent with two slots offers twice the time of a voice agent.
        staffed = sum(
            (off - on) * sum(record.capacity.values())
            for (on, off), record in zip(self.floor.shift, self.floor.records, strict=True)
        )
        return DayResult(
            scenario=self.scenario,
            policy=self.policy,
            seed=self.seed,
            demand=self.demand,
            answered_at=self.answered_at,
            abandoned_at=self.abandoned_at,
            agent=self.agent,
            resolved=self.resolved,
            revenue=self.revenue,
            busy_seconds=self._busy,
            staffed_seconds=staffed,
            end_time=now,
            target=self._targets(),
            resolution_probability=self._p_resolve,
        )

    def _targets(self) -> FloatArray:
        """Each contact's answer target: the scenario's, else its tier's SLA on its channel."""
        if self.scenario.service_level_seconds is not None:
            return np.full(self.demand.size, float(self.scenario.service_level_seconds))
        tiers = self.rules.ruleset.tiers
        per_stream = np.empty((len(self.scenario.streams), 2))
        for index, stream in enumerate(self.scenario.streams):
            for column, tier in enumerate(("standard", "fast_lane")):
                level = getattr(tiers, tier).sla.get(stream.channel)
                per_stream[index, column] = (
                    float(level.answer_seconds) if level is not None else DEFAULT_TARGET_SECONDS
                )
        return per_stream[self.demand.stream, self.demand.fast_lane.astype(np.int64)]

    # ---- events ---------------------------------------------------------------------------
    async def _arrive(self, i: int, now: float) -> None:
        stream = int(self.demand.stream[i])
        facts, rule = self._facts[stream], self._rule[stream]
        stage = rule.next_stage(0, wait_seconds=0.0, stalled_seconds=0.0)
        entry = WaitingEntry(
            f"c{i}",
            facts,
            facts.channel,
            facts.language,
            rule.name,
            stage,
            rule.priority,
            now,
            now,
            now,
            next_check_at=rule.next_check_time(
                stage, enqueued_at=now, stage_entered_at=now, last_eligible_free_at=now
            ),
            tier="fast_lane" if self.demand.fast_lane[i] else "standard",
        )
        await self.state.add_waiting(entry)
        if self.policy == "optimal":
            placement = await self.dispatcher.place_new(self.rules, entry, now=now)
            if placement is not None:
                await self._start(placement.reservation, now)
        else:
            await self._dispatch(facts.channel, now, only=[entry])
        if math.isnan(self.answered_at[i]) and math.isfinite(self.demand.patience[i]):
            self._push(now + float(self.demand.patience[i]), _ABANDON, i)
        if self._progress is not None:
            self._progress(1)

    async def _dispatch(
        self, channel: str, now: float, only: list[WaitingEntry] | None = None
    ) -> None:
        if channel not in self.rules.channels:
            return
        if only is None and await self.state.waiting_count(channel) == 0:
            return
        result = await self.dispatcher.dispatch(
            self.rules, channel, trigger="simulation", now=now, only=only
        )
        for placement in result.placements:
            await self._start(placement.reservation, now)

    async def _start(self, reservation: Reservation, now: float) -> None:
        """The agent accepts the offer at once: the conversation starts."""
        await self.state.end_reservation(reservation.reservation_id, keep_load=True, now=now)
        i = int(reservation.contact_id[1:])
        tier: Tier = "fast_lane" if self.demand.fast_lane[i] else "standard"
        self.dispatcher.ledger.record(reservation.channel, tier, now)
        self.answered_at[i] = now
        self.agent[i] = self._row[reservation.agent_id]
        self._push(now + float(self.demand.handle[i]), _DONE, i)

    async def _done(self, i: int, now: float) -> None:
        row = int(self.agent[i])
        stream = self.scenario.streams[int(self.demand.stream[i])]
        await self.state.release(self.floor.ids[row], stream.channel, now)
        handle = float(self.demand.handle[i])
        # Occupancy counts work inside the agent's shift (a call may run past its end).
        on, off = self.floor.shift[row]
        self._busy += max(0.0, min(now, off) - max(now - handle, on))
        chances = self.floor.resolution[row]
        p = chances.get(stream.inquiry_type, chances.get("default", 0.75))
        self._p_resolve[i] = p
        resolved = bool(self.demand.resolve_draw[i] < p)
        self.resolved[i] = resolved
        sale = self.scenario.revenue.get(stream.inquiry_type)
        if resolved and sale is not None and self.demand.sale_draw[i] < sale.probability:
            self.revenue[i] = int(self.demand.sale_amount[i])
        if self._on_outcome is not None or self._book is not None:
            outcome = self._outcome(i, row, stream.name, handle, now)
            if self._book is not None:
                self._book.add(outcome)
            if self._on_outcome is not None:
                self._on_outcome(outcome)
        await self._dispatch(stream.channel, now)

    def _outcome(
        self, i: int, row: int, stream_name: str, handle: float, now: float
    ) -> dict[str, Any]:
        stream = self.scenario.streams[int(self.demand.stream[i])]
        return {
            "contact_id": f"c{i}",
            "customer_id": f"{stream_name}-{i}",
            "agent_id": self.floor.ids[row],
            "channel": stream.channel,
            "segment": stream.segment,
            "inquiry_type": stream.inquiry_type,
            "journey_stage": stream.journey_stage,
            "tier": "fast_lane" if self.demand.fast_lane[i] else "standard",
            "resolved": bool(self.resolved[i]),
            "durable": bool(self.resolved[i]),
            "revenue_minor": int(self.revenue[i]),
            "currency": self.scenario.currency,
            "upsell": bool(self.revenue[i] > 0),
            "cross_sell": False,
            "nps": None,
            "handle_seconds": handle,
            "contact_created_at": float(self.demand.arrival[i]),
            "completed_at": now,
        }

    async def _abandon(self, i: int, now: float) -> None:
        if await self.state.remove_waiting(f"c{i}") is not None:
            self.abandoned_at[i] = now

    async def _shift_on(self, row: int, now: float) -> None:
        await self.state.set_status(self.floor.ids[row], "available", now)
        for channel in self.floor.channels[row]:
            await self._dispatch(channel, now)

    async def _shift_off(self, row: int, now: float) -> None:
        # A conversation in progress is finished; no new offers after the shift.
        await self.state.set_status(self.floor.ids[row], "offline", now)

    async def _tick(self, now: float) -> None:
        due: dict[str, list[WaitingEntry]] = {}
        for entry in await self.state.due_for_check(now):
            due.setdefault(entry.channel, []).append(entry)
        for channel, entries in due.items():
            await self._dispatch(channel, now, only=entries)
