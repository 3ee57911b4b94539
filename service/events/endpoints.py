"""The registry of webhook endpoints (admin): register, list, deactivate, rotate, retry.

Delivery itself is `service.events.delivery`; a retried delivery wakes it at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from sqlalchemy import Select, func, insert, select, true, update
from sqlalchemy.engine import Connection, Engine

from service import clock
from service.events.delivery import WebhookDeliverer, new_secret
from service.ids import new_id
from service.problems import Conflict, NotFound
from service.storage.tables import (
    OutboxRow,
    WebhookAttemptRow,
    WebhookDeliveryRow,
    WebhookEndpointRow,
)
from service.webhook_models import (
    DeliveryStatus,
    WebhookAttemptOut,
    WebhookDeliveryOut,
    WebhookEndpointIn,
    WebhookEndpointOut,
    WebhookEndpointSecretOut,
)

log = structlog.get_logger(__name__)


_OUTBOX = OutboxRow.__table__  # type: ignore[attr-defined]
_ENDPOINTS = WebhookEndpointRow.__table__  # type: ignore[attr-defined]
_DELIVERIES = WebhookDeliveryRow.__table__  # type: ignore[attr-defined]
_ATTEMPTS = WebhookAttemptRow.__table__  # type: ignore[attr-defined]


class WebhookEndpoints:
    """Endpoints an admin registered, and their deliveries."""

    def __init__(self, engine: Engine, deliverer: WebhookDeliverer) -> None:
        self._engine = engine
        self._deliverer = deliverer

    async def register(self, endpoint: WebhookEndpointIn) -> WebhookEndpointSecretOut:
        """Register an endpoint; the answer carries its new signing secret."""
        row = {
            "endpoint_id": "ep_" + new_id(),
            "url": endpoint.url,
            "secret": new_secret(),
            "event_types": list(endpoint.event_types),
            "description": endpoint.description,
            "active": True,
            "created_at": clock.now(),
        }
        await asyncio.to_thread(self._insert_endpoint, row)
        return WebhookEndpointSecretOut.model_validate(row)

    async def endpoints(self, *, offset: int, limit: int) -> tuple[list[WebhookEndpointOut], int]:
        """A page of endpoints, oldest first, and how many there are."""
        return await asyncio.to_thread(self._endpoint_page, offset, limit)

    async def endpoint(self, endpoint_id: str) -> WebhookEndpointOut:
        """One endpoint (without its secret)."""
        return await asyncio.to_thread(self._endpoint, endpoint_id)

    async def deactivate(self, endpoint_id: str) -> None:
        """Stop sending to an endpoint: its pending deliveries are cancelled. Repeatable."""
        await asyncio.to_thread(self._deactivate, endpoint_id)

    async def rotate_secret(self, endpoint_id: str) -> WebhookEndpointSecretOut:
        """Replace an active endpoint's signing secret; attempts from now on use the new one."""
        return await asyncio.to_thread(self._rotate, endpoint_id, new_secret())

    async def deliveries(
        self, endpoint_id: str, *, offset: int, limit: int, status: DeliveryStatus | None
    ) -> tuple[list[WebhookDeliveryOut], int]:
        """A page of an endpoint's deliveries with their attempts, newest first, and the total."""
        return await asyncio.to_thread(self._delivery_page, endpoint_id, offset, limit, status)

    async def retry(self, delivery_id: str) -> WebhookDeliveryOut:
        """Make a failed delivery due again now; it gets one more attempt."""
        delivery = await asyncio.to_thread(self._retry, delivery_id, clock.now())
        self._deliverer.wake()
        return delivery

    def _insert_endpoint(self, row: dict[str, Any]) -> None:
        with self._engine.begin() as connection:
            connection.execute(insert(_ENDPOINTS), [row])

    def _endpoint_page(self, offset: int, limit: int) -> tuple[list[WebhookEndpointOut], int]:
        with self._engine.connect() as connection:
            total = connection.execute(select(func.count()).select_from(_ENDPOINTS)).scalar_one()
            rows = connection.execute(
                _endpoint_query()
                .order_by(_ENDPOINTS.c.created_at, _ENDPOINTS.c.endpoint_id)
                .offset(offset)
                .limit(limit)
            ).mappings()
            return [WebhookEndpointOut.model_validate(dict(row)) for row in rows], total

    def _endpoint(self, endpoint_id: str) -> WebhookEndpointOut:
        with self._engine.connect() as connection:
            return _existing_endpoint(connection, endpoint_id)

    def _deactivate(self, endpoint_id: str) -> None:
        with self._engine.begin() as connection:
            found = connection.execute(
                update(_ENDPOINTS)
                .where(_ENDPOINTS.c.endpoint_id == endpoint_id)
                .values(active=False)
            ).rowcount
            if not found:
                raise NotFound(f"webhook endpoint {endpoint_id} does not exist")
            connection.execute(
                update(_DELIVERIES)
                .where(_DELIVERIES.c.endpoint_id == endpoint_id, _DELIVERIES.c.status == "pending")
                .values(status="cancelled")
            )

    def _rotate(self, endpoint_id: str, secret: str) -> WebhookEndpointSecretOut:
        with self._engine.begin() as connection:
            endpoint = _existing_endpoint(connection, endpoint_id)
            if not endpoint.active:
                raise Conflict(f"webhook endpoint {endpoint_id} is deactivated")
            connection.execute(
                update(_ENDPOINTS)
                .where(_ENDPOINTS.c.endpoint_id == endpoint_id, _ENDPOINTS.c.active == true())
                .values(secret=secret)
            )
        return WebhookEndpointSecretOut(**endpoint.model_dump(), secret=secret)

    def _delivery_page(
        self, endpoint_id: str, offset: int, limit: int, status: DeliveryStatus | None
    ) -> tuple[list[WebhookDeliveryOut], int]:
        conditions = [_DELIVERIES.c.endpoint_id == endpoint_id]
        if status is not None:
            conditions.append(_DELIVERIES.c.status == status)
        with self._engine.connect() as connection:
            _existing_endpoint(connection, endpoint_id)
            total = connection.execute(
                select(func.count()).select_from(_DELIVERIES).where(*conditions)
            ).scalar_one()
            query = (
                _delivery_query()
                .where(*conditions)
                .order_by(
                    _DELIVERIES.c.created_at.desc(),
                    _DELIVERIES.c.event_seq.desc(),
                    _DELIVERIES.c.delivery_id.desc(),
                )
                .offset(offset)
                .limit(limit)
            )
            return _deliveries_out(connection, query), total

    def _retry(self, delivery_id: str, now: float) -> WebhookDeliveryOut:
        query = _delivery_query().where(_DELIVERIES.c.delivery_id == delivery_id)
        with self._engine.begin() as connection:
            found = connection.execute(
                select(_DELIVERIES.c.status, _ENDPOINTS.c.active)
                .join(_ENDPOINTS, _ENDPOINTS.c.endpoint_id == _DELIVERIES.c.endpoint_id)
                .where(_DELIVERIES.c.delivery_id == delivery_id)
            ).first()
            if found is None:
                raise NotFound(f"webhook delivery {delivery_id} does not exist")
            if not found.active:
                raise Conflict(f"the endpoint of delivery {delivery_id} is deactivated")
            # Conditional on `failed`: of two admins retrying at once, one wins.
            retried = connection.execute(
                update(_DELIVERIES)
                .where(_DELIVERIES.c.delivery_id == delivery_id, _DELIVERIES.c.status == "failed")
                .values(status="pending", next_attempt_at=now)
            ).rowcount
            if not retried:
                raise Conflict(
                    f"delivery {delivery_id} is {found.status}: only a failed one is retried"
                )
            return _deliveries_out(connection, query)[0]


