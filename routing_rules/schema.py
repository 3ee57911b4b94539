"""The routing-rules document: what an admin writes in YAML, as pydantic models.

The JSON Schema of `RuleSet` is what editors validate against (`skillroute rules schema`).
Cross-field checks that need the vocabularies (a skill that does not exist, a segment that is
misspelt) live in `validation.py`, so that each error can point at the exact field.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from sla.config import Calendar, CapacityPlan, FastLaneSales, Tiers

MAX_SKILL_LEVEL = 5
NAME_PATTERN = r"^[a-z][a-z0-9_\-]{0,62}$"
NAME_RE = re.compile(NAME_PATTERN)

Name = Annotated[StrictStr, Field(pattern=NAME_PATTERN, description="lower-case identifier")]
SkillLevel = Annotated[StrictInt, Field(ge=1, le=MAX_SKILL_LEVEL)]
Weight = Annotated[StrictFloat | StrictInt, Field(ge=0, le=1000)]
Seconds = Annotated[StrictInt, Field(ge=0, le=7 * 24 * 3600)]
AttributeScalar = StrictStr | StrictInt | StrictFloat | StrictBool


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Vocabularies(_Strict):
    """Every name a rule may use; anything else is a typo and an error."""

    segments: list[Name] = Field(min_length=1)
    inquiry_types: list[Name] = Field(min_length=1)
    journey_stages: list[Name] = Field(min_length=1)
    channels: list[Name] = Field(min_length=1)
    languages: list[Name] = Field(min_length=1)
    skills: list[Name] = Field(min_length=1)
    attributes: dict[Name, Literal["string", "number", "boolean"]] = Field(
        default_factory=dict,
        description="contact attributes that rules may test, with their type",
    )


class AttributeTest(_Strict):
    """A comparison on one contact attribute; every given operator must hold."""

    eq: AttributeScalar | None = None
    ne: AttributeScalar | None = None
    in_: list[AttributeScalar] | None = Field(default=None, alias="in")
    not_in: list[AttributeScalar] | None = None
    lt: StrictInt | StrictFloat | None = None
    lte: StrictInt | StrictFloat | None = None
    gt: StrictInt | StrictFloat | None = None
    gte: StrictInt | StrictFloat | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


OneOrMany = Name | list[Name]


class Match(_Strict):
    """Which contacts a rule applies to. An absent field matches anything."""

    segment: OneOrMany | None = None
    inquiry_type: OneOrMany | None = None
    journey_stage: OneOrMany | None = None
    language: OneOrMany | None = None
    channel: OneOrMany | None = None
    attributes: dict[Name, AttributeScalar | list[AttributeScalar] | AttributeTest] = Field(
        default_factory=dict
    )


class Requirement(_Strict):
    """Hard requirements: an agent that does not meet them is never offered the contact."""

    skills: dict[Name, SkillLevel] = Field(
        default_factory=dict, description="skill name -> minimum level (1-5)"
    )
    language: StrictBool = Field(
        default=True, description="the agent must speak the contact's language"
    )


class Preference(_Strict):
    """Soft preferences: they raise the match score, never exclude an agent."""

    skills: dict[Name, Weight] = Field(
        default_factory=dict, description="skill name -> weight of the agent's level"
    )


class Trigger(_Strict):
    """When a relaxation stage starts; whichever condition comes first triggers it."""

    after_wait_seconds: Seconds | None = Field(
        default=None, description="the contact has waited this long in total"
    )
    no_eligible_free_seconds: Seconds | None = Field(
        default=None,
        description="no agent eligible under the previous stage has had free capacity for this "
        "long",
    )


class Stage(Trigger):
    """One step of the relaxation ladder: new (usually looser) requirements."""

    name: Name
    require: Requirement
    prefer: Preference | None = Field(
        default=None, description="absent: keep the rule's preferences"
    )


class Fallback(Trigger):
    """The explicit end of the ladder."""

    action: Literal["any_agent", "keep_waiting"] = Field(
        description="any_agent: any available agent on the channel; keep_waiting: stay on the "
        "last stage until an eligible agent is free"
    )
    language: StrictBool = Field(
        default=True, description="with any_agent: the agent must still speak the language"
    )


class Rule(_Strict):
    """An ordered routing rule: the first rule whose match holds decides."""

    name: Name
    description: StrictStr = ""
    match: Match = Field(default_factory=Match)
    priority: Annotated[StrictInt, Field(ge=0, le=100)] = 50
    require: Requirement = Field(default_factory=Requirement)
    prefer: Preference = Field(default_factory=Preference)
    relax: list[Stage] = Field(default_factory=list, max_length=10)
    fallback: Fallback


class Scoring(_Strict):
    """Weights of the match score that dispatch maximises over all waiting contacts."""

    priority: Weight = Field(default=0.1, description="per priority point (0-100)")
    wait: Weight = Field(default=0.05, description="per minute waited, up to wait_cap_minutes")
    wait_cap_minutes: Annotated[StrictInt, Field(ge=1, le=1440)] = 60
    skill_fit: Weight = Field(
        default=2.0, description="times the agent's mean level on the required skills (0-1)"
    )
    preferred: Weight = Field(
        default=1.0, description="times the weighted mean level on preferred skills (0-1)"
    )
    idle: Weight = Field(
        default=0.01, description="per minute the agent has been idle, up to idle_cap_minutes"
    )
    idle_cap_minutes: Annotated[StrictInt, Field(ge=1, le=1440)] = 60
    performance: Weight = Field(
        default=0.0,
        description=(
            "times the agent's performance score (0-1) on the contact's inquiry type, segment "
            "and journey stage, shrunk toward the team (see the `performance` section)"
        ),
    )


class OutcomeTags(_Strict):
    """The insight-tag vocabulary agents may record on an outcome, by kind."""

    needs: list[Name] = Field(default_factory=list, max_length=200)
    frustrations: list[Name] = Field(default_factory=list, max_length=200)
    requests: list[Name] = Field(default_factory=list, max_length=200)


class Outcomes(_Strict):
    """What a completed contact's outcome may carry, and when a resolution stops counting."""

    repeat_window_days: Annotated[StrictInt, Field(ge=1, le=90)] = Field(
        default=7,
        description=(
            "a contact by the same customer on the same inquiry type within this many days "
            "marks the earlier resolution as not durable"
        ),
    )
    tags: OutcomeTags = Field(default_factory=OutcomeTags)


