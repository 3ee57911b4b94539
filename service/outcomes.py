"""Outcomes of completed contacts: recording with repeat-contact detection, and reading.

An outcome belongs to one completed contact and copies in the contact's facts (customer,
agent, channel, segment, inquiry type, journey stage, tier, arrival and completion times).
Recording it again replaces it.

Repeat contacts. For outcomes of one customer on one inquiry type, with W the active rules'
`outcomes.repeat_window_days`, every write keeps these links:
- `repeat_of` of X: the latest earlier contact that arrived in [t - W, t) (t: X's arrival);
- `repeated_by` of X: the earliest later contact that arrived in (t, t + W];
- `durable` of X: resolved and no `repeated_by`.
Writing X sets its own links and those of its two neighbours: the earlier one gets
`repeated_by = X` and loses durability (its `repeated_by` is kept even when it was not
resolved), the later one gets `repeat_of = X`. So outcomes recorded out of order (wrap-up of an
older contact after a newer one) end up linked as if recorded in order.

Each write is one transaction that reads the neighbours and writes all three rows under a lock
on the customer: a PostgreSQL advisory transaction lock on the customer id (the customer may
have no rows yet to lock with FOR UPDATE), the database write lock on SQLite. Two recordings
for one customer, from this process or another replica, therefore never miss each other.

After every committed write, each of `OutcomeDesk.listeners` is called with the (old row or
None, new row) pairs written, as dicts with the `outcomes` column names, in commit order (a
lock in this process covers the transaction and the calls), in the writing worker thread, not
on the event loop. A listener that raises is logged and does not undo the write.
"""

from __future__ import annotations

import asyncio
import difflib
import threading
from collections.abc import Callable
from typing import Any

import structlog
from prometheus_client import Counter
from sqlalchemy import and_, insert, select, text, update
from sqlalchemy.engine import Connection, Engine

from routing_rules.schema import OutcomeTags
from service import clock
from service.contacts import ContactState
from service.idempotency import write_transaction
from service.outcome_models import TAG_KINDS, OutcomeIn, TagsIn
from service.problems import Conflict, InvalidInput, NotFound, error_summary
from service.rules_store import RulesStore
from service.storage.tables import OutcomeRow

log = structlog.get_logger(__name__)

OUTCOMES = OutcomeRow.__table__  # type: ignore[attr-defined]
DAY_SECONDS = 86400.0
# First key of the advisory locks taken here; the second is the customer id's hash.
_PG_LOCK_NAMESPACE = 0x6F75_7463  # "outc"
_TAG_NOUNS = {"needs": "need", "frustrations": "frustration", "requests": "request"}

OutcomeChange = tuple[dict[str, Any] | None, dict[str, Any]]
OutcomeListener = Callable[[list[OutcomeChange]], None]

RECORDED = Counter(
    "skillroute_outcomes_total",
    "Outcomes recorded (the first recording of each contact), by resolution",
    ["resolved"],
)


