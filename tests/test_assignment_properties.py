"""Dispatch assigns within capacity, honours hard requirements and beats first come, first served.

Properties run over small random floors (agents with random skills, languages and free slots,
contacts across rules, relaxation stages and rejected offers). Eligibility is recomputed here
from the raw rule document and the raw agent arrays, not through `scoring.eligible_mask`, and
optimality is checked against brute force that knows nothing about OR-Tools.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routing_rules.assignment import Assignment, Method, greedy, solve
from routing_rules.compiled import CompiledRules, compile_rules
from routing_rules.schema import RuleSet
from routing_rules.scoring import BASE, SCALE, AgentPool, Arcs, WaitingContact, build_arcs

SKILLS = ("billing", "tech", "sales")
LANGUAGES = ("en", "es")
CHANNELS = ("voice", "chat")
SOLVERS: tuple[Method, ...] = ("lsa", "mcf", "auto")
PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _ruleset(rules: list[dict[str, Any]]) -> RuleSet:
    vocabularies = {
        "segments": ["consumer"],
        "inquiry_types": ["question"],
        "journey_stages": ["established"],
        "channels": list(CHANNELS),
        "languages": list(LANGUAGES),
        "skills": list(SKILLS),
    }
    return RuleSet.model_validate({"vocabularies": vocabularies, "rules": rules})


# Ladders that relax skills, drop the language requirement and end in either fallback.
LADDER_RULESET = _ruleset(
    [
        {
            "name": "billing",
            "require": {"skills": {"billing": 3}},
            "prefer": {"skills": {"sales": 1.0}},
            "relax": [
                {"name": "junior", "after_wait_seconds": 60, "require": {"skills": {"billing": 1}}}
            ],
            "fallback": {"action": "any_agent", "after_wait_seconds": 300, "language": False},
        },
        {
            "name": "tech",
            "priority": 80,
            "require": {"skills": {"tech": 2, "billing": 2}},
            "relax": [
                {
                    "name": "any-language",
                    "after_wait_seconds": 60,
                    "require": {"skills": {"tech": 2}, "language": False},
                    "prefer": {"skills": {"billing": 2.0, "sales": 1.0}},
                }
            ],
            "fallback": {"action": "keep_waiting"},
        },
        {
            "name": "sales",
            "priority": 20,
            "require": {"skills": {"sales": 4}, "language": False},
            "prefer": {"skills": {"tech": 2.0, "billing": 1.0}},
            "fallback": {"action": "any_agent", "after_wait_seconds": 120},
        },
    ]
)
LADDER_RULES = compile_rules(LADDER_RULESET)


def raw_ladder(rule: int) -> list[tuple[dict[str, int], bool]]:
    """(required skill levels, language required) per stage, read off the rule document."""
    if rule < 0:
        return [({}, True)]  # the implicit default: anybody who speaks the language
    spec = LADDER_RULESET.rules[rule]
    ladder = [(dict(spec.require.skills), spec.require.language)]
    ladder += [(dict(stage.require.skills), stage.require.language) for stage in spec.relax]
    if spec.fallback.action == "any_agent":
        ladder.append(({}, spec.fallback.language))
    return ladder


def may_take(pool: AgentPool, j: int, contact: WaitingContact, channel: int) -> bool:
    """Whether agent row j may take the contact, straight from the raw arrays."""
    if pool.free[j, channel] <= 0 or pool.ids[j] in contact.excluded_agents:
        return False
    skills, language = raw_ladder(contact.rule)[contact.stage]
    if language and not pool.languages[j, contact.language]:
        return False
    return all(pool.skills[j, SKILLS.index(name)] >= level for name, level in skills.items())


def max_served(n_contacts: int, capacity: Sequence[int], allowed: set[tuple[int, int]]) -> int:
    """Most contacts servable at once: augmenting paths over one node per free slot."""
    slots = [j for j, free in enumerate(capacity) for _ in range(free)]
    slot_taker: list[int | None] = [None] * len(slots)

    def augment(i: int, seen: set[int]) -> bool:
        for s, j in enumerate(slots):
            if (i, j) in allowed and s not in seen:
                seen.add(s)
                taker = slot_taker[s]
                if taker is None or augment(taker, seen):
                    slot_taker[s] = i
                    return True
        return False

    return sum(augment(i, set()) for i in range(n_contacts))


def best_total(n_contacts: int, capacity: Sequence[int], arcs: Arcs) -> int:
    """Optimal total value by trying every choice of each contact (tiny problems only)."""
    options: list[list[tuple[int, int]]] = [[(-1, 0)] for _ in range(n_contacts)]
    for i, j, v in zip(arcs.contact, arcs.agent, arcs.value, strict=True):
        options[int(i)].append((int(j), int(v)))
    best = 0
    for choice in itertools.product(*options):
        used = np.bincount([j for j, _ in choice if j >= 0], minlength=len(capacity))
        if np.all(used <= np.asarray(capacity)):
            best = max(best, sum(v for _, v in choice))
    return best


def check_assignment(
    assignment: Assignment, n_contacts: int, capacity: np.ndarray, arcs: Arcs
) -> None:
    """Within capacity, only offered pairs, and a total that is the sum of the chosen pairs."""
    values = {
        (int(i), int(j)): int(v)
        for i, j, v in zip(arcs.contact, arcs.agent, arcs.value, strict=True)
    }
    agent_of = assignment.agent_of
    assert agent_of.shape == (n_contacts,)
    taken = agent_of[agent_of >= 0]
    assert np.all(np.bincount(taken, minlength=capacity.size) <= capacity)
    chosen = [(i, int(j)) for i, j in enumerate(agent_of) if j >= 0]
    assert all(pair in values for pair in chosen)
    assert assignment.total_value == sum(values[pair] for pair in chosen)


@dataclass(frozen=True)
class Floor:
    """A random contact-center floor: free agents and a queue spread over both channels."""

    pool: AgentPool
    contacts: list[WaitingContact]


@st.composite
def floors(draw: st.DrawFn) -> Floor:
    """Up to 6 agents (free capacity 0-3 per channel) and up to 8 waiting contacts."""
    n_agents = draw(st.integers(0, 6))
    levels = st.lists(st.integers(0, 5), min_size=len(SKILLS), max_size=len(SKILLS))
    speaks = st.lists(st.booleans(), min_size=len(LANGUAGES), max_size=len(LANGUAGES))
    free = st.lists(st.integers(0, 3), min_size=len(CHANNELS), max_size=len(CHANNELS))
    ids = tuple(f"agent-{j}" for j in range(n_agents))
    pool = AgentPool(
        ids=ids,
        skills=np.array([draw(levels) for _ in ids], dtype=np.int8).reshape(n_agents, len(SKILLS)),
        languages=np.array([draw(speaks) for _ in ids], dtype=np.bool_).reshape(
            n_agents, len(LANGUAGES)
        ),
        free=np.array([draw(free) for _ in ids], dtype=np.int32).reshape(n_agents, len(CHANNELS)),
        idle_seconds=np.array([draw(st.integers(0, 3600)) for _ in ids], dtype=np.float64).reshape(
            n_agents
        ),
    )
    contacts = []
    for i in range(draw(st.integers(0, 8))):
        rule = draw(st.integers(-1, len(LADDER_RULESET.rules) - 1))
        # An id no agent has stands for an agent who rejected an offer and then logged off.
        rejected = st.sampled_from((*ids, "agent-gone"))
        contacts.append(
            WaitingContact(
                contact_id=f"contact-{i}",
                channel=draw(st.integers(0, len(CHANNELS) - 1)),
                language=draw(st.integers(0, len(LANGUAGES) - 1)),
                rule=rule,
                stage=draw(st.integers(0, len(raw_ladder(rule)) - 1)),
                priority=draw(st.integers(0, 100)),
                wait_seconds=float(draw(st.integers(0, 3600))),
                excluded_agents=frozenset(draw(st.sets(rejected, max_size=2))),
                precedence=draw(st.integers(0, 2)),
            )
        )
    return Floor(pool, contacts)


@PROPERTY_SETTINGS
@given(floor=floors())
def test_dispatch_respects_capacity_requirements_and_beats_first_come(floor: Floor) -> None:
    """Per channel: within capacity, only eligible agents, most contacts, never below greedy."""
    pool = floor.pool
    for channel in range(len(CHANNELS)):
        queue = [c for c in floor.contacts if c.channel == channel]
        capacity = pool.free[:, channel].astype(np.int64)
        arcs, had_eligible = build_arcs(LADDER_RULES, pool, queue, channel)
        allowed = {
            (i, j)
            for i, contact in enumerate(queue)
            for j in range(pool.size)
            if may_take(pool, j, contact, channel)
        }
        offered = set(zip(arcs.contact.tolist(), arcs.agent.tolist(), strict=True))
        assert offered == allowed
        assert len(offered) == arcs.size  # no pair offered twice
        assert all(had_eligible[i] for i, _ in allowed)

        first_come = greedy(len(queue), capacity, arcs)
        check_assignment(first_come, len(queue), capacity, arcs)
        most = max_served(len(queue), capacity.tolist(), allowed)
        totals = set()
        for method in SOLVERS:
            assignment = solve(len(queue), capacity, arcs, method=method)
            check_assignment(assignment, len(queue), capacity, arcs)
            for i, j in enumerate(assignment.agent_of):
                if j >= 0:
                    assert may_take(pool, int(j), queue[i], channel)
            assert int((assignment.agent_of >= 0).sum()) == most
            assert assignment.total_value >= first_come.total_value
            totals.add(assignment.total_value)
            # Tier precedence: at every level, as many contacts of that level or above are
            # served as could be at all (serving the most contacts never costs the fast lane).
            for level in (1, 2):
                upper = {(i, j) for i, j in allowed if queue[i].precedence >= level}
                served_upper = sum(
                    1
                    for i, j in enumerate(assignment.agent_of)
                    if j >= 0 and queue[i].precedence >= level
                )
                assert served_upper == max_served(len(queue), capacity.tolist(), upper)
        assert len(totals) == 1, "lsa, mcf and auto disagree on the optimum"


@st.composite
def arc_problems(draw: st.DrawFn) -> tuple[int, np.ndarray, Arcs]:
    """Arbitrary sparse pair lists with match values above BASE and capacities 0-3."""
    n_contacts = draw(st.integers(1, 5))
    n_agents = draw(st.integers(1, 4))
    capacity = np.array(draw(st.lists(st.integers(0, 3), min_size=n_agents, max_size=n_agents)))
    pairs = sorted(
        draw(
            st.sets(
                st.tuples(st.integers(0, n_contacts - 1), st.integers(0, n_agents - 1)),
                max_size=n_contacts * n_agents,
            )
        )
    )
    values = [int(BASE * SCALE) + draw(st.integers(0, 20 * SCALE)) for _ in pairs]
    arcs = Arcs(
        np.array([i for i, _ in pairs], dtype=np.int64),
        np.array([j for _, j in pairs], dtype=np.int64),
        np.array(values, dtype=np.int64),
    )
    return n_contacts, capacity.astype(np.int64), arcs


@PROPERTY_SETTINGS
@given(problem=arc_problems())
def test_every_solver_finds_the_brute_force_optimum(problem: tuple[int, np.ndarray, Arcs]) -> None:
    """On any pair list, each method reaches the exhaustive optimum within capacity."""
    n_contacts, capacity, arcs = problem
    optimum = best_total(n_contacts, capacity.tolist(), arcs)
    first_come = greedy(n_contacts, capacity, arcs)
    for method in SOLVERS:
        assignment = solve(n_contacts, capacity, arcs, method=method)
        check_assignment(assignment, n_contacts, capacity, arcs)
        assert assignment.total_value == optimum
        assert assignment.total_value >= first_come.total_value


# Handcrafted floors ------------------------------------------------------------------------

BILLING_RULES = compile_rules(
    _ruleset(
        [
            {
                "name": "billing-first-line",
                "require": {"skills": {"billing": 3}},
                "prefer": {"skills": {"billing": 1.0}},
                "fallback": {"action": "keep_waiting"},
            },
            {
                "name": "billing-expert",
                "require": {"skills": {"billing": 5}},
                "fallback": {"action": "keep_waiting"},
            },
            {
                "name": "billing-upsell",
                "require": {"skills": {"billing": 1}},
                "prefer": {"skills": {"sales": 1.0}},
                "fallback": {"action": "keep_waiting"},
            },
        ]
    )
)
FIRST_LINE, EXPERT, UPSELL = 0, 1, 2


def english_voice_pool(agents: dict[str, tuple[dict[str, int], float]]) -> AgentPool:
    """English-speaking agents with one free voice slot: name -> (skill levels, idle seconds)."""
    skills = np.zeros((len(agents), len(SKILLS)), dtype=np.int8)
    for row, (levels, _) in enumerate(agents.values()):
        for name, level in levels.items():
            skills[row, SKILLS.index(name)] = level
    languages = np.zeros((len(agents), len(LANGUAGES)), dtype=np.bool_)
    languages[:, LANGUAGES.index("en")] = True
    free = np.zeros((len(agents), len(CHANNELS)), dtype=np.int32)
    free[:, CHANNELS.index("voice")] = 1
    return AgentPool(
        ids=tuple(agents),
        skills=skills,
        languages=languages,
        free=free,
        idle_seconds=np.array([idle for _, idle in agents.values()], dtype=np.float64),
    )


def english_voice_contact(contact_id: str, rule: int, wait_seconds: float) -> WaitingContact:
    """A voice contact in English on the base stage of `rule`."""
    return WaitingContact(
        contact_id=contact_id,
        channel=CHANNELS.index("voice"),
        language=LANGUAGES.index("en"),
        rule=rule,
        stage=0,
        priority=50,
        wait_seconds=wait_seconds,
    )


def dispatched(
    rules: CompiledRules, pool: AgentPool, queue: list[WaitingContact], method: Method
) -> dict[str, str | None]:
    """Contact id -> agent id (None: keeps waiting) for one dispatch of the voice queue."""
    channel = CHANNELS.index("voice")
    arcs, _ = build_arcs(rules, pool, queue, channel)
    capacity = pool.free[:, channel].astype(np.int64)
    assignment = solve(len(queue), capacity, arcs, method=method)
    return {
        contact.contact_id: pool.ids[int(j)] if j >= 0 else None
        for contact, j in zip(queue, assignment.agent_of, strict=True)
    }


def test_first_come_strands_the_expert_contact_that_dispatch_serves() -> None:
    """Ann waited longest and slightly prefers Xavier; Ben can only take Xavier: both get served."""
    pool = english_voice_pool({"xavier": ({"billing": 5}, 60.0), "yara": ({"billing": 4}, 60.0)})
    queue = [
        english_voice_contact("ann", FIRST_LINE, wait_seconds=300.0),
        english_voice_contact("ben", EXPERT, wait_seconds=30.0),
    ]
    assert dispatched(BILLING_RULES, pool, queue, "greedy") == {"ann": "xavier", "ben": None}
    for method in SOLVERS:
        assert dispatched(BILLING_RULES, pool, queue, method) == {"ann": "yara", "ben": "xavier"}


@pytest.mark.parametrize("method", SOLVERS)
def test_a_lone_contact_gets_the_best_scoring_eligible_agent(method: Method) -> None:
    """Skill fit plus preferred sales level decide: cara (4, 4) beats bo (5, 1) and al (2, 5)."""
    pool = english_voice_pool(
        {
            "al": ({"billing": 2, "sales": 5}, 0.0),
            "bo": ({"billing": 5, "sales": 1}, 0.0),
            "cara": ({"billing": 4, "sales": 4}, 0.0),
            "dee": ({"sales": 5}, 0.0),  # best at sales but lacks the required billing
        }
    )
    queue = [english_voice_contact("caller", UPSELL, wait_seconds=10.0)]
    assert dispatched(BILLING_RULES, pool, queue, method) == {"caller": "cara"}


@pytest.mark.parametrize("method", (*SOLVERS, "greedy"))
def test_equal_matches_go_to_the_agents_idle_longest(method: Method) -> None:
    """With identical skills, the agents who have waited longest for work are served first."""
    skills = {"billing": 4}
    pool = english_voice_pool(
        {"one-minute": (skills, 60.0), "fifteen-minutes": (skills, 900.0), "five": (skills, 300.0)}
    )
    lone = [english_voice_contact("first", FIRST_LINE, wait_seconds=20.0)]
    assert dispatched(BILLING_RULES, pool, lone, method) == {"first": "fifteen-minutes"}
    pair = [*lone, english_voice_contact("second", FIRST_LINE, wait_seconds=10.0)]
    served = set(dispatched(BILLING_RULES, pool, pair, method).values())
    assert served == {"fifteen-minutes", "five"}
