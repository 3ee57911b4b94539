"""The route call's single-contact fast path picks exactly what the full solve would."""

from __future__ import annotations

from hypothesis import given

from routing_rules.assignment import solve
from routing_rules.compiled import compile_rules
from routing_rules.scoring import build_arcs, rank_for_one
from tests.test_assignment_properties import LADDER_RULESET, PROPERTY_SETTINGS, Floor, floors

RULES = compile_rules(LADDER_RULESET)


@PROPERTY_SETTINGS
@given(floor=floors())
def test_a_lone_new_contact_gets_the_agent_the_full_solve_would_give_it(floor: Floor) -> None:
    for contact in floor.contacts:
        ranked, eligible = rank_for_one(RULES, floor.pool, contact, limit=5)
        arcs, _ = build_arcs(RULES, floor.pool, [contact], contact.channel)
        capacity = floor.pool.free[:, contact.channel].astype("int64")
        solved = solve(1, capacity, arcs)
        assert eligible == arcs.size
        if arcs.size == 0:
            assert ranked == []
            continue
        assert ranked[0] == int(solved.agent_of[0])
        # Runners-up come in descending value, each an eligible row, no duplicates.
        value_of = dict(zip(arcs.agent.tolist(), arcs.value.tolist(), strict=True))
        assert len(ranked) == min(5, eligible) == len(set(ranked))
        assert all(row in value_of for row in ranked)
        tail = [value_of[row] for row in ranked[1:]]
        assert tail == sorted(tail, reverse=True)
        assert all(value_of[ranked[0]] >= v for v in tail)
        left_out = [v for row, v in value_of.items() if row not in ranked]
        assert all(value_of[ranked[-1]] >= v for v in left_out)
