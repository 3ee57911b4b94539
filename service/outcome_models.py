"""Outcomes of completed contacts as the API takes them in and shows them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from service.models import ContactOut
from service.pass_models import Currency, MinorUnits

TAG_KINDS = ("needs", "frustrations", "requests")
MAX_HANDLE_SECONDS = 7 * 86400
MAX_TAGS_PER_KIND = 50

TagName = Annotated[StrictStr, Field(min_length=1, max_length=64)]
TagList = Annotated[list[TagName], Field(max_length=MAX_TAGS_PER_KIND)]
Nps = Annotated[StrictInt, Field(ge=0, le=10, description="0-10: would recommend us")]
HandleSeconds = Annotated[
    float, Field(strict=True, ge=0, le=MAX_HANDLE_SECONDS, allow_inf_nan=False)
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RevenueIn(_In):
    """Money the contact brought in, in integer minor units of one currency."""

    amount_minor: MinorUnits
    currency: Currency


class TagsIn(_In):
    """Insight tags by kind; every name must be in the active rules' `outcomes.tags`."""

    needs: TagList = Field(default_factory=list)
    frustrations: TagList = Field(default_factory=list)
    requests: TagList = Field(default_factory=list)


class OutcomeIn(_In):
    """What came of a completed contact, as the agent or ACD records it at wrap-up."""

    resolved: StrictBool = Field(description="the customer's issue was resolved on this contact")
    revenue: RevenueIn | None = Field(default=None, description="null: no revenue")
    upsell: StrictBool = False
    cross_sell: StrictBool = False
    nps: Nps | None = Field(default=None, description="null: the customer gave no NPS answer")
    handle_seconds: HandleSeconds | None = Field(
        default=None, description="absent: from the contact's answer to its completion"
    )
    tags: TagsIn = Field(default_factory=TagsIn)


class CompleteIn(_In):
    """The optional body of `complete`: the outcome, recorded with the completion."""

    outcome: OutcomeIn | None = None


class RevenueOut(BaseModel):
    """Recorded revenue."""

    amount_minor: int
    currency: str


class TagsOut(BaseModel):
    """Recorded insight tags by kind."""

    needs: list[str]
    frustrations: list[str]
    requests: list[str]


class OutcomeOut(BaseModel):
    """A recorded outcome with the contact's facts and its repeat-contact links."""

    contact_id: str
    customer_id: str
    agent_id: str
    channel: str
    segment: str
    inquiry_type: str
    journey_stage: str
    tier: Literal["standard", "fast_lane"]
    resolved: bool
    durable: bool = Field(
        description="resolved, and no repeat contact (same customer and inquiry type, within "
        "the repeat window after this contact arrived) has been recorded"
    )
    repeat_of: str | None = Field(description="the earlier contact this one repeats")
    repeated_by: str | None = Field(description="the first later contact that repeats this one")
    revenue: RevenueOut | None
    upsell: bool
    cross_sell: bool
    nps: int | None
    handle_seconds: float
    tags: TagsOut
    contact_created_at: float = Field(description="when the contact arrived (unix seconds)")
    completed_at: float = Field(description="unix seconds")
    recorded_at: float = Field(description="when this outcome was last written (unix seconds)")

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> OutcomeOut:
        """The API form of an `outcomes` row."""
        currency = row["currency"]
        tags = row["tags"] or {}
        return cls(
            contact_id=row["contact_id"],
            customer_id=row["customer_id"],
            agent_id=row["agent_id"],
            channel=row["channel"],
            segment=row["segment"],
            inquiry_type=row["inquiry_type"],
            journey_stage=row["journey_stage"],
            tier=row["tier"],
            resolved=row["resolved"],
            durable=row["durable"],
            repeat_of=row["repeat_of"],
            repeated_by=row["repeated_by"],
            revenue=None
            if currency is None
            else RevenueOut(amount_minor=row["revenue_minor"], currency=currency),
            upsell=row["upsell"],
            cross_sell=row["cross_sell"],
            nps=row["nps"],
            handle_seconds=row["handle_seconds"],
            tags=TagsOut(**{kind: list(tags.get(kind, [])) for kind in TAG_KINDS}),
            contact_created_at=row["contact_created_at"],
            completed_at=row["completed_at"],
            recorded_at=row["recorded_at"],
        )


class CompletedContactOut(ContactOut):
    """A contact after `complete`; `outcome` is there only when the request sent one."""

    outcome: OutcomeOut | None = Field(
        default=None, description="the outcome recorded with the completion"
    )
