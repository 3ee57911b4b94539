"""Why a contact is where it is: the decisions made about it and the candidates behind them."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from routing_rules.explanation import explain_candidates
from service import clock
from service.decisions import requirements_of, rounded, terms_dict
from service.dispatch import advance_stages, as_waiting_contact, stage_of_name
from sla.precedence import precedence_of

if TYPE_CHECKING:
    from service.routing import RoutingService


async def explain(routing: RoutingService, contact_id: str) -> dict[str, Any]:
    """Stored decisions; for a waiting contact, the live candidates with every score term."""
    contact = await routing.get(contact_id)
    rules = routing.rules.compiled
    decisions = await asyncio.to_thread(routing.archive.decisions, contact_id)
    latest = decisions[-1] if decisions else None
    candidates: list[dict[str, Any]] = []
    if contact.status == "queued" and contact.entry is not None:
        now = clock.now()
        entry = advance_stages(rules, [contact.entry], now)[0]
        pool = await routing.state.pool(contact.channel, now)
        protection = rules.ruleset.tiers.protection
        precedence = precedence_of(
            entry.tier,
            now - entry.enqueued_at,
            cap_engaged=routing.dispatcher.ledger.cap_engaged(contact.channel, now, protection),
            protection=protection,
        )
        waiting = as_waiting_contact(rules, entry, now, precedence.level)
        performance = routing.dispatcher.performance
        candidates = [
            terms_dict(t) for t in explain_candidates(rules, pool, waiting, performance=performance)
        ]
        stage_name, stage = stage_of_name(rules, entry), entry.stage
    elif latest is not None:
        candidates = latest["explanation"].get("candidates", [])
        stage_name, stage = latest["stage"], contact.stage
    else:
        stage_name, stage = contact.stage_name, contact.stage
    return {
        "contact_id": contact_id,
        "status": contact.status,
        "tier": contact.tier,
        "promoted_by": contact.promoted_by,
        "rule": contact.rule,
        "stage": stage_name,
        "rules_version": latest["rules_version"] if latest else rules.version,
        "requirements": requirements_of(rules, contact.rule, stage),
        "chosen_agent_id": contact.agent_id,
        "method": latest["method"] if latest else None,
        "decided_at": latest["at"] if latest else None,
        "candidates": [rounded(c) for c in candidates],
        "decisions": decisions,
    }
