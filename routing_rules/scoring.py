"""The match score of contact-agent pairs, computed for whole groups at once with numpy.

value(contact, agent) = base
                      + precedence points · tier precedence (0, 1 or 2; see sla.precedence)
                      + priority · rule priority + wait · minutes waited (capped)
                      + skill_fit · agent's mean level on the required skills / 5
                      + preferred · weighted mean level on preferred skills / 5
                      + idle · minutes the agent has been idle (capped)
                      + performance · the agent's outcome score (0-1) on the contact's kind

The base (`CompiledRules.base_points`, at least BASE) makes serving one more contact worth more
than any precedence and match-quality difference, so the assignment serves as many contacts as
capacity allows before anything else; one step of precedence is worth more than any difference in
match quality, so among those maximal assignments it serves the fast lane first. Contacts that can
be served at once form a transversal matroid, so serving as many as possible never costs the
fast lane a contact it could have had. The solver works on integer milli-points (`SCALE`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from routing_rules.compiled import CompiledRules, StagePlan
from routing_rules.schema import Scoring

BASE = 100.0
SCALE = 1000

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
# (inquiry_type, segment, journey_stage): what the performance score of an agent is about.
ContactKind = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class AgentPool:
    """Agents able to take work now, as arrays (row i is agent `ids[i]`)."""

    ids: Sequence[str] | npt.NDArray[np.object_]  # tuple, list or numpy object array
    skills: npt.NDArray[np.float32] | npt.NDArray[np.int8]  # (agents, skills) level 0-5
    languages: BoolArray  # (agents, languages)
    free: npt.NDArray[np.int32]  # (agents, channels) free capacity now
    idle_seconds: FloatArray  # (agents,)
    # Changes whenever skills or languages of any agent change (None: unknown, no caching).
    # Lets scoring cache which agents a stage's skill and language requirements admit.
    profile_version: int | None = None

    def row(self, agent_id: str) -> int | None:
        """The row of `agent_id` in this pool, if it is in it."""
        for i, candidate in enumerate(self.ids):
            if candidate == agent_id:
                return i
        return None

    @property
    def size(self) -> int:
        """Number of agents in the pool."""
        return len(self.ids)


@dataclass(frozen=True, slots=True)
class WaitingContact:
    """A contact waiting for an agent, resolved to its rule and current stage."""

    contact_id: str
    channel: int
    language: int
    rule: int  # index into CompiledRules.rules, -1 for the implicit default
    stage: int
    priority: int
    wait_seconds: float
    excluded_agents: frozenset[str] = frozenset()
    precedence: int = 0  # 0 normal, 1 served first (fast lane), 2 starvation guard
    kind: ContactKind = ("", "", "")  # (inquiry_type, segment, journey_stage)


class PerformanceLookup(Protocol):
    """Agents' outcome-based performance scores per contact kind (service/performance.py)."""

    @property
    def version(self) -> int:
        """Changes whenever any score may have changed (outcomes or settings)."""
        ...

    def scores(self, kind: ContactKind, ids: Sequence[str] | npt.NDArray[np.object_]) -> FloatArray:
        """Each agent's score in [0, 1] on `kind`, in the order of `ids`."""
        ...


@dataclass(frozen=True, slots=True)
class Arcs:
    """Eligible contact → agent pairs of one channel with their integer values."""

    contact: IntArray  # index into the contacts list
    agent: IntArray  # index into the pool
    value: IntArray

    @property
    def size(self) -> int:
        """Number of eligible pairs."""
        return int(self.contact.size)


@dataclass(frozen=True, slots=True)
class ScoreTerms:
    """The parts of one pair's value, for explanations."""

    agent_id: str
    eligible: bool
    reason: str
    priority: float
    wait: float
    skill_fit: float
    preferred: float
    idle: float
    total: float
    precedence: float = 0.0  # the tier-precedence points included in total
    performance: float = 0.0  # scoring.performance x the agent's score, included in total


def stage_of(rules: CompiledRules, contact: WaitingContact) -> StagePlan:
    """The stage plan a waiting contact is on now."""
    rule = rules.implicit if contact.rule < 0 else rules.rules[contact.rule]
    return rule.stages[min(contact.stage, len(rule.stages) - 1)]


_StaticKey = tuple[str, int, int, int, int, int]
_STATIC: dict[_StaticKey, tuple[IntArray, FloatArray]] = {}


def static_candidates(
    rules: CompiledRules, pool: AgentPool, contact: WaitingContact
) -> tuple[IntArray, FloatArray]:
    """Agents whose skills and languages meet the contact's stage, with their skill value.

    Free capacity and idle time change all the time; skills and languages rarely. This part is
    cached per rules version, rule, stage, language and agent-profile version, so a route call
    pays only for filtering by free capacity.
    """
    stage = stage_of(rules, contact)
    key = None
    if pool.profile_version is not None:
        key = (
            rules.checksum,
            rules.version,
            contact.rule,
            contact.stage,
            contact.language,
            pool.profile_version,
        )
        cached = _STATIC.get(key)
        if cached is not None:
            return cached
    mask = np.ones(pool.size, dtype=np.bool_)
    if stage.language:
        mask &= pool.languages[:, contact.language]
    _require_skills(mask, pool, stage)
    rows = np.flatnonzero(mask)
    value = (pool.skills @ stage.score_vector)[rows].astype(np.float64)
    if key is not None:
        if len(_STATIC) > 4096:
            _STATIC.clear()
        _STATIC[key] = (rows, value)
    return rows, value


