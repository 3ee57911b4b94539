"""Webhook endpoints (admin): register, list, deactivate, rotate secrets, inspect deliveries."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from service.api.deps import RulesAdmin, SingleValuedQuery, WebhooksDep
from service.models import problems
from service.webhook_models import (
    DeliveryStatus,
    WebhookDeliveryList,
    WebhookDeliveryOut,
    WebhookEndpointIn,
    WebhookEndpointList,
    WebhookEndpointOut,
    WebhookEndpointSecretOut,
)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

_ID = {"min_length": 1, "max_length": 64, "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$"}
EndpointId = Annotated[str, Path(**_ID)]
DeliveryId = Annotated[str, Path(**_ID)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]


@router.post(
    "/endpoints",
    response_model=WebhookEndpointSecretOut,
    status_code=201,
    responses=problems(400, 401, 403, 413, 422, 503),
)
async def register_endpoint(
    body: WebhookEndpointIn, admin: RulesAdmin, webhooks: WebhooksDep, response: Response
) -> WebhookEndpointSecretOut:
    """Register a URL for events (all types, or those listed); the answer holds its secret."""
    endpoint = await webhooks.register(body)
    response.headers["Location"] = f"{router.prefix}/endpoints/{endpoint.endpoint_id}"
    return endpoint


@router.get(
    "/endpoints", response_model=WebhookEndpointList, responses=problems(401, 403, 422, 503)
)
async def list_endpoints(
    admin: RulesAdmin,
    webhooks: WebhooksDep,
    single_values: SingleValuedQuery,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> WebhookEndpointList:
    """Registered endpoints, active and deactivated, oldest first (secrets are not shown)."""
    items, total = await webhooks.endpoints(offset=offset, limit=limit)
    return WebhookEndpointList(items=items, total=total, offset=offset, limit=limit)


@router.get(
    "/endpoints/{endpoint_id}",
    response_model=WebhookEndpointOut,
    responses=problems(401, 403, 404, 422, 503),
)
async def get_endpoint(
    endpoint_id: EndpointId, admin: RulesAdmin, webhooks: WebhooksDep
) -> WebhookEndpointOut:
    """One endpoint (its secret is not shown)."""
    return await webhooks.endpoint(endpoint_id)


@router.delete(
    "/endpoints/{endpoint_id}",
    status_code=204,
    response_class=Response,
    responses=problems(401, 403, 404, 422, 503),
)
async def deactivate_endpoint(
    endpoint_id: EndpointId, admin: RulesAdmin, webhooks: WebhooksDep
) -> Response:
    """Deactivate an endpoint: no new deliveries, and its pending ones are cancelled."""
    await webhooks.deactivate(endpoint_id)
    return Response(status_code=204)


@router.post(
    "/endpoints/{endpoint_id}/rotate-secret",
    response_model=WebhookEndpointSecretOut,
    responses=problems(401, 403, 404, 409, 422, 503),
)
async def rotate_endpoint_secret(
    endpoint_id: EndpointId, admin: RulesAdmin, webhooks: WebhooksDep
) -> WebhookEndpointSecretOut:
    """Give an active endpoint a new signing secret; every later attempt is signed with it."""
    return await webhooks.rotate_secret(endpoint_id)


@router.get(
    "/endpoints/{endpoint_id}/deliveries",
    response_model=WebhookDeliveryList,
    responses=problems(401, 403, 404, 422, 503),
)
async def list_deliveries(
    endpoint_id: EndpointId,
    admin: RulesAdmin,
    webhooks: WebhooksDep,
    single_values: SingleValuedQuery,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    status: DeliveryStatus | None = None,
) -> WebhookDeliveryList:
    """An endpoint's deliveries, newest first, each with every attempt and its outcome."""
    items, total = await webhooks.deliveries(endpoint_id, offset=offset, limit=limit, status=status)
    return WebhookDeliveryList(items=items, total=total, offset=offset, limit=limit)


@router.post(
    "/deliveries/{delivery_id}/retry",
    response_model=WebhookDeliveryOut,
    status_code=202,
    responses=problems(401, 403, 404, 409, 422, 503),
)
async def retry_delivery(
    delivery_id: DeliveryId, admin: RulesAdmin, webhooks: WebhooksDep
) -> WebhookDeliveryOut:
    """Attempt a failed delivery again, now; it is pending until that attempt is recorded."""
    return await webhooks.retry(delivery_id)
