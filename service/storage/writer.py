"""Group commits for the route hot path.

A commit per request costs more than the whole request, so contact and decision rows are
queued and written by one background thread in a single transaction every
`flush_interval` seconds (or as soon as `batch_max` rows wait). Events about those contacts
(`contact.queued`, `contact.assigned`, `sla.breach_warning`) go to the outbox in the same
transaction, so an event is committed exactly when the change it reports is. What a crash can
lose: the rows of the last flush interval (50 ms by default) that had not yet been committed.
The ACD's retry of such a contact is then routed afresh. If the database fails, rows stay
queued and are retried; `/readyz` reports the writer unhealthy until a flush succeeds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
import structlog
from sqlalchemy.engine import Engine

from service.storage.tables import ContactRow, DecisionRow

log = structlog.get_logger(__name__)

MAX_PENDING = 200_000


class WriterBacklogFull(RuntimeError):
    """The database has not accepted writes for too long; refuse new work."""


class BatchWriter:
    """Queues contact upserts and decision inserts and commits them in batches."""

    def __init__(self, engine: Engine, *, flush_interval: float, batch_max: int) -> None:
        self._engine = engine
        self._interval = flush_interval
        self._batch_max = batch_max
        self._lock = threading.Lock()
        # One flush at a time: a flush that overtook one still committing (explain flushes
        # before it reads) would miss its rows and let its older contact states win.
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._contacts: dict[str, dict[str, Any]] = {}
        self._decisions: list[dict[str, Any]] = []
        self._events: list[dict[str, Any]] = []
        self._thread: threading.Thread | None = None
        self.healthy = True
        self.last_error: str | None = None
        self.flushed_rows = 0
        self.dropped_rows = 0
        self._prepare()

    @property
    def pending(self) -> int:
        """Rows queued and not yet committed."""
        return len(self._contacts) + len(self._decisions) + len(self._events)

    def put_contact(self, row: dict[str, Any]) -> None:
        """Queue the newest state of a contact (later puts of the same id replace it)."""
        with self._lock:
            self._check_backlog()
            self._contacts[row["contact_id"]] = row
            if self.pending >= self._batch_max:
                self._wake.set()

    def put_decision(self, row: dict[str, Any]) -> None:
        """Queue one routing decision."""
        with self._lock:
            self._check_backlog()
            self._decisions.append(row)
            if self.pending >= self._batch_max:
                self._wake.set()

    def put_event(self, row: dict[str, Any]) -> None:
        """Queue one outbox event (an `outbox.event_row`), committed with the rows beside it."""
        with self._lock:
            self._check_backlog()
            self._events.append(row)
            if self.pending >= self._batch_max:
                self._wake.set()

    def has_room(self) -> bool:
        """Whether new rows are still accepted (the backlog is below its bound)."""
        return self.pending < MAX_PENDING

    def _check_backlog(self) -> None:
        if self.pending >= MAX_PENDING:
            raise WriterBacklogFull(f"{self.pending} rows wait for the database")

    def start(self) -> None:
        """Start the flushing thread."""
        self._thread = threading.Thread(target=self._run, name="skillroute-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Flush what is queued and stop the thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()

    def _run(self) -> None:
        backoff = self._interval
        while not self._stop.is_set():
            self._wake.wait(backoff)
            self._wake.clear()
            backoff = self._interval if self.flush() else min(backoff * 2, 5.0)

    def flush(self) -> bool:
        """Commit everything queued in one transaction; False (rows kept) on failure."""
        with self._flush_lock:
            return self._flush()

    def _flush(self) -> bool:
        with self._lock:
            contacts, self._contacts = self._contacts, {}
            decisions, self._decisions = self._decisions, []
            events, self._events = self._events, []
        if not contacts and not decisions and not events:
            return True
        try:
            started = time.perf_counter()
            contact_params = self._params(contacts.values(), self._contact_params)
            decision_params = self._params(decisions, self._decision_params)
            event_params = self._params(events, self._event_params)
            with self._engine.begin() as connection:
                if contact_params:
                    connection.exec_driver_sql(self._contact_sql, contact_params)
                if decision_params:
                    connection.exec_driver_sql(self._decision_sql, decision_params)
                if event_params:
                    connection.exec_driver_sql(self._event_sql, event_params)
            self.flushed_rows += len(contacts) + len(decisions) + len(events)
            if not self.healthy:
                log.info("writer.recovered", seconds=round(time.perf_counter() - started, 4))
            self.healthy, self.last_error = True, None
            return True
        except Exception as exc:  # the database is down or refused: keep the rows, retry
            with self._lock:
                for contact_id, row in contacts.items():
                    self._contacts.setdefault(contact_id, row)
                self._decisions[:0] = decisions
                self._events[:0] = events
            self.healthy, self.last_error = False, f"{type(exc).__name__}: {exc}"[:500]
            log.error("writer.flush_failed", error=self.last_error, pending=self.pending)
            return False

    # Rows go to the driver's executemany as tuples: SQLAlchemy's per-row parameter processing
    # cost ~18 µs a row, on the same GIL as the route hot path; this costs a few.
    def _prepare(self) -> None:
        dialect = self._engine.dialect
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        contact_columns = [c.name for c in ContactRow.__table__.columns]  # type: ignore[attr-defined]
        keep = {"contact_id", "created_at", "first_decision", "request", "request_hash"}
        # A contact id used again after the idempotency window is a new contact (a later
        # created_at): then every column is replaced, the kept ones too.
        updates = ", ".join(
            f"{c} = CASE WHEN contacts.created_at <> excluded.created_at "
            f"THEN excluded.{c} ELSE contacts.{c} END"
            if c in keep
            else f"{c} = excluded.{c}"
            for c in contact_columns
            if c != "contact_id"
        )
        self._contact_sql = (
            f"INSERT INTO contacts ({', '.join(contact_columns)}) "
            f"VALUES ({', '.join([mark] * len(contact_columns))}) "
            f"ON CONFLICT (contact_id) DO UPDATE SET {updates} "
            # Several replicas write one contact's changes in their own batches: the newest
            # change wins whichever batch commits last.
            "WHERE contacts.created_at < excluded.created_at OR ("
            "contacts.created_at = excluded.created_at AND contacts.revision <= excluded.revision)"
        )
        decision_columns = [c.name for c in DecisionRow.__table__.columns]  # type: ignore[attr-defined]
        self._decision_sql = (
            f"INSERT INTO decisions ({', '.join(decision_columns)}) "
            f"VALUES ({', '.join([mark] * len(decision_columns))}) "
            "ON CONFLICT (decision_id) DO NOTHING"
        )
        self._event_sql = (
            f"INSERT INTO outbox ({', '.join(_EVENT_COLUMNS)}) "
            f"VALUES ({', '.join([mark] * len(_EVENT_COLUMNS))})"
        )
        self._contact_columns = contact_columns
        self._decision_columns = decision_columns
        self._contact_json = {"request", "first_decision", "excluded_agents"}
        self._decision_json = {"explanation"}

    def _params(
        self, rows: Iterable[dict[str, Any]], convert: Callable[[dict[str, Any]], tuple[Any, ...]]
    ) -> list[tuple[Any, ...]]:
        """Rows as driver parameters; a row that cannot be stored is logged and dropped.

        Retrying such a row would fail every later flush with it, stopping all writes.
        """
        params = []
        for row in rows:
            try:
                params.append(convert(row))
            except (TypeError, ValueError) as exc:
                self.dropped_rows += 1
                log.error(
                    "writer.row_dropped",
                    error=str(exc)[:300],
                    contact_id=row.get("contact_id"),
                    decision_id=row.get("decision_id"),
                )
        return params

    def _contact_params(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(
            _json(row[c]) if c in self._contact_json else row[c] for c in self._contact_columns
        )

    def _event_params(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return (
            row["event_id"],
            row["type"],
            _json(row["payload"]),
            row["created_at"],
            row["fanned_out"],
        )

    def _decision_params(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(
            _json(row[c]) if c in self._decision_json else row[c] for c in self._decision_columns
        )


_EVENT_COLUMNS = ("event_id", "type", "payload", "created_at", "fanned_out")


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()
