"""Keeps the performance book in step with the `outcomes` table.

At start and every REFRESH_SECONDS the book is rebuilt from the table: one aggregate query over
the outcomes completed within the rules' `performance.window_days`, so the window moves on and
other replicas' outcomes arrive. Between rebuilds the outcome desk's listener applies this
process's writes at once.

A write can commit while a rebuild reads. So that it is counted exactly once, the aggregate is
read under the outcome desk's write lock (so no committed write is still waiting for its
listener call), the listener notes every row it sees during a rebuild, and the rebuild reads
those rows again in the same snapshot as its aggregate and, for each, replaces what the
snapshot held by the newest row.

With several replicas, a write here may change an earlier outcome that another replica wrote
after this book's last rebuild; the book then takes out a row it never counted, and its
figures for that agent and kind are off until the next rebuild (at most a minute).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import structlog
from sqlalchemy import case, func, select
from sqlalchemy.engine import Connection, Engine

from routing_rules.compiled import CompiledRules
from routing_rules.schema import Performance
from service import clock
from service.performance import AgentKey, PerformanceBook, Tally
from service.storage.tables import OutcomeRow

log = structlog.get_logger(__name__)

OUTCOMES = OutcomeRow.__table__  # type: ignore[attr-defined]
REFRESH_SECONDS = 60.0
DAY_SECONDS = 86400.0

OutcomeChange = tuple[Mapping[str, Any] | None, Mapping[str, Any]]


class PerformanceStore:
    """Builds the book from the outcomes table and applies outcome writes to it."""

    def __init__(
        self,
        engine: Engine,
        performance: Performance,
        *,
        write_lock: threading.Lock | None = None,
    ) -> None:
        self._engine = engine
        # The outcome desk's lock over each write and its listener calls: the aggregate is read
        # under it, so no outcome is in the snapshot without its listener call having run.
        self._write_lock = write_lock
        self.book = PerformanceBook(performance)
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()  # one rebuild at a time
        # During a rebuild: contact id -> newest row the listener saw (None otherwise).
        self._pending: dict[str, Mapping[str, Any]] | None = None

    def refresh(self) -> None:
        """Rebuild the book from the outcomes of the window (blocking: run it in a thread)."""
        with self._refreshing:
            since = clock.now() - self.book.performance.window_days * DAY_SECONDS
            with self._lock:
                self._pending = {}
            try:
                with _snapshot(self._engine) as connection:
                    with self._write_lock or contextlib.nullcontext():
                        tallies = list(_tallies(connection, since))
                    with self._lock:
                        pending, self._pending = self._pending or {}, None
                        held = _rows(connection, list(pending)) if pending else {}
                        self.book.reset(tallies, since=since)
                        self.book.apply((held.get(cid), row) for cid, row in pending.items())
            finally:
                with self._lock:
                    self._pending = None

    def on_outcomes(self, changes: list[OutcomeChange]) -> None:
        """The outcome desk's listener: apply committed writes to the book."""
        with self._lock:
            self.book.apply(changes)
            if self._pending is not None:
                for _, new in changes:
                    self._pending[str(new["contact_id"])] = new

    async def on_rules_changed(self, rules: CompiledRules) -> None:
        """Score with the new rules' settings; a new window needs a rebuild at once."""
        window = self.book.performance.window_days
        self.book.configure(rules.ruleset.performance)
        if rules.ruleset.performance.window_days == window:
            return
        try:
            await asyncio.to_thread(self.refresh)
        except Exception:  # the next periodic rebuild tries again
            log.exception("performance.refresh_failed")

    async def run(self, interval_seconds: float = REFRESH_SECONDS) -> None:
        """Rebuild every `interval_seconds` until cancelled."""
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                await asyncio.to_thread(self.refresh)
            except Exception:  # a database outage: keep the book, try again next time
                log.exception("performance.refresh_failed")


@contextlib.contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """A read-only connection whose statements all see one snapshot of the database."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as connection:
            # pysqlite opens no transaction for reads; in WAL mode this one pins a snapshot.
            connection.exec_driver_sql("BEGIN")
            try:
                yield connection
            finally:
                connection.rollback()
        return
    connection = engine.connect().execution_options(isolation_level="REPEATABLE READ")
    with connection, connection.begin():
        yield connection


def _tallies(connection: Connection, since: float) -> Iterator[tuple[AgentKey, Tally]]:
    """Per agent, kind and currency: sums over the outcomes completed since `since`."""
    c = OUTCOMES.c

    def count_of(condition: Any) -> Any:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    keys = (c.agent_id, c.inquiry_type, c.segment, c.journey_stage, c.currency)
    query = (
        select(
            *keys,
            func.count(),
            count_of(c.resolved),
            count_of(c.durable),
            count_of(c.nps >= 9),
            count_of(c.nps <= 6),
            func.count(c.nps),
            func.coalesce(func.sum(c.handle_seconds), 0.0),
            func.coalesce(func.sum(c.revenue_minor), 0),
        )
        .where(c.completed_at >= since)
        .group_by(*keys)
    )
    for agent, inquiry, segment, stage, currency, *sums in connection.execute(query):
        contacts, resolved, durable, promoters, detractors, answers, handle, revenue = sums
        yield (
            (agent, (inquiry, segment, stage)),
            Tally(
                contacts=int(contacts),
                resolved=int(resolved),
                durable=int(durable),
                promoters=int(promoters),
                detractors=int(detractors),
                answers=int(answers),
                handle_seconds=float(handle),
                revenue={currency: int(revenue)} if currency and int(revenue) else {},
            ),
        )


def _rows(connection: Connection, contact_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The stored outcome rows of these contacts, by contact id."""
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(contact_ids), 500):
        chunk = contact_ids[start : start + 500]
        query = select(OUTCOMES).where(OUTCOMES.c.contact_id.in_(chunk))
        for row in connection.execute(query).mappings():
            found[row["contact_id"]] = dict(row)
    return found