def _require_skills(mask: BoolArray, pool: AgentPool, stage: StagePlan) -> None:
    if stage.required_skills.size > 4:
        mask &= (pool.skills >= stage.minimum_levels).all(axis=1)
        return
    # Column by column: for the usual one or two required skills this is several times
    # faster than a reduction over the skill axis.
    for skill, level in zip(
        stage.required_skills.tolist(), stage.required_levels.tolist(), strict=True
    ):
        mask &= pool.skills[:, skill] >= level


def eligible_mask(pool: AgentPool, stage: StagePlan, channel: int, language: int) -> BoolArray:
    """Agents with free capacity on the channel that meet every hard requirement of `stage`."""
    mask = pool.free[:, channel] > 0
    if stage.language:
        mask &= pool.languages[:, language]
    _require_skills(mask, pool, stage)
    return mask


def agent_terms(
    pool: AgentPool, stage: StagePlan, scoring: Scoring, rows: IntArray | None = None
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Skill fit, preference and idle terms (already weighted) of the agents in `rows`.

    All agents of the pool when `rows` is None; scoring only the eligible rows keeps a
    single-contact route call from paying for the whole floor.
    """
    skills = pool.skills if rows is None else pool.skills[rows]
    idle_seconds = pool.idle_seconds if rows is None else pool.idle_seconds[rows]
    terms = skills @ stage.term_matrix
    idle = np.minimum(idle_seconds * (1 / 60.0), scoring.idle_cap_minutes) * scoring.idle
    return terms[:, 0], terms[:, 1], idle


def contact_terms(contact: WaitingContact, scoring: Scoring) -> tuple[float, float]:
    """The weighted priority and wait terms of one contact."""
    wait_minutes = min(contact.wait_seconds / 60.0, float(scoring.wait_cap_minutes))
    return scoring.priority * contact.priority, scoring.wait * wait_minutes


_PerformanceKey = tuple[int, ContactKind, int, float]
# key -> (lookup, its version when computed, vector); one entry per lookup, kind, profile and
# weight, replaced when the lookup's version moves on.
_PERFORMANCE: dict[_PerformanceKey, tuple[PerformanceLookup, int, FloatArray]] = {}
_NO_KIND: ContactKind = ("", "", "")


def performance_term(
    rules: CompiledRules,
    pool: AgentPool,
    kind: ContactKind,
    performance: PerformanceLookup | None,
) -> FloatArray | None:
    """`scoring.performance` times each pool row's score on `kind`; None when the term is off.

    Scores change when outcomes are recorded, not per call, so the vector is cached per lookup
    version, kind, agent-profile version (which fixes the pool's rows) and weight. Scores are
    clipped to [0, 1]: the term never exceeds the weight that `score_ceiling` counts.
    """
    weight = float(rules.ruleset.scoring.performance)
    if performance is None or weight <= 0:
        return None
    key = None
    if pool.profile_version is not None:
        key = (id(performance), kind, pool.profile_version, weight)
        cached = _PERFORMANCE.get(key)
        if cached is not None and cached[0] is performance and cached[1] == performance.version:
            return cached[2]
    version = performance.version
    scores = np.asarray(performance.scores(kind, pool.ids), dtype=np.float64)
    if scores.shape != (pool.size,):
        raise ValueError(f"performance scores have shape {scores.shape}, not ({pool.size},)")
    term = np.clip(scores, 0.0, 1.0) * weight
    term.flags.writeable = False
    if key is not None:
        if len(_PERFORMANCE) > 4096:
            _PERFORMANCE.clear()
        # The lookup is held with its vector, so its id cannot be reused while cached.
        _PERFORMANCE[key] = (performance, version, term)
    return term


def contact_base(rules: CompiledRules, contact: WaitingContact) -> float:
    """Base, precedence, priority and wait points of one contact (same for every agent)."""
    scoring = rules.ruleset.scoring
    return (
        rules.base_points
        + rules.precedence_points * contact.precedence
        + scoring.priority * contact.priority
        + scoring.wait * min(contact.wait_seconds / 60.0, float(scoring.wait_cap_minutes))
    )


def build_arcs(
    rules: CompiledRules,
    pool: AgentPool,
    contacts: Sequence[WaitingContact],
    channel: int,
    performance: PerformanceLookup | None = None,
) -> tuple[Arcs, BoolArray]:
    """All eligible pairs for `contacts` (all on `channel`), and which contacts had any.

    Contacts on the same rule, stage and language (and kind, while the performance term is
    on) share one eligibility mask and one vector of agent terms; only the contact terms
    (priority, wait) differ within a group.
    """
    scoring = rules.ruleset.scoring
    by_kind = performance is not None and scoring.performance > 0
    groups: dict[tuple[int, int, int, ContactKind], list[int]] = {}
    for i, contact in enumerate(contacts):
        kind = contact.kind if by_kind else _NO_KIND
        groups.setdefault((contact.rule, contact.stage, contact.language, kind), []).append(i)
    contact_parts: list[IntArray] = []
    agent_parts: list[IntArray] = []
    value_parts: list[IntArray] = []
    for (_, _, _, kind), members in groups.items():
        static_rows, skill_value = static_candidates(rules, pool, contacts[members[0]])
        free = pool.free[static_rows, channel] > 0
        agents = static_rows[free]
        if agents.size == 0:
            continue
        idle = np.minimum(pool.idle_seconds[agents] * (1 / 60.0), scoring.idle_cap_minutes)
        agent_value = skill_value[free] + idle * scoring.idle
        term = performance_term(rules, pool, kind, performance) if by_kind else None
        if term is not None:
            agent_value = agent_value + term[agents]
        if len(members) == 1:
            base_one = contact_base(rules, contacts[members[0]])
            flat_values = np.rint((agent_value + base_one) * SCALE).astype(np.int64)
            c_idx = np.full(agents.size, members[0], dtype=np.int64)
            a_idx = agents.astype(np.int64)
        else:
            member_idx = np.asarray(members, dtype=np.int64)
            base = np.fromiter(
                (contact_base(rules, contacts[i]) for i in members), np.float64, len(members)
            )
            values = np.rint((base[:, None] + agent_value[None, :]) * SCALE).astype(np.int64)
            c_idx = np.repeat(member_idx, agents.size)
            a_idx = np.broadcast_to(agents.astype(np.int64), values.shape).reshape(-1)
            flat_values = values.ravel()
        if any(contacts[i].excluded_agents for i in members):
            keep = np.ones(c_idx.size, dtype=np.bool_)
            # One id -> column map per group, not a scan of the pool per excluded agent.
            position = {str(pool.ids[j]): pos for pos, j in enumerate(agents.tolist())}
            for row, i in enumerate(members):
                for agent_id in contacts[i].excluded_agents:
                    pos = position.get(agent_id)
                    if pos is not None:
                        keep[row * agents.size + pos] = False
            c_idx, a_idx, flat_values = c_idx[keep], a_idx[keep], flat_values[keep]
        contact_parts.append(c_idx)
        agent_parts.append(a_idx)
        value_parts.append(flat_values)
    had_eligible = np.zeros(len(contacts), dtype=np.bool_)
    if not contact_parts:
        empty = np.zeros(0, dtype=np.int64)
        return Arcs(empty, empty, empty), had_eligible
    if len(contact_parts) == 1:
        arcs = Arcs(contact_parts[0], agent_parts[0], value_parts[0])
    else:
        arcs = Arcs(
            np.concatenate(contact_parts),
            np.concatenate(agent_parts),
            np.concatenate(value_parts),
        )
    # An agent the contact rejected does not count: for the contact, nobody eligible was free.
    had_eligible[arcs.contact] = True
    return arcs, had_eligible


def rank_for_one(
    rules: CompiledRules,
    pool: AgentPool,
    contact: WaitingContact,
    *,
    limit: int,
    performance: PerformanceLookup | None = None,
) -> tuple[list[int], int]:
    """The best eligible agent rows for one contact, best first, and how many were eligible.

    The first row is exactly what `assignment.solve` picks for a lone contact (highest integer
    value, lowest row on ties); the rest are the runners-up for the explanation.
    """
    static_rows, skill_value = static_candidates(rules, pool, contact)
    free = pool.free[static_rows, contact.channel] > 0
    for agent_id in contact.excluded_agents:
        j = pool.row(agent_id)
        if j is not None:
            free &= static_rows != j
    rows = static_rows[free]
    if rows.size == 0:
        return [], 0
    scoring = rules.ruleset.scoring
    idle = np.minimum(pool.idle_seconds[rows] * (1 / 60.0), scoring.idle_cap_minutes)
    # Summed in the same order as build_arcs, so both give the very same integer values.
    agent_value = skill_value[free] + idle * scoring.idle
    term = performance_term(rules, pool, contact.kind, performance)
    if term is not None:
        agent_value = agent_value + term[rows]
    values = np.rint((agent_value + contact_base(rules, contact)) * SCALE).astype(np.int64)
    best = int(np.argmax(values))
    if rows.size <= limit:
        order = np.lexsort((rows, -values))
    else:
        part = np.argpartition(-values, limit - 1)[:limit]
        order = part[np.lexsort((rows[part], -values[part]))]
    ranked = [best, *(int(k) for k in order if k != best)][:limit]
    return [int(rows[k]) for k in ranked], int(rows.size)
