"""SLA breach warnings: an event when a waiting contact nears its tier's SLA unanswered.

When each warning is due is kept in a heap in this process, or, with several replicas, in a
Redis sorted set (`sla_due`) that every replica's timer reads: a contact routed by a replica
that has gone is still warned about, and by one replica only (the one whose ZREM took it).
"""

from __future__ import annotations

import heapq
from typing import cast

from redis.asyncio import Redis

from routing_rules.compiled import CompiledRules
from service.contacts import ContactState, contact_event
from service.events.outbox import event_row
from service.storage.writer import BatchWriter

# A waiting contact raises `sla.breach_warning` once it has waited this share of its SLA.
SLA_WARNING_SHARE = 0.8


class SlaWatch:
    """Contacts to warn about, by the time their warning is due."""

    def __init__(self, writer: BatchWriter, shared: tuple[Redis, str] | None = None) -> None:
        self._writer = writer
        self._due: list[tuple[float, str]] = []  # (warn_at, contact_id)
        self._shared = shared  # (client, key of the sorted set) with several replicas

    async def watch(self, rules: CompiledRules, contact: ContactState) -> None:
        """Remember when a waiting contact should raise an SLA breach warning."""
        level = getattr(rules.ruleset.tiers, contact.tier).sla.get(contact.channel)
        if level is None or contact.breach_warned:
            return
        warn_at = contact.created_at + SLA_WARNING_SHARE * level.answer_seconds
        if self._shared is None:
            heapq.heappush(self._due, (warn_at, contact.contact_id))
        else:
            client, key = self._shared
            await client.zadd(key, {contact.contact_id: warn_at})

    async def later(self, contact_id: str, at: float) -> None:
        """Look at a contact's warning again at `at` (it could not be handled now)."""
        if self._shared is None:
            heapq.heappush(self._due, (at, contact_id))
        else:
            client, key = self._shared
            await client.zadd(key, {contact_id: at})

    async def due(self, now: float) -> list[str]:
        """Contacts whose warning time has come (each handed out once, to one replica)."""
        if self._shared is None:
            out = []
            while self._due and self._due[0][0] <= now:
                out.append(heapq.heappop(self._due)[1])
            return out
        client, key = self._shared
        ids = cast(list[bytes], await client.zrangebyscore(key, "-inf", now))
        taken = []
        for raw in ids:
            if await client.zrem(key, raw):
                taken.append(raw.decode())
        return taken

    def warn(self, rules: CompiledRules, contact: ContactState, now: float) -> bool:
        """Emit `sla.breach_warning` for a contact still unanswered; True if it was emitted.

        The event rides in the batch writer's transaction with the contact rows.
        """
        if contact.breach_warned or contact.status not in ("queued", "reserved"):
            return False
        level = getattr(rules.ruleset.tiers, contact.tier).sla.get(contact.channel)
        if level is None:
            return False
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
        return True