class PerformanceMeasure(_Strict):
    """How the per-agent figures combine into one performance score (weights, renormalised)."""

    durable_resolution: Weight = 1.0
    resolution: Weight = 0.0
    nps: Weight = 0.0
    revenue: Weight = 0.0


class Performance(_Strict):
    """The per agent x inquiry type x segment x journey stage performance table."""

    prior_contacts: Annotated[StrictFloat | StrictInt, Field(gt=0, le=10_000)] = Field(
        default=20,
        description=(
            "shrinkage strength: an agent's figure is (n * own + k * team) / (n + k), so with "
            "few contacts it stays near the team mean"
        ),
    )
    window_days: Annotated[StrictInt, Field(ge=1, le=730)] = Field(
        default=90, description="outcomes older than this are not counted"
    )
    measure: PerformanceMeasure = Field(default_factory=PerformanceMeasure)
    currency: Annotated[StrictStr, Field(pattern=r"^[A-Z]{3}$")] = Field(
        default="EUR", description="revenue in this currency counts toward the score"
    )
    revenue_reference_minor: Annotated[StrictInt, Field(ge=1, le=10**12)] = Field(
        default=10_000,
        description="revenue per interaction (minor units) that scores 1.0; less scores pro rata",
    )


class RuleSet(_Strict):
    """A whole routing-rules document."""

    schema_version: Literal[1] = 1
    name: StrictStr = "routing rules"
    vocabularies: Vocabularies
    scoring: Scoring = Field(default_factory=Scoring)
    rules: list[Rule] = Field(min_length=1, max_length=500)
    tiers: Tiers = Field(default_factory=Tiers, description="standard and fast-lane tiers")
    fast_lane: FastLaneSales = Field(
        default_factory=FastLaneSales, description="selling passes: guard, refunds, costs"
    )
    calendar: Calendar = Field(
        default_factory=Calendar, description="appointment and callback slots"
    )
    capacity_plan: CapacityPlan = Field(
        default_factory=CapacityPlan, description="forecast and staffing for the quote"
    )
    outcomes: Outcomes = Field(
        default_factory=Outcomes, description="outcome tags and repeat-contact window"
    )
    performance: Performance = Field(
        default_factory=Performance, description="how outcomes score agents for routing"
    )
