"""Putting a stored contact back into the real-time state after a start."""

from __future__ import annotations

import structlog

from routing_rules.compiled import CompiledRules
from service import clock
from service.contacts import ContactState
from service.dispatch import rematch
from service.state.base import RealtimeState
from service.state.records import Reservation, WaitingEntry

log = structlog.get_logger(__name__)


async def restore(
    state: RealtimeState, rules: CompiledRules, contact: ContactState, entry: WaitingEntry
) -> bool:
    """Restore one active contact; True if its stored record changed (status or rule).

    A connected contact takes its agent's slot again; a queued one waits again; a reserved one
    gets its reservation back (same id and expiry) unless its agent can no longer take it, in
    which case it waits again.
    """
    if contact.channel not in rules.channels or contact.request["language"] not in rules.languages:
        # The rules changed while the service was down and no longer know this channel or
        # language: the contact stays readable (and can be completed or abandoned) but is not
        # routed until rules that know it are active again.
        log.warning(
            "recovery.contact_parked",
            contact_id=contact.contact_id,
            channel=contact.channel,
            language=contact.request["language"],
        )
        return False
    if contact.status == "connected" and contact.agent_id:
        rule = rules.rule_named(contact.rule) or rules.implicit
        contact.stage_name = rule.stages[min(contact.stage, len(rule.stages) - 1)].name
        await state.add_load(contact.agent_id, contact.channel)
        return False
    # The rules may have changed while the service was down: match again.
    entry = rematch(rules, entry, entry.stage_entered_at)
    changed = entry.rule != contact.rule
    rule = rules.rule_named(entry.rule) or rules.implicit
    contact.rule, contact.stage, contact.priority = entry.rule, entry.stage, entry.priority
    contact.stage_name = rule.stages[min(entry.stage, len(rule.stages) - 1)].name
    contact.entry = entry
    await state.add_waiting(entry)
    if contact.status != "reserved" or not (contact.reservation_id and contact.agent_id):
        return changed
    now = clock.now()
    reservation = Reservation(
        contact.reservation_id,
        contact.contact_id,
        contact.agent_id,
        contact.channel,
        now,
        contact.reservation_expires_at or now,
    )
    if await state.claim(entry, reservation):
        return changed
    contact.status, contact.agent_id = "queued", None
    contact.reservation_id = contact.reservation_expires_at = None
    return True
