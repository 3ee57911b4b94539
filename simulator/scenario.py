"""The scenario document of a simulated day: demand, agents, handle times, patience, outcomes.

A scenario describes what happens to a contact center; the routing rules (a separate document)
describe how it routes. The same scenario run under two rule sets or two policies, with the
same seeds, shows what a change does. Times of day are "HH:MM" on the simulated day; rates are
contacts per hour.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)

from routing_rules.schema import Name
from sla.config import ClockTime

Positive = Annotated[StrictFloat | StrictInt, Field(gt=0, le=10**7)]
NonNegative = Annotated[StrictFloat | StrictInt, Field(ge=0, le=10**7)]
Probability = Annotated[StrictFloat | StrictInt, Field(ge=0, le=1)]
Hour = Annotated[StrictStr, Field(pattern=r"^([01]?[0-9]|2[0-3])$", description="hour, 0-23")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Distribution(_Strict):
    """A positive random duration: exponential, lognormal (with its coefficient of variation)
    or fixed."""

    distribution: Literal["exponential", "lognormal", "fixed"] = "exponential"
    mean_seconds: Positive
    cv: Annotated[StrictFloat | StrictInt, Field(gt=0, le=10)] = Field(
        default=1.0, description="standard deviation / mean (lognormal only)"
    )


class Stream(_Strict):
    """One kind of contact arriving: its facts, its share with a fast-lane pass, its rate."""

    name: Name
    channel: StrictStr
    segment: StrictStr
    inquiry_type: StrictStr
    journey_stage: StrictStr
    language: StrictStr
    attributes: dict[StrictStr, StrictStr | StrictInt | StrictFloat | bool] = Field(
        default_factory=dict
    )
    fast_lane_share: Probability = Field(
        default=0.0, description="share of these contacts whose customer holds a fast-lane pass"
    )
    per_hour: dict[Hour, NonNegative] | None = Field(
        default=None, description="hour of day (0-23) -> contacts per hour in that hour"
    )
    daily: NonNegative | None = Field(
        default=None, description="contacts per day, spread over the day by `profile`"
    )

    @model_validator(mode="after")
    def _one_rate(self) -> Stream:
        if (self.per_hour is None) == (self.daily is None):
            raise ValueError("give exactly one of per_hour and daily")
        return self


class Shift(_Strict):
    """A working period; `share` of the group's agents work it."""

    start: ClockTime
    end: ClockTime
    share: Probability = 1.0


class AgentGroup(_Strict):
    """`count` agents with the same profile, shifts and resolution skill."""

    name: Name
    count: Annotated[StrictInt, Field(ge=1, le=20_000)]
    skills: dict[StrictStr, Annotated[StrictInt, Field(ge=1, le=5)]] = Field(default_factory=dict)
    languages: list[StrictStr] = Field(min_length=1)
    capacity: dict[StrictStr, Annotated[StrictInt, Field(ge=1, le=100)]] = Field(min_length=1)
    shifts: list[Shift] = Field(min_length=1, max_length=24)
    resolution: dict[StrictStr, Probability] = Field(
        default_factory=lambda: {"default": 0.75},
        description="inquiry type (or `default`) -> probability the contact is resolved",
    )
    resolution_spread: Annotated[StrictFloat | StrictInt, Field(ge=0, le=0.5)] = Field(
        default=0.0,
        description="each agent's probability is the group's plus a uniform draw in +/- this",
    )

    @model_validator(mode="after")
    def _shares(self) -> AgentGroup:
        if abs(sum(s.share for s in self.shifts) - 1.0) > 1e-6:
            raise ValueError("the shares of a group's shifts must add up to 1")
        return self


class Revenue(_Strict):
    """Revenue of a resolved contact of one inquiry type: how often, how much."""

    probability: Probability
    mean_minor: Annotated[StrictInt, Field(ge=0, le=10**10)] = Field(
        description="mean revenue of a sale, in minor units of the scenario's currency"
    )


class Patience(_Strict):
    """How long customers of each tier wait before hanging up (null: they never do)."""

    standard: Distribution | None = None
    fast_lane: Distribution | None = None


class HandleTimes(_Strict):
    """Handle-time distributions, by inquiry type with a default."""

    default: Distribution
    by_inquiry_type: dict[StrictStr, Distribution] = Field(default_factory=dict)

    def of(self, inquiry_type: str) -> Distribution:
        """The distribution for one inquiry type."""
        return self.by_inquiry_type.get(inquiry_type, self.default)


class Scenario(_Strict):
    """A simulated day of a contact center."""

    name: StrictStr = "scenario"
    start: ClockTime = Field(default="00:00", description="first arrival")
    end: ClockTime = Field(default="24:00", description="last arrival; the queue then drains")
    warmup_minutes: Annotated[StrictInt, Field(ge=0, le=24 * 60)] = Field(
        default=0, description="contacts arriving in the first minutes are not counted"
    )
    profile: dict[Hour, NonNegative] = Field(
        default_factory=dict, description="hour -> relative weight for streams given `daily`"
    )
    streams: list[Stream] = Field(min_length=1, max_length=500)
    agent_groups: list[AgentGroup] = Field(min_length=1, max_length=500)
    handle_time: HandleTimes
    patience: Patience = Field(default_factory=Patience)
    revenue: dict[StrictStr, Revenue] = Field(
        default_factory=dict, description="inquiry type -> revenue of a resolved contact"
    )
    currency: Annotated[StrictStr, Field(pattern=r"^[A-Z]{3}$")] = "EUR"
    history_days: Annotated[StrictInt, Field(ge=0, le=30)] = Field(
        default=0,
        description="days simulated before the measured one whose outcomes the performance "
        "table starts from (only when the rules weigh performance)",
    )
    service_level_seconds: Annotated[StrictInt, Field(ge=1, le=86_400)] | None = Field(
        default=None,
        description="answer-time target for SLA figures; default: each tier's SLA in the rules "
        "for the channel, else 20 s",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        if _minutes(self.end) <= _minutes(self.start):
            raise ValueError("end must be after start")
        if any(s.daily is not None for s in self.streams) and not any(self.profile.values()):
            raise ValueError("streams with `daily` need a `profile` with some positive weight")
        names = [s.name for s in self.streams]
        if len(set(names)) != len(names):
            raise ValueError("stream names must be unique")
        groups = [g.name for g in self.agent_groups]
        if len(set(groups)) != len(groups):
            raise ValueError("agent group names must be unique")
        return self

    def hourly_rates(self, stream: Stream) -> dict[int, float]:
        """Contacts per hour of `stream` in each hour of the day that has any."""
        if stream.per_hour is not None:
            return {int(h): float(r) for h, r in stream.per_hour.items() if r > 0}
        total = sum(self.profile.values())
        assert stream.daily is not None
        return {int(h): float(stream.daily) * w / total for h, w in self.profile.items() if w > 0}


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def seconds_of_day(clock: str) -> float:
    """'HH:MM' as seconds after midnight ('24:00' is the end of the day)."""
    return 60.0 * _minutes(clock)
