"""Request and response models of the webhook endpoint admin API."""

from __future__ import annotations

from typing import Annotated, Literal

import httpx
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr

from service.events.outbox import EVENT_TYPES, EventType

DeliveryStatus = Literal["pending", "delivered", "failed", "cancelled"]

MAX_URL_LENGTH = 2000


def _sendable_url(url: str) -> str:
    """Refuse a URL that httpx could not send to, so a bad address fails now, not at 3 a.m."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError("must be an http:// or https:// URL with a host name")
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise ValueError(f"port {parsed.port} is outside 1-65535")
    return url


# No `user:password@` in the authority: every admin who lists endpoints would see it, and the
# signature is what authenticates a delivery.
EndpointUrl = Annotated[
    StrictStr,
    Field(
        max_length=MAX_URL_LENGTH,
        pattern=r"^https?://[^\s/?#@]+(?:[/?#]\S*)?$",
        examples=["https://billing.example.com/hooks/skillroute"],
    ),
    AfterValidator(_sendable_url),
]


def _distinct(event_types: list[EventType]) -> list[EventType]:
    seen: set[str] = set()
    for event_type in event_types:
        if event_type in seen:
            raise ValueError(f"{event_type} is listed twice")
        seen.add(event_type)
    return event_types


class WebhookEndpointIn(BaseModel):
    """A URL to register for events; an empty `event_types` list means every event type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: EndpointUrl
    event_types: Annotated[
        list[EventType],
        Field(max_length=len(EVENT_TYPES), json_schema_extra={"uniqueItems": True}),
        AfterValidator(_distinct),
    ] = Field(default_factory=list)
    description: Annotated[StrictStr, Field(max_length=500)] = ""


class WebhookEndpointOut(BaseModel):
    """A registered endpoint (its signing secret is shown only on creation and rotation)."""

    endpoint_id: str
    url: str
    event_types: list[str] = Field(description="empty: every event type")
    description: str
    active: bool
    created_at: float = Field(description="unix seconds")


class WebhookEndpointSecretOut(WebhookEndpointOut):
    """A registered endpoint with its Standard Webhooks signing secret; store it now."""

    secret: str = Field(description="whsec_…: verify `webhook-signature` with it")


class WebhookEndpointList(BaseModel):
    """A page of registered endpoints, oldest first."""

    items: list[WebhookEndpointOut]
    total: int
    offset: int
    limit: int


class WebhookAttemptOut(BaseModel):
    """One attempt to deliver: what the receiver answered, or why it could not be reached."""

    attempt: int
    at: float = Field(description="unix seconds")
    status_code: int | None
    error: str | None
    duration_ms: float


class WebhookDeliveryOut(BaseModel):
    """One event to one endpoint, with every attempt made so far (oldest first)."""

    delivery_id: str
    endpoint_id: str
    event_id: str = Field(description="sent as `webhook-id`: receivers deduplicate on it")
    event_type: str
    status: DeliveryStatus = Field(
        description="cancelled: the endpoint was deactivated before delivery"
    )
    next_attempt_at: float | None = Field(description="unix seconds; set while pending")
    last_status_code: int | None
    delivered_at: float | None
    created_at: float
    attempts: list[WebhookAttemptOut]


class WebhookDeliveryList(BaseModel):
    """A page of one endpoint's deliveries, newest first."""

    items: list[WebhookDeliveryOut]
    total: int
    offset: int
    limit: int
