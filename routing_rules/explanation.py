"""Score terms for explanations: the best candidates of one contact and why others are not.

Dispatch decides with `scoring.build_arcs` and `scoring.rank_for_one`; this module recomputes
the same terms, one by one, for the few agents an explanation lists.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from routing_rules.compiled import CompiledRules, StagePlan
from routing_rules.scoring import (
    AgentPool,
    PerformanceLookup,
    ScoreTerms,
    WaitingContact,
    agent_terms,
    contact_terms,
    eligible_mask,
    performance_term,
    stage_of,
)


def explain_candidates(
    rules: CompiledRules,
    pool: AgentPool,
    contact: WaitingContact,
    *,
    limit: int = 5,
    performance: PerformanceLookup | None = None,
) -> list[ScoreTerms]:
    """The best `limit` eligible agents for one contact with every score term, best first.

    Ineligible agents with free capacity on the channel are listed after them with the reason.
    """
    scoring = rules.ruleset.scoring
    stage = stage_of(rules, contact)
    mask = eligible_mask(pool, stage, contact.channel, contact.language)
    for agent_id in contact.excluded_agents:
        j = pool.row(agent_id)
        if j is not None:
            mask[j] = False
    fit, pref, idle = agent_terms(pool, stage, scoring)
    term = performance_term(rules, pool, contact.kind, performance)
    perf = np.zeros(pool.size) if term is None else term
    prio, wait = contact_terms(contact, scoring)
    tier = rules.precedence_points * contact.precedence
    total = rules.base_points + tier + prio + wait + fit + pref + idle + perf
    eligible = np.flatnonzero(mask)
    best = eligible[np.argsort(-total[eligible], kind="stable")[:limit]]
    others = np.flatnonzero(~mask & (pool.free[:, contact.channel] > 0))[:limit]
    return [
        ScoreTerms(
            str(pool.ids[j]),
            ok,
            "eligible" if ok else ineligibility(pool, stage, contact, int(j), rules.skills),
            prio,
            wait,
            float(fit[j]),
            float(pref[j]),
            float(idle[j]),
            float(total[j]) if ok else 0.0,
            tier,
            float(perf[j]),
        )
        for rows, ok in ((best, True), (others, False))
        for j in rows
    ]


def ineligibility(
    pool: AgentPool, stage: StagePlan, contact: WaitingContact, j: int, skill_names: Sequence[str]
) -> str:
    """Why agent row `j` may not take this contact under `stage`."""
    if pool.ids[j] in contact.excluded_agents:
        return "agent rejected or let expire an earlier offer of this contact"
    if stage.language and not pool.languages[j, contact.language]:
        return "does not speak the contact's language"
    for skill, level in zip(stage.required_skills, stage.required_levels, strict=True):
        if pool.skills[j, skill] < level:
            name = skill_names[int(skill)]
            return f"skill {name} level {int(pool.skills[j, skill])} < required {int(level)}"
    return "no free capacity on the channel"


def terms_for_rows(
    rules: CompiledRules,
    pool: AgentPool,
    contact: WaitingContact,
    rows: Sequence[int],
    performance: PerformanceLookup | None = None,
) -> list[ScoreTerms]:
    """Score terms of a few chosen agent rows for one contact (cheap: no full-pool pass)."""
    if not rows:
        return []
    scoring = rules.ruleset.scoring
    idx = np.asarray(rows, dtype=np.int64)
    fit, pref, idle = agent_terms(pool, stage_of(rules, contact), scoring, idx)
    term = performance_term(rules, pool, contact.kind, performance)
    perf = [0.0] * len(rows) if term is None else term[idx].tolist()
    prio, wait = contact_terms(contact, scoring)
    tier = rules.precedence_points * contact.precedence
    base = rules.base_points + tier + prio + wait
    return [
        ScoreTerms(
            str(pool.ids[j]), True, "eligible", prio, wait, f, p, i, base + f + p + i + g, tier, g
        )
        for j, f, p, i, g in zip(
            rows, fit.tolist(), pref.tolist(), idle.tolist(), perf, strict=True
        )
    ]