def _endpoint_query() -> Select[Any]:
    columns = [c for c in _ENDPOINTS.c if c.name != "secret"]
    return select(*columns)


def _existing_endpoint(connection: Connection, endpoint_id: str) -> WebhookEndpointOut:
    row = (
        connection.execute(_endpoint_query().where(_ENDPOINTS.c.endpoint_id == endpoint_id))
        .mappings()
        .first()
    )
    if row is None:
        raise NotFound(f"webhook endpoint {endpoint_id} does not exist")
    return WebhookEndpointOut.model_validate(dict(row))


def _delivery_query() -> Select[Any]:
    return select(
        _DELIVERIES.c.delivery_id,
        _DELIVERIES.c.endpoint_id,
        _OUTBOX.c.event_id,
        _OUTBOX.c.type.label("event_type"),
        _DELIVERIES.c.status,
        _DELIVERIES.c.next_attempt_at,
        _DELIVERIES.c.last_status_code,
        _DELIVERIES.c.delivered_at,
        _DELIVERIES.c.created_at,
    ).join(_OUTBOX, _OUTBOX.c.seq == _DELIVERIES.c.event_seq)


def _deliveries_out(connection: Connection, query: Select[Any]) -> list[WebhookDeliveryOut]:
    rows = [dict(row) for row in connection.execute(query).mappings()]
    attempts: dict[str, list[WebhookAttemptOut]] = {row["delivery_id"]: [] for row in rows}
    if attempts:
        for attempt in connection.execute(
            select(_ATTEMPTS)
            .where(_ATTEMPTS.c.delivery_id.in_(list(attempts)))
            .order_by(_ATTEMPTS.c.delivery_id, _ATTEMPTS.c.attempt, _ATTEMPTS.c.attempt_id)
        ).mappings():
            attempts[attempt["delivery_id"]].append(WebhookAttemptOut.model_validate(attempt))
    out = []
    for row in rows:
        if row["status"] != "pending":
            row["next_attempt_at"] = None  # only meaningful while a delivery waits
        out.append(WebhookDeliveryOut(**row, attempts=attempts[row["delivery_id"]]))
    return out
