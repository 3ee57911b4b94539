"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.models import ReadinessOut
from service.storage.db import ping

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    """Always 200 while the process serves requests."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Ready to route: database reachable, rules active, writer healthy",
    response_model=ReadinessOut,
    responses={503: {"model": ReadinessOut, "description": "Not ready; `checks` says why"}},
)
async def readyz(request: Request, response: Response) -> ReadinessOut:
    """200 when the service can route and persist; 503 with the failing checks otherwise."""
    app_state = request.app.state
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(asyncio.to_thread(ping, app_state.engine), timeout=2)
        checks["database"] = "ok"
    except Exception as exc:  # any failure to reach the database means not ready
        checks["database"] = f"error: {type(exc).__name__}"
    writer = app_state.writer
    checks["writer"] = "ok" if writer.healthy else f"error: {writer.last_error}"
    checks["rules"] = f"version {app_state.rules.active.row.version}"
    keeper = app_state.keeper
    if keeper is not None:
        # Shared state in Redis: 503 while it is unreachable or being rebuilt after a loss.
        checks["realtime_state"] = "ok" if keeper.ready else f"error: {keeper.problem}"
    ready = all(not v.startswith("error") for v in checks.values())
    response.status_code = 200 if ready else 503
    return ReadinessOut(status="ready" if ready else "not ready", checks=checks)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics() -> Response:
    """Metrics in the Prometheus text format."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
