"""Webhook delivery of outbox events (Standard Webhooks); endpoints are in `events.endpoints`.

Delivery is a cycle (`WebhookDeliverer.run`; `deliver_due` is one cycle waited to the end):
1. record: the outcomes of finished attempts are stored together in one transaction. A 2xx
   answer delivers; anything else is retried after backoff·2^(n-1) seconds (at most an hour,
   plus up to 10 % jitter) until `webhook_max_attempts` attempts failed;
2. fan out: outbox events not yet fanned out become one pending delivery per active endpoint
   that subscribes to their type, in the transaction that marks the events fanned out;
3. claim: as many due deliveries as there are free sending slots are leased by pushing
   `next_attempt_at` past the longest attempt, in one UPDATE … RETURNING (its CTE takes
   FOR UPDATE SKIP LOCKED on PostgreSQL), so replicas sharing a database never make the same
   attempt twice;
4. send: each leased delivery is POSTed at once through one shared httpx client, with the
   `webhook-id`, `webhook-timestamp` and `webhook-signature` headers computed over the exact
   body bytes sent. A finished attempt wakes the cycle, so a slow receiver holds one slot,
   not the whole batch.

What a crash or restart can do: delivery is at least once, never lost. An event is in the
outbox exactly when its change committed, and its deliveries are created in the transaction
that marks it fanned out. An attempt cut off before it was recorded is made again once its
lease runs out (at a graceful stop, finished attempts are recorded and the leases of cut-off
ones handed back at once). A receiver may therefore see an event twice; `webhook-id` is the
event id on every attempt, to deduplicate on.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import functools
import math
import random
import secrets
import time
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import orjson
import structlog
from sqlalchemy import CTE, Select, false, insert, select, true, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from standardwebhooks import Webhook

from service import clock
from service.ids import new_id
from service.settings import Settings
from service.storage.tables import (
    OutboxRow,
    WebhookAttemptRow,
    WebhookDeliveryRow,
    WebhookEndpointRow,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")

FAN_OUT_BATCH = 500  # outbox events turned into deliveries per cycle
CONCURRENCY = 16  # attempts in flight at once (the sending slots)
MAX_RETRY_DELAY = 3600.0
RETRY_JITTER = 0.1  # spreads the retries of one receiver's outage over 10 % of the delay
LEASE_MARGIN = 30.0  # database round trips around the sends, and clock skew between replicas
USER_AGENT = "skillroute-webhooks/0.1"
MAX_ANSWER_BYTES = 64 * 1024

_OUTBOX = OutboxRow.__table__  # type: ignore[attr-defined]
_ENDPOINTS = WebhookEndpointRow.__table__  # type: ignore[attr-defined]
_DELIVERIES = WebhookDeliveryRow.__table__  # type: ignore[attr-defined]
_ATTEMPTS = WebhookAttemptRow.__table__  # type: ignore[attr-defined]
_ERROR_LENGTH = 500  # the attempts table's `error` column


def retry_delay(attempt: int, *, base: float, jitter: float) -> float:
    """Seconds to wait after failed attempt `attempt` (1, 2, …): base·2^(attempt-1), ≤ 1 h.

    `jitter` (0 to 1) stretches the delay by up to 10 %, so that the deliveries an outage held
    back do not all return to the receiver in the same second.
    """
    # The exponent is capped so that manual retries far past the limit cannot overflow a float.
    delay = min(base * 2.0 ** min(attempt - 1, 32), MAX_RETRY_DELAY)
    return delay * (1.0 + RETRY_JITTER * jitter)


def new_secret() -> str:
    """A fresh Standard Webhooks signing secret: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def signed_headers(secret: str, *, event_id: str, body: bytes, sent_at: float) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt, signed over exactly `body`."""
    timestamp = math.floor(sent_at)
    signature = Webhook(secret).sign(
        event_id, dt.datetime.fromtimestamp(timestamp, dt.UTC), body.decode("utf-8")
    )
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


@dataclass(frozen=True, slots=True)
class _Claimed:
    """A leased delivery with everything its next attempt needs."""

    delivery_id: str
    attempts: int
    event_id: str
    payload: dict[str, Any]
    url: str
    secret: str


@dataclass(frozen=True, slots=True)
class _Attempt:
    """What one attempt came back with."""

    status_code: int | None
    error: str | None
    duration_ms: float

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookDeliverer:
    """Delivers outbox events to registered webhook endpoints, and keeps that registry."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self._engine = engine
        self._settings = settings
        self._timeout = settings.webhook_timeout_seconds
        self._lease = self._timeout + LEASE_MARGIN
        self._client: httpx.AsyncClient | None = None
        self._wake = asyncio.Event()
        self._closed = False
        self._sending: dict[str, asyncio.Task[None]] = {}  # delivery id -> its attempt
        self._finished: list[tuple[_Claimed, _Attempt, float]] = []  # not yet recorded
        self._leases: dict[str, float] = {}  # delivery id -> lease, until recorded

    # ---- delivery ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Deliver until closed: a cycle when an attempt ends, when woken, or every poll."""
        poll = self._settings.webhook_poll_seconds
        while not self._closed:
            try:
                fanned, claimed = await self._cycle()
            except Exception:
                # A database outage (or one bad cycle) must not end delivery for good.
                log.exception("webhooks.cycle_failed", retry_in=poll)
                fanned = claimed = 0
            backlog = fanned >= FAN_OUT_BATCH or (claimed and len(self._sending) < CONCURRENCY)
            if backlog:
                continue  # more may be waiting: go on without sleeping
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), poll)
            self._wake.clear()

    async def deliver_due(self) -> int:
        """One cycle waited to its end (attempts made and recorded); how many it attempted."""
        _, claimed = await self._cycle()
        if self._sending:
            await asyncio.wait(list(self._sending.values()))
        await self._record_finished()
        return claimed

    def wake(self) -> None:
        """Make the next cycle start now (a delivery became due)."""
        self._wake.set()

    async def close(self) -> None:
        """Stop: record finished attempts, hand back cut-off ones' leases, close the client."""
        self._closed = True
        self._wake.set()
        cut_off = list(self._sending.values())
        for task in cut_off:
            task.cancel()
        await asyncio.gather(*cut_off, return_exceptions=True)
        try:
            await self._record_finished()
            if self._leases:
                await asyncio.to_thread(self._release, self._leases, clock.now())
                self._leases = {}
        except OperationalError as exc:
            # The leases then simply run out and those attempts are made again later.
            log.warning("webhooks.stop_unrecorded", deliveries=len(self._leases), error=str(exc))
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _cycle(self) -> tuple[int, int]:
        await self._record_finished()
        now = clock.now()
        fanned = await asyncio.to_thread(self._fan_out, now)
        free = CONCURRENCY - len(self._sending)
        if free <= 0 or self._closed:
            return fanned, 0
        claimed, lease_until = await asyncio.to_thread(self._claim, now, free)
        client = self._http()
        for delivery in claimed:
            self._leases[delivery.delivery_id] = lease_until
            task = asyncio.create_task(self._attempt(client, delivery))
            self._sending[delivery.delivery_id] = task
            task.add_done_callback(functools.partial(self._forget, delivery.delivery_id))
        return fanned, len(claimed)

    def _forget(self, delivery_id: str, _attempt: asyncio.Task[None]) -> None:
        self._sending.pop(delivery_id, None)

    async def _attempt(self, client: httpx.AsyncClient, delivery: _Claimed) -> None:
        outcome = await self._send(client, delivery)
        self._finished.append((delivery, outcome, clock.now()))
        self._wake.set()

    async def _record_finished(self) -> None:
        if not self._finished:
            return
        finished, self._finished = self._finished, []
        try:
            await asyncio.to_thread(self._record, finished)
        except Exception:
            # Kept for the next cycle: an attempt made is recorded once the database is back.
            # (Not on cancellation: the thread then still commits them.)
            self._finished[:0] = finished
            raise
        for delivery, _, _ in finished:
            self._leases.pop(delivery.delivery_id, None)

    def _http(self) -> httpx.AsyncClient:
        # Created on first use, inside the event loop that will use it.
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout,
                follow_redirects=False,  # a redirect is not a delivery (Standard Webhooks)
                limits=httpx.Limits(max_connections=CONCURRENCY),
            )
        return self._client

    async def _send(self, client: httpx.AsyncClient, delivery: _Claimed) -> _Attempt:
        body = orjson.dumps(delivery.payload)
        # The real wall clock, not `clock.now()`: receivers compare the timestamp with their own
        # clock and refuse it beyond five minutes either way.
        headers = signed_headers(
            delivery.secret, event_id=delivery.event_id, body=body, sent_at=time.time()
        )
        started = time.perf_counter()
        try:
            # httpx's timeout is per network operation; this bounds the whole exchange.
            async with asyncio.timeout(self._timeout):
                request = client.build_request("POST", delivery.url, content=body, headers=headers)
                response = await client.send(request, stream=True)
                try:
                    await _drain(response)
                finally:
                    await response.aclose()
        except TimeoutError:
            return _Attempt(None, f"no answer within {self._timeout:g} s", _elapsed_ms(started))
        except Exception as exc:
            # Whatever went wrong with this receiver is its failed attempt, nobody else's.
            return _Attempt(None, _describe(exc), _elapsed_ms(started))
        status = response.status_code
        refused = None if 200 <= status < 300 else f"HTTP {status}"
        return _Attempt(status, refused, _elapsed_ms(started))

    def _fan_out(self, now: float) -> int:
        pick = _locked_batch(
            select(_OUTBOX.c.seq)
            .where(_OUTBOX.c.fanned_out == false())
            .order_by(_OUTBOX.c.seq)
            .limit(FAN_OUT_BATCH),
            "new_events",
        )
        with self._engine.begin() as connection:
            events = connection.execute(
                update(_OUTBOX)
                .where(_OUTBOX.c.seq.in_(select(pick.c.seq)), _OUTBOX.c.fanned_out == false())
                .values(fanned_out=True)
                .returning(_OUTBOX.c.seq, _OUTBOX.c.type)
            ).all()
            if not events:
                return 0
            endpoints = connection.execute(
                select(_ENDPOINTS.c.endpoint_id, _ENDPOINTS.c.event_types)
                .where(_ENDPOINTS.c.active == true())
                .order_by(_ENDPOINTS.c.created_at, _ENDPOINTS.c.endpoint_id)
            ).all()
            deliveries = [
                {
                    "delivery_id": "dlv_" + new_id(),
                    "event_seq": seq,
                    "endpoint_id": endpoint_id,
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
                for seq, event_type in sorted(events)
                for endpoint_id, event_types in endpoints
                if not event_types or event_type in event_types
            ]
            if deliveries:
                connection.execute(insert(_DELIVERIES), deliveries)
        return len(events)

    def _claim(self, now: float, limit: int) -> tuple[list[_Claimed], float]:
        lease_until = now + self._lease
        due = _locked_batch(
            select(_DELIVERIES.c.delivery_id)
            .where(_DELIVERIES.c.status == "pending", _DELIVERIES.c.next_attempt_at <= now)
            .order_by(_DELIVERIES.c.next_attempt_at)
            .limit(limit),
            "due",
        )
        with self._engine.begin() as connection:
            leased = (
                connection.execute(
                    update(_DELIVERIES)
                    .where(
                        _DELIVERIES.c.delivery_id.in_(select(due.c.delivery_id)),
                        _DELIVERIES.c.status == "pending",
                        _DELIVERIES.c.next_attempt_at <= now,
                    )
                    .values(next_attempt_at=lease_until)
                    .returning(_DELIVERIES.c.delivery_id)
                )
                .scalars()
                .all()
            )
            if not leased:
                return [], lease_until
            rows = connection.execute(
                select(
                    _DELIVERIES.c.delivery_id,
                    _DELIVERIES.c.attempts,
                    _OUTBOX.c.event_id,
                    _OUTBOX.c.payload,
                    _ENDPOINTS.c.url,
                    _ENDPOINTS.c.secret,
                )
                .select_from(_DELIVERIES)
                .join(_OUTBOX, _OUTBOX.c.seq == _DELIVERIES.c.event_seq)
                .join(_ENDPOINTS, _ENDPOINTS.c.endpoint_id == _DELIVERIES.c.endpoint_id)
                .where(_DELIVERIES.c.delivery_id.in_(leased))
                .order_by(_DELIVERIES.c.event_seq, _DELIVERIES.c.delivery_id)
            ).all()
        return [_Claimed(*row) for row in rows], lease_until

    def _record(self, finished: list[tuple[_Claimed, _Attempt, float]]) -> None:
        with self._engine.begin() as connection:
            for delivery, outcome, at in finished:
                self._record_one(connection, delivery, outcome, at)

    def _record_one(
        self, connection: Connection, delivery: _Claimed, outcome: _Attempt, at: float
    ) -> None:
        number = delivery.attempts + 1
        status: dict[str, Any]
        if outcome.delivered:
            status = {"status": "delivered", "delivered_at": at}
        elif number >= self._settings.webhook_max_attempts:
            status = {"status": "failed"}
            log.warning(
                "webhooks.delivery_failed",
                delivery_id=delivery.delivery_id,
                event_id=delivery.event_id,
                attempts=number,
                error=outcome.error,
            )
        else:
            delay = retry_delay(
                number, base=self._settings.webhook_backoff_seconds, jitter=random.random()
            )
            status = {"next_attempt_at": at + delay}
        where = _DELIVERIES.c.delivery_id == delivery.delivery_id
        connection.execute(
            insert(_ATTEMPTS),
            [
                {
                    "delivery_id": delivery.delivery_id,
                    "attempt": number,
                    "at": at,
                    "status_code": outcome.status_code,
                    "error": outcome.error,
                    "duration_ms": round(outcome.duration_ms, 3),
                }
            ],
        )
        connection.execute(
            update(_DELIVERIES)
            .where(where)
            .values(attempts=number, last_status_code=outcome.status_code)
        )
        # Only a pending delivery moves on: one whose endpoint was deactivated meanwhile stays
        # cancelled.
        connection.execute(
            update(_DELIVERIES).where(where, _DELIVERIES.c.status == "pending").values(status)
        )

    def _release(self, leases: dict[str, float], now: float) -> None:
        with self._engine.begin() as connection:
            for delivery_id, lease_until in leases.items():
                connection.execute(
                    update(_DELIVERIES)
                    .where(
                        _DELIVERIES.c.delivery_id == delivery_id,
                        _DELIVERIES.c.status == "pending",
                        _DELIVERIES.c.next_attempt_at == lease_until,
                    )
                    .values(next_attempt_at=now)
                )


def _locked_batch(batch: Select[Any], name: str) -> CTE:
    """`batch` as a CTE whose rows a concurrent replica skips instead of waiting for.

    MATERIALIZED on PostgreSQL: as an inlined `IN (subquery)` the planner may run the subquery
    once per candidate row, and with SKIP LOCKED each run can pick other rows, so far more than
    LIMIT rows were taken. SQLite ignores FOR UPDATE; its single writer serialises the claim.
    """
    locked = batch.with_for_update(skip_locked=True).cte(name)
    return locked.prefix_with("MATERIALIZED", dialect="postgresql")


async def _drain(response: httpx.Response) -> None:
    """Read a short answer to its end, so the connection is kept for the next attempt.

    Only the status counts: an answer longer than `MAX_ANSWER_BYTES` is cut off (and its
    connection closed) rather than held in memory.
    """
    read = 0
    async for chunk in response.aiter_raw():
        read += len(chunk)
        if read > MAX_ANSWER_BYTES:
            return


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _describe(exc: Exception) -> str:
    text = str(exc)
    message = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return message[:_ERROR_LENGTH]
