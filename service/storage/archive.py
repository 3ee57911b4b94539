"""Reads of contacts and decisions from the database (the source of truth behind memory)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from service.storage.tables import ContactRow, DecisionRow
from service.storage.writer import BatchWriter

ACTIVE = ("queued", "reserved", "connected")


class ContactArchive:
    """Database reads for contacts; blocking, so callers run them in a thread."""

    def __init__(self, engine: Engine, writer: BatchWriter) -> None:
        self._engine = engine
        self._writer = writer

    def contact(self, contact_id: str) -> ContactRow | None:
        """One stored contact."""
        with Session(self._engine) as session:
            return session.get(ContactRow, contact_id)

    def decisions(self, contact_id: str) -> list[dict[str, Any]]:
        """Every decision about a contact, oldest first (queued rows are flushed first)."""
        self._writer.flush()
        with Session(self._engine) as session:
            rows = session.exec(
                select(DecisionRow)
                .where(DecisionRow.contact_id == contact_id)
                # Ids grow within a process: they order decisions made in the same instant.
                .order_by(col(DecisionRow.at), col(DecisionRow.decision_id))
            ).all()
        return [row.model_dump() for row in rows]

    def ended_since(self, since: float) -> dict[str, float]:
        """Ids (with creation time) of ended contacts created after `since`."""
        with Session(self._engine) as session:
            rows = session.exec(
                select(ContactRow.contact_id, ContactRow.created_at)
                .where(col(ContactRow.status).not_in(ACTIVE))
                .where(col(ContactRow.created_at) >= since)
            ).all()
        return {contact_id: created_at for contact_id, created_at in rows}

    def active(self) -> list[ContactRow]:
        """Contacts still queued, reserved or connected, oldest first."""
        with Session(self._engine) as session:
            return list(
                session.exec(
                    select(ContactRow)
                    .where(col(ContactRow.status).in_(ACTIVE))
                    .order_by(col(ContactRow.created_at))
                ).all()
            )

    def answered_since(self, since: float) -> list[tuple[str, str, float]]:
        """(channel, tier, answered at) of contacts answered after `since`, oldest first."""
        with Session(self._engine) as session:
            rows = session.exec(
                select(ContactRow.channel, ContactRow.tier, ContactRow.connected_at)
                .where(col(ContactRow.connected_at) >= since)
                .order_by(col(ContactRow.connected_at))
            ).all()
        return [(channel, tier, float(at)) for channel, tier, at in rows if at is not None]
