"""Passes as stored and as the API shows them, and the pass and fast-lane quote models."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from service.models import Identifier
from service.problems import InvalidInput
from sla.guard import PassKind

Currency = Annotated[StrictStr, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")]
MinorUnits = Annotated[StrictInt, Field(ge=0, le=10**12, description="integer minor units")]
# Unix seconds between 2001 and 2286: a time in milliseconds, or a typo, is refused.
Timestamp = Annotated[
    float,
    Field(strict=True, ge=1e9, le=1e10, allow_inf_nan=False, description="unix seconds"),
]
PassStatus = Literal["active", "consumed", "cancelled", "refunded", "expired"]
# Free text a billing system sends; NUL is refused because PostgreSQL text cannot store it.
NO_NUL = r"^[^\x00]*$"
_PASS_ID = re.compile(r"pass_[0-9a-f]{1,59}")


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PassCreate(_In):
    """A pass a billing system sells to a customer."""

    customer_id: Identifier
    kind: PassKind
    price_amount: MinorUnits
    currency: Currency
    valid_from: Timestamp | None = Field(default=None, description="default: now")
    valid_until: Timestamp | None = Field(
        default=None,
        description="required for a subscription; a single-incident pass defaults to the "
        "rules' fast_lane.single_incident_valid_days after valid_from",
    )
    external_ref: (
        Annotated[StrictStr, Field(min_length=1, max_length=200, pattern=NO_NUL)] | None
    ) = Field(default=None, description="the billing system's own order or invoice reference")


class RefundCreate(_In):
    """Money given back on a pass (full or partial)."""

    amount: Annotated[StrictInt, Field(ge=1, le=10**12, description="integer minor units")]
    currency: Currency
    reason: Annotated[StrictStr, Field(min_length=1, max_length=500, pattern=NO_NUL)]


class RefundOut(BaseModel):
    """One refund of (part of) a pass."""

    refund_id: str
    pass_id: str
    amount: int
    currency: str
    reason: str
    automatic: bool = Field(description="true for the refund-on-breach policy's own refunds")
    created_at: float


class PassOut(BaseModel):
    """A pass, its money and whether it grants the fast lane at the time of the response.

    `status` is the pass's state at that time: `active`; `consumed` (a single-incident pass
    whose contact was answered); `cancelled`; `refunded` (fully refunded before use); or
    `expired` (past valid_until without being used or cancelled).
    """

    pass_id: str
    customer_id: str
    kind: PassKind
    status: PassStatus
    grants_fast_lane: bool
    valid_from: float
    valid_until: float
    price_amount: int
    currency: str
    refunded_amount: int
    refundable_amount: int
    contact_id: str | None = Field(description="the contact that used a single-incident pass")
    consumed_at: float | None
    cancelled_at: float | None
    external_ref: str | None
    created_at: float
    updated_at: float
    refunds: list[RefundOut]


class RefundResult(BaseModel):
    """A new refund and the pass after it."""

    refund: RefundOut
    pass_: PassOut = Field(alias="pass")

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class PassPage(BaseModel):
    """A page of a customer's passes, oldest first."""

    items: list[PassOut]
    next_cursor: str | None = Field(description="pass it as `cursor` for the next page")


class TierQuote(BaseModel):
    """One tier's prediction in an interval."""

    mean_wait_seconds: float | None = Field(description="null when the tier is overloaded")
    service_level: float | None = Field(
        description="share answered within answer_seconds; null without an SLA on the channel"
    )
    answer_seconds: float | None


class StandardTierQuote(TierQuote):
    """The standard tier's prediction, beside its wait if there were no fast lane."""

    mean_wait_without_fast_lane_seconds: float | None
    wait_growth: float | None = Field(
        description="standard wait ÷ its no-fast-lane wait − 1 (the guard keeps it ≤ ε)"
    )


class SellablePasses(BaseModel):
    """Passes of each kind that still fit; null when such a pass brings no demand here."""

    single_incident: int | None
    subscription: int | None


class IntervalQuote(BaseModel):
    """One plan interval in the window: staffing, forecast, both tiers and the headroom."""

    start: float
    end: float
    weekday: str
    local_start: str
    local_end: str
    agents: int
    handle_seconds: float
    contacts_per_hour: float = Field(description="the standard tier's forecast")
    open: bool = Field(description="staffed with a forecast: fast-lane contacts arrive now")
    stable: bool
    fast_lane_contacts_per_hour: float = Field(description="demand of the passes sold")
    fast_lane: TierQuote
    standard: StandardTierQuote
    max_fast_lane_contacts_per_hour: float | None = Field(
        description="the most the fast lane may take while the standard wait grows ≤ ε"
    )
    headroom_contacts_per_hour: float | None
    sellable_passes: SellablePasses | None
    sold_out: bool


