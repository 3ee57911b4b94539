"""The assignment solve: which waiting contact goes to which agent, all at once.

Input is the sparse list of eligible contact → agent pairs of one channel with integer values,
and each agent's free capacity on that channel. Output is the agent row for every contact (-1:
stays waiting). The total value is maximal: never lower than any greedy pick order.

Two OR-Tools algorithms:
- min-cost flow: source → contact → agent → sink (agent → sink carries the free capacity),
  plus a source → sink bypass for contacts left waiting. This is what `auto` uses.
- linear sum assignment: it needs a perfect matching on a square problem, so each contact
  gets a private "stay waiting" node, each agent slot an "unused" node that mirrors its arcs.

Why `auto` never picks linear sum assignment: waiting contacts are rarely all matchable, so the
square needs those extra nodes and mirror arcs (twice the arcs), and with them it was slower
than min-cost flow at every size and shape measured by `bench/bench_dispatch.py`, square
single-slot problems included (1000×1000 sparse: 70 ms against 35 ms; 2000×2000 dense: 4.9 s
against 2.3 s). It stays available (`method="lsa"`) and in the benchmark so the choice can be
re-checked on other machines and OR-Tools versions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from routing_rules.scoring import Arcs

Method = Literal["auto", "lsa", "mcf", "greedy"]
IntArray = npt.NDArray[np.int64]


class SolveFailed(RuntimeError):
    """OR-Tools did not return an optimal solution."""


@dataclass(frozen=True, slots=True)
class Assignment:
    """The agent row chosen for each contact (-1 = waits) and how it was found."""

    agent_of: IntArray
    total_value: int
    method: Literal["lsa", "mcf", "greedy", "argmax", "empty", "longest-idle"]


def choose_method(n_contacts: int, capacity: IntArray) -> Literal["lsa", "mcf"]:
    """The algorithm `auto` uses: min-cost flow, the faster one at every measured shape."""
    del n_contacts, capacity  # kept in the signature: the choice is by shape, if that changes
    return "mcf"


def solve(
    n_contacts: int,
    capacity: IntArray,
    arcs: Arcs,
    *,
    method: Method = "auto",
) -> Assignment:
    """Maximise the total value of the chosen pairs, within every agent's free capacity."""
    if arcs.size == 0 or n_contacts == 0:
        return Assignment(np.full(n_contacts, -1, dtype=np.int64), 0, "empty")
    if method == "greedy":
        return greedy(n_contacts, capacity, arcs)
    if n_contacts == 1:
        # One contact: the best eligible agent with a free slot is the optimum; no solver needed.
        usable = np.flatnonzero(capacity[arcs.agent] > 0)
        if usable.size == 0:
            return Assignment(np.full(1, -1, dtype=np.int64), 0, "empty")
        best = int(usable[np.argmax(arcs.value[usable])])
        agent_of = np.array([arcs.agent[best]], dtype=np.int64)
        return Assignment(agent_of, int(arcs.value[best]), "argmax")
    if method == "auto":
        method = choose_method(n_contacts, capacity)
    if method == "lsa":
        return _solve_lsa(n_contacts, capacity, arcs)
    return _solve_mcf(n_contacts, capacity, arcs)


def _solve_mcf(n_contacts: int, capacity: IntArray, arcs: Arcs) -> Assignment:
    from ortools.graph.python import min_cost_flow

    n_agents = int(capacity.size)
    source, sink = 0, 1 + n_contacts + n_agents
    contact_nodes = np.arange(1, 1 + n_contacts, dtype=np.int64)
    used_agents = np.unique(arcs.agent)
    tails = np.concatenate(
        [
            np.zeros(n_contacts, dtype=np.int64),
            1 + arcs.contact,
            1 + n_contacts + used_agents,
            np.array([source], dtype=np.int64),
        ]
    )
    heads = np.concatenate(
        [
            contact_nodes,
            1 + n_contacts + arcs.agent,
            np.full(used_agents.size, sink, dtype=np.int64),
            np.array([sink], dtype=np.int64),
        ]
    )
    capacities = np.concatenate(
        [
            np.ones(n_contacts, dtype=np.int64),
            np.ones(arcs.size, dtype=np.int64),
            np.minimum(capacity[used_agents], n_contacts).astype(np.int64),
            np.array([n_contacts], dtype=np.int64),
        ]
    )
    costs = np.concatenate(
        [
            np.zeros(n_contacts, dtype=np.int64),
            -arcs.value,
            np.zeros(used_agents.size + 1, dtype=np.int64),
        ]
    )
    flow = min_cost_flow.SimpleMinCostFlow()
    flow.add_arcs_with_capacity_and_unit_cost(tails, heads, capacities, costs)
    flow.set_nodes_supplies(
        np.array([source, sink], dtype=np.int64),
        np.array([n_contacts, -n_contacts], dtype=np.int64),
    )
    status = flow.solve()
    if status != flow.OPTIMAL:
        raise SolveFailed(f"min-cost flow returned status {status}")
    pair_arcs = np.arange(n_contacts, n_contacts + arcs.size, dtype=np.int64)
    chosen = flow.flows(pair_arcs) > 0
    agent_of = np.full(n_contacts, -1, dtype=np.int64)
    agent_of[arcs.contact[chosen]] = arcs.agent[chosen]
    return Assignment(agent_of, int(arcs.value[chosen].sum()), "mcf")


