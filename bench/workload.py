"""Synthetic contact-center workloads for the dispatch benchmark: rules, agents, waiting contacts.

Sparse workloads look like a real skills-based floor: 30 skills, each agent holds about four of
them at levels 1-5, and every inquiry type needs one or two specific skills at a minimum
level, so a contact can go to only a few percent of the agents. Dense workloads are the other
end: rules that require nothing but the language, or one skill almost everybody has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from routing_rules.compiled import CompiledRules, ContactFacts, compile_rules
from routing_rules.schema import RuleSet
from routing_rules.scoring import AgentPool, WaitingContact

Eligibility = Literal["sparse", "dense"]

SKILLS = (
    "general", "billing", "payments", "refunds", "collections", "onboarding", "retention",
    "upsell", "new_sales", "broadband", "mobile", "tv", "router", "fraud", "identity",
    "complaints", "escalations", "moving_home", "contracts", "roaming", "devices", "insurance",
    "business_accounts", "accessibility", "vip_care", "appointments", "porting", "outage",
    "data_privacy", "loyalty",
)  # fmt: skip
LANGUAGES = ("en", "es", "de", "fr")
CHANNELS = ("voice", "chat")
SEGMENTS = ("consumer", "business", "premium")
JOURNEY_STAGES = ("onboarding", "established", "at_risk")

# inquiry type -> (required skill: level, ...), preferred skills. Level 4-5 on one skill, or
# two skills, are what keeps each contact eligible for roughly 2-5 % of the floor.
SPARSE_NEEDS: dict[str, tuple[dict[str, int], dict[str, float]]] = {
    "bill_question": ({"billing": 4, "payments": 2}, {"refunds": 1.0}),
    "payment_failed": ({"payments": 5}, {"billing": 1.0}),
    "refund": ({"refunds": 4}, {"billing": 0.5, "complaints": 0.5}),
    "debt": ({"collections": 3, "billing": 2}, {}),
    "cancel": ({"retention": 4}, {"loyalty": 1.0}),
    "upgrade": ({"upsell": 4}, {"devices": 1.0}),
    "new_line": ({"new_sales": 4}, {"porting": 1.0}),
    "no_internet": ({"broadband": 5}, {"router": 1.0, "outage": 1.0}),
    "phone_issue": ({"mobile": 5}, {"devices": 1.0}),
    "tv_issue": ({"tv": 4}, {}),
    "fraud_report": ({"fraud": 4}, {"identity": 1.0}),
    "move": ({"moving_home": 3, "contracts": 2}, {}),
    "travel": ({"roaming": 4}, {"mobile": 1.0}),
    "complaint": ({"complaints": 4}, {"escalations": 1.0}),
}
INQUIRY_TYPES = tuple(SPARSE_NEEDS)

# A few skills are common on real floors (general, billing, mobile), most are specialist.
_COMMON = {"billing": 2.0, "mobile": 1.5, "broadband": 1.5, "payments": 1.5}


@dataclass(frozen=True)
class Workload:
    """One dispatch problem: compiled rules, the free agents and the queue, all on one channel."""

    eligibility: Eligibility
    rules: CompiledRules
    pool: AgentPool
    contacts: list[WaitingContact]
    channel: int


def _vocabularies() -> dict[str, Any]:
    return {
        "segments": list(SEGMENTS),
        "inquiry_types": list(INQUIRY_TYPES),
        "journey_stages": list(JOURNEY_STAGES),
        "channels": list(CHANNELS),
        "languages": list(LANGUAGES),
        "skills": list(SKILLS),
    }


def sparse_rules() -> RuleSet:
    """One rule per inquiry type (plus onboarding and premium variants) with specialist needs."""
    rules: list[dict[str, Any]] = [
        {
            "name": "onboarding-billing",
            "match": {"journey_stage": "onboarding", "inquiry_type": "bill_question"},
            "priority": 70,
            "require": {"skills": {"onboarding": 2, "billing": 2}},
            "relax": [{"name": "any-billing", "after_wait_seconds": 240,
                       "require": {"skills": {"billing": 3}}}],
            "fallback": {"action": "keep_waiting"},
        },
        {
            "name": "premium-cancel",
            "match": {"segment": "premium", "inquiry_type": "cancel"},
            "priority": 80,
            "require": {"skills": {"retention": 4}},
            "prefer": {"skills": {"vip_care": 2.0, "loyalty": 1.0}},
            "fallback": {"action": "keep_waiting"},
        },
    ]  # fmt: skip
    for inquiry, (required, preferred) in SPARSE_NEEDS.items():
        main_skill, main_level = next(iter(required.items()))
        rules.append(
            {
                "name": inquiry.replace("_", "-"),
                "match": {"inquiry_type": inquiry},
                "priority": 50,
                "require": {"skills": required},
                "prefer": {"skills": preferred},
                # After ten minutes a contact accepts a less senior agent on the main skill.
                "relax": [
                    {
                        "name": "junior",
                        "after_wait_seconds": 600,
                        "require": {"skills": {main_skill: max(1, main_level - 1)}},
                    }
                ],
                "fallback": {"action": "keep_waiting"},
            }
        )
    return RuleSet.model_validate({"vocabularies": _vocabularies(), "rules": rules})


def dense_rules() -> RuleSet:
    """Rules that ask for the language only, or for the skill nearly every agent holds."""
    rules: list[dict[str, Any]] = [
        {
            "name": "premium-general",
            "match": {"segment": "premium"},
            "priority": 70,
            "require": {"skills": {"general": 1}},
            "prefer": {"skills": {"vip_care": 1.0}},
            "fallback": {"action": "keep_waiting"},
        },
        {
            "name": "everybody",
            "require": {"skills": {}},
            "prefer": {"skills": {"billing": 1.0, "general": 1.0}},
            "fallback": {"action": "keep_waiting"},
        },
    ]
    return RuleSet.model_validate({"vocabularies": _vocabularies(), "rules": rules})


def agent_pool(rng: np.random.Generator, n_agents: int, channel: int) -> AgentPool:
    """Free agents with about four skills each (levels 1-5) and one free slot on `channel`."""
    n_skills = len(SKILLS)
    popularity = np.array([_COMMON.get(name, 1.0) for name in SKILLS])
    popularity[0] = 0.0  # "general" is handed out separately below
    popularity /= popularity.sum()
    skills = np.zeros((n_agents, n_skills), dtype=np.int8)
    for row in range(n_agents):
        held = rng.choice(n_skills, size=int(rng.integers(3, 6)), replace=False, p=popularity)
        skills[row, held] = rng.integers(1, 6, size=held.size)
    has_general = rng.random(n_agents) < 0.9
    skills[has_general, 0] = rng.integers(1, 6, size=int(has_general.sum()))
    languages = rng.random((n_agents, len(LANGUAGES))) < np.array([0.95, 0.25, 0.1, 0.08])
    languages[~languages.any(axis=1), 0] = True
    free = np.zeros((n_agents, len(CHANNELS)), dtype=np.int32)
    free[:, channel] = 1
    return AgentPool(
        ids=tuple(f"agent-{i:05d}" for i in range(n_agents)),
        skills=skills,
        languages=languages,
        free=free,
        idle_seconds=rng.uniform(0, 1800, size=n_agents),
    )


def waiting_contacts(
    rng: np.random.Generator, n_contacts: int, rules: CompiledRules, pool: AgentPool, channel: int
) -> list[WaitingContact]:
    """A queue in arrival order (longest wait first), each contact on its rule's current stage."""
    waits = np.sort(rng.uniform(0, 900, size=n_contacts))[::-1]
    language_p = np.array([0.8, 0.12, 0.05, 0.03])
    contacts = []
    for i, wait in enumerate(waits):
        facts = ContactFacts(
            channel=CHANNELS[channel],
            segment=str(rng.choice(SEGMENTS, p=[0.7, 0.2, 0.1])),
            inquiry_type=str(rng.choice(INQUIRY_TYPES)),
            journey_stage=str(rng.choice(JOURNEY_STAGES, p=[0.2, 0.7, 0.1])),
            language=str(rng.choice(LANGUAGES, p=language_p)),
        )
        rule = rules.rule_for(facts)
        # One contact in twenty already rejected or let expire an offer to some agent.
        excluded = (
            frozenset({pool.ids[int(rng.integers(pool.size))]})
            if rng.random() < 0.05
            else frozenset()
        )
        contacts.append(
            WaitingContact(
                contact_id=f"contact-{i:05d}",
                channel=channel,
                language=LANGUAGES.index(facts.language),
                rule=rule.index,
                stage=rule.next_stage(0, wait_seconds=float(wait), stalled_seconds=0.0),
                priority=rule.priority,
                wait_seconds=float(wait),
                excluded_agents=excluded,
            )
        )
    return contacts


def make_workload(
    eligibility: Eligibility, n_contacts: int, n_agents: int, *, seed: int = 0
) -> Workload:
    """A reproducible voice dispatch problem of the given size and eligibility density."""
    rng = np.random.default_rng(seed)
    ruleset = sparse_rules() if eligibility == "sparse" else dense_rules()
    rules = compile_rules(ruleset)
    channel = CHANNELS.index("voice")
    pool = agent_pool(rng, n_agents, channel)
    contacts = waiting_contacts(rng, n_contacts, rules, pool, channel)
    return Workload(eligibility, rules, pool, contacts, channel)
