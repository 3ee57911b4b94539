"""Fast-lane passes for billing systems: buy (idempotent), read, list, refund, cancel."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from service import clock
from service.api.deps import BillingCaller, SingleValuedQuery
from service.idempotency import REPLAY_HEADER, Claim, IdempotencyKey, request_hash, run_once
from service.models import problems
from service.pass_models import PassCreate, PassOut, PassPage, RefundCreate, RefundResult
from service.passes import PassDesk

router = APIRouter(prefix="/v1", tags=["passes"])

PassId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]
CustomerId = Annotated[
    str, Query(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$")
]


async def _desk(request: Request) -> PassDesk:
    return request.app.state.passes  # type: ignore[no-any-return]


PassesDep = Annotated[PassDesk, Depends(_desk)]

_REPLAY_DOC = {
    REPLAY_HEADER: {
        "description": "`true` when this is the stored response of an earlier request with "
        "the same Idempotency-Key and body",
        "schema": {"type": "string", "enum": ["true"]},
    }
}


def _json(body: dict[str, Any], status_code: int, headers: dict[str, str]) -> Response:
    return Response(
        orjson.dumps(body), status_code=status_code, media_type="application/json", headers=headers
    )


@router.post(
    "/passes",
    summary="Sell a fast-lane pass (Idempotency-Key required)",
    status_code=201,
    response_model=PassOut,
    responses={
        201: {"model": PassOut, "description": "Sold (or replayed)", "headers": _REPLAY_DOC},
        **problems(400, 401, 403, 409, 413, 422, 503),
    },
)
async def buy_pass(
    billing: BillingCaller, key: IdempotencyKey, order: PassCreate, desk: PassesDep
) -> Response:
    """Sell a pass; a retry with the same key and body replays the sale, never a second pass.

    409 when the sales guard finds the fast lane sold out (the detail names the channel and
    interval), or while a request with the same key is still running; 422 when the key was
    used for another body.
    """
    now = clock.now()

    async def sell(claim: Claim) -> tuple[int, dict[str, Any]]:
        return 201, await asyncio.to_thread(desk.purchase, order, claim=claim, now=now)

    outcome = await run_once(
        desk.idempotency,
        caller=billing.key_hash,
        operation="pass.purchase",
        key=key,
        # Defaults included: a retry that spells out a default (`"valid_from": null`) is the
        # same request as one that leaves it out.
        fingerprint=request_hash(order.model_dump(mode="json")),
        now=now,
        action=sell,
    )
    return _json(outcome.body, outcome.status_code, outcome.headers)


@router.get("/passes", response_model=PassPage, responses=problems(401, 403, 422))
async def list_passes(
    billing: BillingCaller,
    desk: PassesDep,
    single_values: SingleValuedQuery,
    customer_id: CustomerId,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(min_length=1, max_length=400)] = None,
) -> PassPage:
    """A customer's passes, oldest first, with refunds; follow `next_cursor` for more."""
    items, next_cursor = await asyncio.to_thread(
        desk.page, customer_id, limit=limit, cursor=cursor, now=clock.now()
    )
    return PassPage.model_validate({"items": items, "next_cursor": next_cursor})


@router.get("/passes/{pass_id}", response_model=PassOut, responses=problems(401, 403, 404, 422))
async def get_pass(pass_id: PassId, billing: BillingCaller, desk: PassesDep) -> Response:
    """A pass: status, validity, money paid and refunded, and whether it grants the fast lane."""
    return _json(await asyncio.to_thread(desk.get, pass_id, now=clock.now()), 200, {})


@router.post(
    "/passes/{pass_id}/refunds",
    summary="Refund (part of) a pass (Idempotency-Key required)",
    status_code=201,
    response_model=RefundResult,
    responses={
        201: {
            "model": RefundResult,
            "description": "Refunded (or replayed)",
            "headers": _REPLAY_DOC,
        },
        **problems(400, 401, 403, 404, 409, 413, 422, 503),
    },
)
async def refund_pass(
    pass_id: PassId,
    billing: BillingCaller,
    key: IdempotencyKey,
    order: RefundCreate,
    desk: PassesDep,
) -> Response:
    """Give back `amount` (≥ 1, at most what is left, in the pass's currency); once per key.

    A fully refunded pass no longer grants the fast lane. Billing may always refund: a contact
    already waiting with the pass keeps its place in the fast lane, but the pass is not
    consumed when that contact is answered.
    """
    now = clock.now()

    async def give_back(claim: Claim) -> tuple[int, dict[str, Any]]:
        return 201, await asyncio.to_thread(desk.refund, pass_id, order, claim=claim, now=now)

    outcome = await run_once(
        desk.idempotency,
        caller=billing.key_hash,
        operation="pass.refund",
        key=key,
        fingerprint=request_hash(order.model_dump(mode="json"), target=pass_id),
        now=now,
        action=give_back,
    )
    return _json(outcome.body, outcome.status_code, outcome.headers)


@router.post(
    "/passes/{pass_id}/cancel",
    response_model=PassOut,
    responses=problems(401, 403, 404, 409, 422),
)
async def cancel_pass(pass_id: PassId, billing: BillingCaller, desk: PassesDep) -> Response:
    """Cancel a subscription or an unused single-incident pass; repeating it is harmless.

    Cancelling refunds nothing (refund separately). 409 for a used single-incident pass, or
    one a waiting contact holds.
    """
    return _json(await asyncio.to_thread(desk.cancel, pass_id, now=clock.now()), 200, {})
