"""Dispatch policies the simulator compares, all running the service's own dispatch code.

- `optimal`: the service as it runs: one assignment of all waiting contacts against all free
  capacity (OR-Tools), a newcomer placed on its own by the route fast path.
- `greedy`: the same scores, but contacts are served one at a time, most urgent first (tier
  precedence, then rule priority, then arrival), each taking its best-scoring free agent.
- `longest-idle`: the classic ACD: the most urgent contact takes the eligible agent who has been
  idle longest, whatever their skill levels or results.

Eligibility, relaxation stages, tier precedence and the standard tier's protections are the
service's for every policy; only the choice among eligible pairs differs.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from routing_rules.assignment import Assignment, greedy
from routing_rules.compiled import CompiledRules
from routing_rules.scoring import Arcs
from service.dispatch import Dispatcher, DispatchResult
from service.state.base import RealtimeState
from service.state.records import WaitingEntry
from sla.precedence import precedence_of

Policy = Literal["optimal", "greedy", "longest-idle"]
POLICIES: tuple[Policy, ...] = ("optimal", "greedy", "longest-idle")


class PolicyDispatcher(Dispatcher):
    """The service's dispatcher with the assignment step chosen by `policy`.

    Solves always run inline (no worker process and no deadline): a simulation must not depend
    on how busy the machine is.
    """

    def __init__(
        self, state: RealtimeState, *, policy: Policy, reservation_ttl: float = 20.0
    ) -> None:
        super().__init__(
            state,
            reservation_ttl=reservation_ttl,
            solve_time_limit=60.0,
            inline_max_arcs=2**62,
        )
        self.policy = policy
        self._rules: CompiledRules | None = None
        self._entries: list[WaitingEntry] = []
        self._now = 0.0

    async def dispatch(
        self,
        rules: CompiledRules,
        channel: str,
        *,
        trigger: str,
        now: float | None = None,
        only: list[WaitingEntry] | None = None,
    ) -> DispatchResult:
        """As `Dispatcher.dispatch`; remembers the contacts so the policy can order them."""
        assert now is not None, "the simulator always passes its own clock"
        if self.policy != "optimal":
            # The in-process state never yields inside these calls, so this is the same list,
            # in the same order, that the dispatch below works on.
            self._entries = list(only) if only is not None else await self._state.waiting(channel)
            self._rules, self._now = rules, now
        return await super().dispatch(rules, channel, trigger=trigger, now=now, only=only)

    async def _solve(self, n: int, capacity: Any, arcs: Arcs, channel: str) -> Assignment:
        if self.policy == "optimal":
            return await super()._solve(n, capacity, arcs, channel)
        order = self._urgency_order(channel)
        if self.policy == "greedy":
            rank = np.empty(n, dtype=np.int64)
            rank[order] = np.arange(n, dtype=np.int64)
            ranked = greedy(n, capacity, Arcs(rank[arcs.contact], arcs.agent, arcs.value))
            agent_of = np.full(n, -1, dtype=np.int64)
            agent_of[order] = ranked.agent_of
            return Assignment(agent_of, ranked.total_value, "greedy")
        pool = await self._state.pool(channel, self._now)
        return _longest_idle(n, capacity, arcs, order, np.asarray(pool.idle_seconds))

    def _urgency_order(self, channel: str) -> np.ndarray[Any, np.dtype[np.int64]]:
        """Contact indices, most urgent first: precedence, rule priority, then arrival."""
        rules = self._rules
        assert rules is not None
        protection = rules.ruleset.tiers.protection
        engaged = self.ledger.cap_engaged(channel, self._now, protection)
        keys = []
        for i, entry in enumerate(self._entries):
            level = precedence_of(
                entry.tier,
                self._now - entry.enqueued_at,
                cap_engaged=engaged,
                protection=protection,
            ).level
            keys.append((-level, -entry.priority, entry.enqueued_at, i))
        keys.sort()
        return np.asarray([k[3] for k in keys], dtype=np.int64)


def _longest_idle(
    n: int,
    capacity: Any,
    arcs: Arcs,
    order: np.ndarray[Any, np.dtype[np.int64]],
    idle_seconds: np.ndarray[Any, np.dtype[np.float64]],
) -> Assignment:
    """Each contact in `order` takes its eligible free agent idle longest (lowest row on ties)."""
    remaining = np.asarray(capacity, dtype=np.int64).copy()
    agent_of = np.full(n, -1, dtype=np.int64)
    by_contact = np.argsort(arcs.contact, kind="stable")
    starts = np.searchsorted(arcs.contact[by_contact], np.arange(n + 1))
    total = 0
    for i in order.tolist():
        mine = by_contact[starts[i] : starts[i + 1]]
        if mine.size == 0:
            continue
        agents = arcs.agent[mine]
        free = remaining[agents] > 0
        if not free.any():
            continue
        candidates = mine[free]
        rows = arcs.agent[candidates]
        best = int(np.lexsort((rows, -idle_seconds[rows]))[0])
        j = int(rows[best])
        remaining[j] -= 1
        agent_of[i] = j
        total += int(arcs.value[candidates[best]])
    return Assignment(agent_of, total, "longest-idle")
