"""SLA breach warnings: an event when a waiting contact nears its tier's SLA unanswered."""

from __future__ import annotations

import heapq

from routing_rules.compiled import CompiledRules
from service.contacts import ContactBook, ContactState, contact_event
from service.events.outbox import event_row
from service.storage.writer import BatchWriter

# A waiting contact raises `sla.breach_warning` once it has waited this share of its SLA.
SLA_WARNING_SHARE = 0.8


class SlaWatch:
    """Contacts to warn about, by the time their warning is due (a heap, checked each tick)."""

    def __init__(self, contacts: ContactBook, writer: BatchWriter) -> None:
        self._contacts = contacts
        self._writer = writer
        self._due: list[tuple[float, str]] = []  # (warn_at, contact_id)

    def watch(self, rules: CompiledRules, contact: ContactState) -> None:
        """Remember when a waiting contact should raise an SLA breach warning."""
        level = getattr(rules.ruleset.tiers, contact.tier).sla.get(contact.channel)
        if level is not None and not contact.breach_warned:
            warn_at = contact.created_at + SLA_WARNING_SHARE * level.answer_seconds
            heapq.heappush(self._due, (warn_at, contact.contact_id))

    def warn_due(self, rules: CompiledRules, now: float) -> None:
        """Emit `sla.breach_warning` (once each) for contacts still unanswered near their SLA.

        The event rides in the batch writer's transaction with the contact rows.
        """
        while self._due and self._due[0][0] <= now:
            _, contact_id = heapq.heappop(self._due)
            contact = self._contacts.get(contact_id)
            if (
                contact is None
                or contact.breach_warned
                or contact.status not in ("queued", "reserved")
            ):
                continue
            level = getattr(rules.ruleset.tiers, contact.tier).sla.get(contact.channel)
            if level is None:
                continue
            contact.breach_warned = True
            self._writer.put_event(
                event_row(
                    "sla.breach_warning",
                    {
                        **contact_event(contact),
                        "status": contact.status,
                        "waited_seconds": round(now - contact.created_at, 3),
                        "answer_seconds": level.answer_seconds,
                        "breach_at": contact.created_at + level.answer_seconds,
                    },
                    now=now,
                )
            )