class OutcomeDesk:
    """Records, replaces and reads the outcomes of completed contacts."""

    def __init__(self, *, engine: Engine, rules: RulesStore) -> None:
        self._engine = engine
        self._rules = rules
        # Held over each write and its listener calls: listeners see writes in commit order,
        # and a reader holding it sees no write committed but not yet passed to listeners.
        self._lock = threading.Lock()
        self.write_lock = self._lock
        self.listeners: list[OutcomeListener] = []

    def check(self, outcome: OutcomeIn, *, field: str = "") -> None:
        """Raise InvalidInput naming every tag the active rules do not define or repeat.

        `field` is where the outcome sits in the request body (`outcome` in `complete`).
        """
        prefix = f"{field}." if field else ""
        errors = tag_problems(self._rules.compiled.ruleset.outcomes.tags, outcome.tags, prefix)
        if errors:
            raise InvalidInput(error_summary(errors[0]), errors=errors)

    async def record(
        self, contact: ContactState, outcome: OutcomeIn
    ) -> tuple[dict[str, Any], bool]:
        """Record or replace a completed contact's outcome: (stored row, True when new).

        The outcome must have passed `check`. 409 unless the contact is completed.
        """
        if contact.status != "completed" or contact.ended_at is None or contact.agent_id is None:
            raise Conflict(
                f"contact {contact.contact_id} is {contact.status}; only a completed contact "
                "has an outcome"
            )
        row = outcome_row(contact, outcome, now=clock.now())
        window = self._rules.compiled.ruleset.outcomes.repeat_window_days * DAY_SECONDS
        return await asyncio.to_thread(self._write, row, window)

    async def get(self, contact_id: str) -> dict[str, Any]:
        """The stored outcome of a contact; 404 when none was recorded."""
        row = await asyncio.to_thread(self._read, contact_id)
        if row is None:
            raise NotFound(f"contact {contact_id} has no recorded outcome")
        return row

    def _read(self, contact_id: str) -> dict[str, Any] | None:
        with self._engine.connect() as connection:
            return _one(connection, OUTCOMES.c.contact_id == contact_id)

    def _write(self, row: dict[str, Any], window: float) -> tuple[dict[str, Any], bool]:
        with self._lock:
            with write_transaction(self._engine) as connection:
                changes = write_outcome(connection, row, window)
            created = changes[0][0] is None
            if created:
                RECORDED.labels(resolved=str(row["resolved"]).lower()).inc()
            for listener in list(self.listeners):
                try:
                    listener(changes)
                except Exception:  # a listener's failure must not turn a stored write into an error
                    log.exception("outcomes.listener_failed", contact_id=row["contact_id"])
        return changes[0][1], created


def outcome_row(contact: ContactState, outcome: OutcomeIn, *, now: float) -> dict[str, Any]:
    """The `outcomes` row of a completed contact, before repeat detection links it."""
    assert contact.ended_at is not None and contact.agent_id is not None
    completed_at = contact.ended_at
    answered_at = contact.connected_at if contact.connected_at is not None else completed_at
    handle_seconds = (
        outcome.handle_seconds
        if outcome.handle_seconds is not None
        else max(0.0, completed_at - answered_at)
    )
    revenue = outcome.revenue
    return {
        "contact_id": contact.contact_id,
        "customer_id": contact.customer_id,
        "agent_id": contact.agent_id,
        "channel": contact.channel,
        "segment": contact.request["segment"],
        "inquiry_type": contact.request["inquiry_type"],
        "journey_stage": contact.request["journey_stage"],
        "tier": contact.tier,
        "resolved": outcome.resolved,
        "durable": outcome.resolved,
        "repeat_of": None,
        "repeated_by": None,
        "revenue_minor": 0 if revenue is None else revenue.amount_minor,
        "currency": None if revenue is None else revenue.currency,
        "upsell": outcome.upsell,
        "cross_sell": outcome.cross_sell,
        "nps": outcome.nps,
        "handle_seconds": float(handle_seconds),
        "tags": {kind: list(getattr(outcome.tags, kind)) for kind in TAG_KINDS},
        "contact_created_at": contact.created_at,
        "completed_at": completed_at,
        "recorded_at": now,
    }