class WindowSummary(BaseModel):
    """The whole window, contact-weighted over the intervals' overlap with it."""

    open_hours: float
    standard_contacts: float
    fast_lane_contacts: float
    stable: bool
    fast_lane: TierQuote
    standard: StandardTierQuote
    headroom_contacts_per_hour: float | None = Field(
        description="the smallest headroom of any open interval"
    )
    sellable_passes: SellablePasses | None = Field(
        description="passes of each kind that fit every open interval of the window"
    )
    sold_out: bool
    tightest_interval_start: float | None


class PassRatesOut(BaseModel):
    """The expected fast-lane contacts per pass that turn sales into demand."""

    single_incident_contacts: float
    single_incident_valid_days: int
    subscription_contacts_per_day: float


class QuoteOut(BaseModel):
    """What the fast lane can promise on a channel in a window, and how much is left to sell."""

    channel: str
    start: float = Field(alias="from")
    end: float = Field(alias="to")
    timezone: str
    planned: bool = Field(description="false: no capacity plan, the guard cannot judge")
    guard: bool = Field(description="whether POST /v1/passes refuses passes once sold out")
    epsilon: float
    note: str | None
    channel_share: float = Field(description="share of pass holders' contacts on this channel")
    fast_lane_contacts_per_hour_per_pass_contact_per_day: float
    expected: PassRatesOut
    active_passes: dict[PassKind, int]
    intervals: list[IntervalQuote]
    summary: WindowSummary | None

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


@dataclass(frozen=True, slots=True)
class PassView:
    """A pass as stored (a snapshot; changes replace it)."""

    pass_id: str
    customer_id: str
    kind: PassKind
    status: str
    valid_from: float
    valid_until: float
    price_amount: int
    currency: str
    refunded_amount: int
    contact_id: str | None
    consumed_at: float | None
    cancelled_at: float | None
    external_ref: str | None
    created_at: float
    updated_at: float

    @classmethod
    def from_row(cls, row: Any) -> PassView:
        """From a `passes` row."""
        return cls(**{name: getattr(row, name) for name in cls.__slots__})

    @property
    def fully_refunded(self) -> bool:
        """Every minor unit paid has been given back (a free pass never is)."""
        return self.price_amount > 0 and self.refunded_amount >= self.price_amount

    @property
    def may_grant(self) -> bool:
        """Not used, cancelled or refunded: grants the fast lane within its validity."""
        return self.status == "active" and not self.fully_refunded

    def grants(self, now: float) -> bool:
        """Whether it grants the fast lane at `now`."""
        return self.may_grant and self.valid_from <= now < self.valid_until

    def status_at(self, now: float) -> PassStatus:
        """The status a billing system sees at `now` (see PassOut)."""
        if self.status in ("consumed", "cancelled"):
            return "consumed" if self.status == "consumed" else "cancelled"
        if self.fully_refunded:
            return "refunded"
        return "expired" if now >= self.valid_until else "active"

    def public(self, refunds: Iterable[RefundOut], now: float) -> dict[str, Any]:
        """The API form (PassOut) as JSON-ready data."""
        return PassOut(
            pass_id=self.pass_id,
            customer_id=self.customer_id,
            kind=self.kind,
            status=self.status_at(now),
            grants_fast_lane=self.grants(now),
            valid_from=self.valid_from,
            valid_until=self.valid_until,
            price_amount=self.price_amount,
            currency=self.currency,
            refunded_amount=self.refunded_amount,
            refundable_amount=max(self.price_amount - self.refunded_amount, 0),
            contact_id=self.contact_id,
            consumed_at=self.consumed_at,
            cancelled_at=self.cancelled_at,
            external_ref=self.external_ref,
            created_at=self.created_at,
            updated_at=self.updated_at,
            refunds=list(refunds),
        ).model_dump(mode="json")


def refund_out(row: Any) -> RefundOut:
    """A `pass_refunds` row in its API form."""
    return RefundOut(
        refund_id=row.refund_id,
        pass_id=row.pass_id,
        amount=row.amount,
        currency=row.currency,
        reason=row.reason,
        automatic=bool(row.automatic),
        created_at=row.created_at,
    )


def encode_cursor(view: PassView) -> str:
    """An opaque cursor that resumes a listing after `view`."""
    raw = orjson.dumps([view.created_at, view.pass_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """(created_at, pass_id) of a cursor; InvalidInput if this service did not issue it."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, pass_id = orjson.loads(raw)
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise InvalidInput("cursor: not a cursor this service issued") from None
    if (
        isinstance(created_at, bool)
        or not isinstance(created_at, int | float)
        or not isinstance(pass_id, str)
        or not _PASS_ID.fullmatch(pass_id)
    ):
        raise InvalidInput("cursor: not a cursor this service issued")
    return float(created_at), pass_id
