"""The bare FastAPI baseline for the route benchmark: one POST, pydantic in and out.

It does what any FastAPI endpoint must (parse, validate, serialise) and nothing else, so the
route benchmark can say how much of the budget skillroute's own work takes.
"""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict


class BareIn(BaseModel):
    """The same fields as a route request."""

    model_config = ConfigDict(extra="forbid")
    contact_id: str
    customer_id: str
    channel: str
    segment: str
    inquiry_type: str
    journey_stage: str
    language: str
    attributes: dict[str, str | int | float | bool] = {}


class BareOut(BaseModel):
    """A decision-shaped answer."""

    contact_id: str
    outcome: str
    agent_id: str | None = None


app = FastAPI()


@app.post("/v1/route", status_code=201)
async def bare_route(body: BareIn) -> BareOut:
    """Echo a decision without deciding anything."""
    return BareOut(contact_id=body.contact_id, outcome="queued")