def write_outcome(
    connection: Connection, row: dict[str, Any], window: float
) -> list[OutcomeChange]:
    """Insert or replace `row` with its repeat links; every (old, new) row pair written.

    The first pair is the outcome itself; then its earlier and later neighbours, if changed.
    Run it in a transaction: the customer's lock is held until it ends.
    """
    contact_id = row["contact_id"]
    _lock_customer(connection, row["customer_id"], contact_id)
    old = _one(connection, OUTCOMES.c.contact_id == contact_id)
    arrived = row["contact_created_at"]
    columns = OUTCOMES.c
    same_issue = and_(
        columns.customer_id == row["customer_id"],
        columns.inquiry_type == row["inquiry_type"],
        columns.contact_id != contact_id,
    )
    earlier = _first(
        connection,
        select(OUTCOMES)
        .where(
            same_issue,
            columns.contact_created_at >= arrived - window,
            columns.contact_created_at < arrived,
        )
        .order_by(columns.contact_created_at.desc(), columns.contact_id.desc()),
    )
    later = _first(
        connection,
        select(OUTCOMES)
        .where(
            same_issue,
            columns.contact_created_at > arrived,
            columns.contact_created_at <= arrived + window,
        )
        .order_by(columns.contact_created_at, columns.contact_id),
    )
    new = {
        **row,
        "repeat_of": None if earlier is None else earlier["contact_id"],
        "repeated_by": None if later is None else later["contact_id"],
        "durable": row["resolved"] and later is None,
    }
    if old is None:
        connection.execute(insert(OUTCOMES).values(**new))
    else:
        connection.execute(update(OUTCOMES).where(columns.contact_id == contact_id).values(**new))
    changes: list[OutcomeChange] = [(old, new)]
    neighbours = (
        (earlier, {"repeated_by": contact_id, "durable": False}),
        (later, {"repeat_of": contact_id}),
    )
    for neighbour, links in neighbours:
        if neighbour is None:
            continue
        linked = {**neighbour, **links}
        if linked != neighbour:
            connection.execute(
                update(OUTCOMES)
                .where(columns.contact_id == neighbour["contact_id"])
                .values(**links)
            )
            changes.append((neighbour, linked))
    return changes


def _lock_customer(connection: Connection, customer_id: str, contact_id: str) -> None:
    """Serialise the writers of one customer's outcomes until the transaction ends."""
    if connection.dialect.name == "postgresql":
        # Advisory, not FOR UPDATE: two first outcomes of a customer have no row to lock yet.
        connection.execute(
            text(f"SELECT pg_advisory_xact_lock({_PG_LOCK_NAMESPACE}, hashtext(:customer))"),
            {"customer": customer_id},
        )
        return
    # SQLite: a write statement first, so the reads below run under the database's write lock.
    # pysqlite opens the transaction only at the first write, and a WAL read snapshot cannot
    # turn into a write once another connection has committed in between.
    connection.execute(
        update(OUTCOMES)
        .where(OUTCOMES.c.contact_id == contact_id)
        .values(contact_id=OUTCOMES.c.contact_id)
    )


def _one(connection: Connection, condition: Any) -> dict[str, Any] | None:
    return _first(connection, select(OUTCOMES).where(condition))


def _first(connection: Connection, query: Any) -> dict[str, Any] | None:
    found = connection.execute(query.limit(1)).mappings().first()
    return None if found is None else dict(found)


def tag_problems(vocabulary: OutcomeTags, tags: TagsIn, prefix: str = "") -> list[dict[str, Any]]:
    """Field errors for tags the vocabulary lacks (with a did-you-mean) or that are repeated."""
    errors = []
    for kind in TAG_KINDS:
        known: list[str] = getattr(vocabulary, kind)
        given: list[str] = getattr(tags, kind)
        for index, name in enumerate(given):
            field = f"{prefix}tags.{kind}.{index}"
            if name in given[:index]:
                errors.append(
                    {
                        "field": field,
                        "type": "duplicate",
                        "message": f"tag {name!r} is given twice",
                    }
                )
            elif name not in known:
                errors.append(
                    {
                        "field": field,
                        "type": "unknown_name",
                        "message": _unknown_tag(kind, name, known),
                    }
                )
    return errors


def _unknown_tag(kind: str, name: str, known: list[str]) -> str:
    noun = _TAG_NOUNS[kind]
    if not known:
        return f"unknown {noun} tag {name!r}; the rules define none (outcomes.tags.{kind})"
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {noun} tag {name!r}{hint}; known: {', '.join(known)}"
