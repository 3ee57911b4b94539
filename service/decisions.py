"""What a routing decision says: the ACD's answer and the stored record with its reasons."""

from __future__ import annotations

from typing import Any

from routing_rules.compiled import CompiledRules
from routing_rules.scoring import ScoreTerms
from service.contacts import ContactState
from service.dispatch import Placement
from service.ids import new_id
from service.state.records import Reservation


def queued_answer(
    contact: ContactState,
    rules: CompiledRules,
    *,
    position: int,
    staffed: int,
    estimate: float | None,
) -> dict[str, Any]:
    """The route answer for a contact that waits."""
    return {
        "contact_id": contact.contact_id,
        "outcome": "queued",
        "agent_id": None,
        "reservation": None,
        "queue_position": position,
        "estimated_wait_seconds": None if estimate is None else round(estimate, 1),
        "rule": contact.rule,
        "stage": contact.stage_name,
        "rules_version": rules.version,
        "tier": contact.tier,
        "tier_name": tier_name(rules, contact.tier),
        "explanation": queued_text(contact, position, staffed),
    }


def assigned_answer(
    contact: ContactState, rules: CompiledRules, placement: Placement, *, now: float
) -> dict[str, Any]:
    """The route answer for a contact offered to an agent."""
    reservation = placement.reservation
    best = placement.candidates[0] if placement.candidates else None
    return {
        "contact_id": contact.contact_id,
        "outcome": "assigned",
        "agent_id": reservation.agent_id,
        "reservation": {
            "reservation_id": reservation.reservation_id,
            "agent_id": reservation.agent_id,
            "expires_at": reservation.expires_at,
            "expires_in_seconds": round(reservation.expires_at - now, 3),
        },
        "queue_position": None,
        "estimated_wait_seconds": None,
        "rule": contact.rule,
        "stage": placement.stage_name,
        "rules_version": rules.version,
        "tier": contact.tier,
        "tier_name": tier_name(rules, contact.tier),
        "explanation": (
            f"rule {contact.rule}, stage {placement.stage_name}: best of "
            f"{placement.eligible_count} eligible agent(s)"
            + (f", score {best.total:.2f}" if best else "")
            + f" ({placement.method})"
        ),
    }


def decision_row(
    contact: ContactState,
    rules: CompiledRules,
    *,
    outcome: str,
    trigger: str,
    reservation: Reservation | None,
    candidates: list[ScoreTerms],
    eligible: int,
    now: float,
    method: str,
) -> dict[str, Any]:
    """The `decisions` row of one decision, with the explanation it was made on."""
    return {
        "decision_id": new_id(),
        "contact_id": contact.contact_id,
        "at": now,
        "outcome": outcome,
        "trigger": trigger,
        "agent_id": reservation.agent_id if reservation else None,
        "reservation_id": reservation.reservation_id if reservation else None,
        "rule": contact.rule,
        "stage": contact.stage_name,
        "rules_version": rules.version,
        "method": method,
        "explanation": {
            "tier": contact.tier,
            "promoted_by": contact.promoted_by,
            "eligible_count": eligible,
            "candidates": [terms_dict(t) for t in candidates],
            "requirements": requirements_of(rules, contact.rule, contact.stage),
        },
    }


def terms_dict(t: ScoreTerms) -> dict[str, Any]:
    """Score terms as a JSON object."""
    return {
        "agent_id": t.agent_id,
        "eligible": t.eligible,
        "reason": t.reason,
        "priority": t.priority,
        "wait": t.wait,
        "skill_fit": t.skill_fit,
        "preferred": t.preferred,
        "idle": t.idle,
        "total": t.total,
        "precedence": t.precedence,
        "performance": t.performance,
    }


def tier_name(rules: CompiledRules, tier: str) -> str:
    """The display name of a tier in the active rules."""
    return str(getattr(rules.ruleset.tiers, tier).display_name)


def rounded(candidate: dict[str, Any]) -> dict[str, Any]:
    """Floats of a candidate rounded for display."""
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in candidate.items()}


def requirements_of(rules: CompiledRules, rule_name: str, stage: int) -> dict[str, Any]:
    """The hard requirements and preferences of a rule's stage, by skill name (cached)."""
    key = (rules.version, rules.checksum, rule_name, stage)
    cached = _REQUIREMENTS.get(key)
    if cached is None:
        if len(_REQUIREMENTS) > 10_000:
            _REQUIREMENTS.clear()
        cached = _REQUIREMENTS[key] = _requirements(rules, rule_name, stage)
    return cached


_REQUIREMENTS: dict[tuple[int, str, str, int], dict[str, Any]] = {}


def _requirements(rules: CompiledRules, rule_name: str, stage: int) -> dict[str, Any]:
    rule = rules.rule_named(rule_name) or rules.implicit
    plan = rule.stages[min(stage, len(rule.stages) - 1)]
    return {
        "skills": {
            rules.skills[s]: int(lv)
            for s, lv in zip(plan.required_skills, plan.required_levels, strict=True)
        },
        "language": plan.language,
        "preferred": {
            rules.skills[s]: round(float(w), 4)
            for s, w in zip(plan.preferred_skills, plan.preferred_weights, strict=True)
        },
    }


def queued_text(contact: ContactState, position: int, staffed: int) -> str:
    """Why a contact waits, in one line."""
    if staffed == 0:
        return (
            f"rule {contact.rule}, stage {contact.stage_name}: no agent is available on "
            f"{contact.channel}; position {position}"
        )
    return (
        f"rule {contact.rule}, stage {contact.stage_name}: no eligible agent free now; "
        f"position {position}"
    )
