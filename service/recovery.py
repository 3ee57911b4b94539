"""Putting a stored contact back into the real-time state after a start."""

from __future__ import annotations

from routing_rules.compiled import CompiledRules
from service import clock
from service.contacts import ContactState
from service.dispatch import schedule
from service.state.base import RealtimeState
from service.state.records import Reservation, WaitingEntry


async def restore(
    state: RealtimeState, rules: CompiledRules, contact: ContactState, entry: WaitingEntry
) -> bool:
    """Restore one active contact; True if its stored status had to change.

    A connected contact takes its agent's slot again; a queued one waits again; a reserved one
    gets its reservation back (same id and expiry) unless its agent can no longer take it, in
    which case it waits again.
    """
    rule = rules.rule_named(contact.rule) or rules.rule_for(contact.facts)
    contact.stage_name = rule.stages[min(contact.stage, len(rule.stages) - 1)].name
    if contact.status == "connected" and contact.agent_id:
        await state.add_load(contact.agent_id, contact.channel)
        return False
    entry = schedule(rules, entry)
    contact.entry = entry
    await state.add_waiting(entry)
    if contact.status != "reserved" or not (contact.reservation_id and contact.agent_id):
        return False
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
        return False
    contact.status, contact.agent_id = "queued", None
    contact.reservation_id = contact.reservation_expires_at = None
    return True
