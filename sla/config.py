"""The fast-lane and SLA sections of the rules document, as pydantic models.

They sit next to the routing rules (one YAML document, versioned and hot-reloaded with them):
the tiers and their SLAs, the protections of the standard tier, the sales guard and the costs
of special handling, the appointment calendar and the staffing plan the quote works from.
Every section has defaults, so a rules document without them is valid and runs one tier.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

Tier = Literal["standard", "fast_lane"]
TIERS: tuple[Tier, ...] = ("standard", "fast_lane")

Seconds = Annotated[StrictInt, Field(ge=1, le=7 * 24 * 3600)]
Share = Annotated[StrictFloat | StrictInt, Field(ge=0, le=1)]
Percent = Annotated[StrictFloat | StrictInt, Field(gt=0, le=100)]
MinorUnits = Annotated[StrictInt, Field(ge=0, le=10**12)]
ClockTime = Annotated[StrictStr, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$")]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServiceLevel(_Strict):
    """Answer `target_percent` % of contacts within `answer_seconds`."""

    answer_seconds: Seconds
    target_percent: Percent


class TierSettings(_Strict):
    """One tier: what customers see it called, and its SLA per channel."""

    display_name: StrictStr = Field(min_length=1, max_length=60)
    sla: dict[StrictStr, ServiceLevel] = Field(
        default_factory=dict, description="channel -> service level; absent channels: no SLA"
    )


def _standard() -> TierSettings:
    return TierSettings(display_name="Standard")


def _fast_lane() -> TierSettings:
    return TierSettings(display_name="Fast lane")


class Protection(_Strict):
    """How dispatch protects the standard tier from a busy fast lane.

    Both are work-conserving: they decide who goes first, never leave an agent idle.
    """

    max_fast_lane_share: Share = Field(
        default=0.5,
        description="once the fast lane has taken this share of a channel's assignments over "
        "the window, waiting standard contacts go first (1: no cap)",
    )
    share_window_seconds: Seconds = Field(default=900)
    standard_max_wait_seconds: Seconds | None = Field(
        default=1800,
        description="a standard contact that has waited this long goes ahead of the fast lane "
        "(null: no starvation guard)",
    )


class Tiers(_Strict):
    """The two tiers and the standard tier's protections."""

    standard: TierSettings = Field(default_factory=_standard)
    fast_lane: TierSettings = Field(default_factory=_fast_lane)
    protection: Protection = Field(default_factory=Protection)


class PassRates(_Strict):
    """Expected fast-lane contacts per pass, which the sales guard turns into demand."""

    single_incident_contacts: Annotated[StrictFloat | StrictInt, Field(ge=0, le=100)] = Field(
        default=1, description="contacts a single-incident pass brings over its validity"
    )
    subscription_contacts_per_day: Annotated[StrictFloat | StrictInt, Field(ge=0, le=100)] = Field(
        default=0.05, description="contacts a subscription brings per day"
    )


class FastLaneSales(_Strict):
    """Selling passes: the guard, refunds and the cost of special handling."""

    guard: StrictBool = Field(
        default=True, description="refuse passes the fast lane could not serve within epsilon"
    )
    epsilon: Annotated[StrictFloat | StrictInt, Field(gt=0, le=10)] = Field(
        default=0.10,
        description="the standard tier's mean wait may grow at most this share over its "
        "no-fast-lane value",
    )
    guard_horizon_days: Annotated[StrictInt, Field(ge=1, le=366)] = 7
    single_incident_valid_days: Annotated[StrictInt, Field(ge=1, le=3660)] = 90
    expected: PassRates = Field(default_factory=PassRates)
    refund_on_breach: StrictBool = Field(
        default=False,
        description="refund a consumed pass automatically when its contact missed the "
        "fast-lane SLA",
    )
    cost_per_contact: MinorUnits = Field(
        default=0, description="special-handling cost of one fast-lane contact (minor units)"
    )
    cost_per_reorder: MinorUnits = Field(
        default=0, description="cost of one moved appointment (minor units)"
    )
    currency: StrictStr = Field(default="EUR", pattern=r"^[A-Z]{3}$")


class OpenHours(_Strict):
    """Opening hours of some weekdays, with the agents scheduled then."""

    days: list[Weekday] = Field(min_length=1)
    start: ClockTime
    end: ClockTime
    agents: Annotated[StrictInt, Field(ge=0, le=100_000)]


class Calendar(_Strict):
    """Appointment and callback slots, and the fast lane's share of them."""

    timezone: StrictStr = "UTC"
    slot_minutes: Annotated[StrictInt, Field(ge=5, le=480)] = 30
    hours: list[OpenHours] = Field(default_factory=list, max_length=100)
    horizon_days: Annotated[StrictInt, Field(ge=1, le=366)] = 28
    reserved_share: Share = Field(
        default=0.10, description="share of each slot's capacity kept for the fast lane"
    )
    release_before_minutes: Annotated[StrictInt, Field(ge=0, le=7 * 24 * 60)] = Field(
        default=120, description="unsold reserved capacity goes to everybody this long before"
    )
    fast_lane_within_minutes: Annotated[StrictInt, Field(ge=1, le=30 * 24 * 60)] = Field(
        default=24 * 60,
        description="a fast-lane booking must get a slot starting within this time of its "
        "not-before; otherwise standard appointments are moved to make room",
    )
    max_delay_minutes: Annotated[StrictInt, Field(ge=0, le=30 * 24 * 60)] = Field(
        default=24 * 60, description="the most a standard appointment may be moved later"
    )


class PlanInterval(_Strict):
    """The forecast and staffing of some weekday hours on one channel."""

    days: list[Weekday] = Field(min_length=1)
    start: ClockTime
    end: ClockTime
    contacts_per_hour: Annotated[StrictFloat | StrictInt, Field(ge=0, le=10**6)]
    agents: Annotated[StrictInt, Field(ge=0, le=100_000)]


class ChannelPlan(_Strict):
    """A channel's mean handle time and its weekly forecast and staffing."""

    handle_seconds: Annotated[StrictFloat | StrictInt, Field(gt=0, le=86400)]
    intervals: list[PlanInterval] = Field(default_factory=list, max_length=500)


class CapacityPlan(_Strict):
    """Forecast and staffing per channel, for the quote and the sales guard."""

    timezone: StrictStr = "UTC"
    channels: dict[StrictStr, ChannelPlan] = Field(default_factory=dict)