def _solve_lsa(n_contacts: int, capacity: IntArray, arcs: Arcs) -> Assignment:
    from ortools.graph.python import linear_sum_assignment

    # LSA matches each right node once, so an agent with k free slots needs k nodes.
    arcs, slot_agent = _one_node_per_slot(n_contacts, capacity, arcs)
    capacity = capacity[slot_agent]
    n_agents = int(slot_agent.size)
    # Left: contacts 0..n-1, then one "unused" node per agent. Right: agents 0..m-1, then one
    # "stays waiting" node per contact. Mirror arcs (unused agent j → waiting i for every real
    # arc i → j) keep a perfect matching possible whatever real pairs are chosen.
    contacts = np.arange(n_contacts, dtype=np.int64)
    agents = np.arange(n_agents, dtype=np.int64)
    left = np.concatenate([arcs.contact, contacts, n_contacts + agents, n_contacts + arcs.agent])
    right = np.concatenate([arcs.agent, n_agents + contacts, agents, n_agents + arcs.contact])
    # Agents without a free slot must stay "unused": give them no real arcs.
    valid = np.ones(arcs.size, dtype=np.bool_)
    valid &= capacity[arcs.agent] > 0
    zeros = np.zeros(n_contacts + n_agents, dtype=np.int64)
    cost = np.concatenate([-arcs.value, zeros, np.zeros(arcs.size, dtype=np.int64)])
    keep = np.concatenate([valid, np.ones(n_contacts + n_agents, dtype=np.bool_), valid])
    solver = linear_sum_assignment.SimpleLinearSumAssignment()
    solver.add_arcs_with_cost(left[keep], right[keep], cost[keep])
    status = solver.solve()
    if status != solver.OPTIMAL:
        raise SolveFailed(f"linear sum assignment returned status {status}")
    mates = np.fromiter(
        (solver.right_mate(i) for i in range(n_contacts)), dtype=np.int64, count=n_contacts
    )
    agent_of = np.full(n_contacts, -1, dtype=np.int64)
    assigned = mates < n_agents
    agent_of[assigned] = slot_agent[mates[assigned]]
    total = -int(solver.optimal_cost()) if assigned.any() else 0
    return Assignment(agent_of, total, "lsa")


def _one_node_per_slot(n_contacts: int, capacity: IntArray, arcs: Arcs) -> tuple[Arcs, IntArray]:
    """Arcs onto one node per free slot, and each node's agent (node j < agents is agent j).

    Agent j keeps node j for its first slot, so single-slot problems pass through unchanged;
    each further slot is a node after the agents that copies agent j's arcs.
    """
    n_agents = int(capacity.size)
    agents = np.arange(n_agents, dtype=np.int64)
    # Nobody can use more slots than there are contacts.
    extra = np.clip(capacity.astype(np.int64) - 1, 0, max(n_contacts - 1, 0))
    slot_agent = np.concatenate([agents, np.repeat(agents, extra)])
    if not extra.any():
        return arcs, slot_agent
    copies = 1 + extra[arcs.agent]
    pair = np.repeat(np.arange(arcs.size, dtype=np.int64), copies)
    copy = np.arange(pair.size, dtype=np.int64) - np.repeat(np.cumsum(copies) - copies, copies)
    agent = arcs.agent[pair]
    first_extra = n_agents + np.cumsum(extra) - extra
    node = np.where(copy == 0, agent, first_extra[agent] + copy - 1)
    return Arcs(arcs.contact[pair], node, arcs.value[pair]), slot_agent


def greedy(n_contacts: int, capacity: IntArray, arcs: Arcs) -> Assignment:
    """First come, first served: each contact in order takes its best agent still free.

    The baseline dispatch is compared against, and the fallback when a solve runs out of time.
    """
    remaining = capacity.astype(np.int64).copy()
    agent_of = np.full(n_contacts, -1, dtype=np.int64)
    order = np.lexsort((-arcs.value, arcs.contact))
    contact_sorted = arcs.contact[order]
    agent_sorted = arcs.agent[order]
    value_sorted = arcs.value[order]
    starts = np.searchsorted(contact_sorted, np.arange(n_contacts + 1))
    total = 0
    for i in range(n_contacts):
        for k in range(starts[i], starts[i + 1]):
            j = agent_sorted[k]
            if remaining[j] > 0:
                remaining[j] -= 1
                agent_of[i] = j
                total += int(value_sorted[k])
                break
    return Assignment(agent_of, total, "greedy")
