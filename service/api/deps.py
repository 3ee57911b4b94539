"""Dependency aliases: who is calling (by API key scope) and the app's components."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from service.agents import AgentDesk
from service.events.endpoints import WebhookEndpoints
from service.problems import Forbidden, InvalidInput, Unauthorized
from service.routing import RoutingService
from service.rules_store import RulesStore
from service.settings import Scope, Settings


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated API key and its scopes."""

    key_id: str
    scopes: frozenset[Scope]
    key_hash: str = ""  # sha256 of the key: scopes idempotency keys to their caller


class ScopedBearer(HTTPBearer):
    """`Authorization: Bearer KEY` with a required scope, as a single dependency.

    Subclassing HTTPBearer keeps the bearer scheme in the OpenAPI document; reading the header
    here (instead of depending on an HTTPBearer and then a checker) keeps FastAPI's per-request
    dependency resolution to one step on the route hot path.
    """

    def __init__(self, scope: Scope) -> None:
        super().__init__(
            auto_error=False,
            scheme_name="HTTPBearer",
            description="API key: `Authorization: Bearer KEY`",
        )
        self.scope = scope

    async def __call__(self, request: Request) -> Caller:  # type: ignore[override]
        """The caller, or 401/403 as problem JSON."""
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if not key or scheme.lower() != "bearer":
            raise Unauthorized(
                "missing API key: send `Authorization: Bearer KEY`",
                headers={"WWW-Authenticate": "Bearer"},
            )
        settings: Settings = request.app.state.settings
        scopes = settings.keys.get(key.strip())
        if scopes is None:
            raise Unauthorized("unknown API key", headers={"WWW-Authenticate": "Bearer"})
        if self.scope not in scopes:
            raise Forbidden(f"this API key lacks the {self.scope!r} scope")
        key_hash = _key_hash(key.strip())
        await request.app.state.rate_limits.check(self.scope, key_hash)
        return Caller(key_id=key[:4] + "…", scopes=scopes, key_hash=key_hash)


@functools.lru_cache(maxsize=256)
def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]


# Dependencies are async on purpose: FastAPI runs sync ones in a thread pool, a thread hop per
# request that costs more than the route decision itself.
AcdCaller = Annotated[Caller, Depends(ScopedBearer("route"))]
RulesAdmin = Annotated[Caller, Depends(ScopedBearer("admin"))]
BillingCaller = Annotated[Caller, Depends(ScopedBearer("billing"))]


async def _routing(request: Request) -> RoutingService:
    return request.app.state.routing  # type: ignore[no-any-return]


async def _agents(request: Request) -> AgentDesk:
    return request.app.state.agents  # type: ignore[no-any-return]


async def _rules(request: Request) -> RulesStore:
    return request.app.state.rules  # type: ignore[no-any-return]


async def _webhook_endpoints(request: Request) -> WebhookEndpoints:
    return request.app.state.webhook_endpoints  # type: ignore[no-any-return]


RoutingDep = Annotated[RoutingService, Depends(_routing)]
WebhooksDep = Annotated[WebhookEndpoints, Depends(_webhook_endpoints)]
AgentsDep = Annotated[AgentDesk, Depends(_agents)]
RulesDep = Annotated[RulesStore, Depends(_rules)]


async def single_valued_query(request: Request) -> None:
    """Refuse a query parameter given more than once (422): each names a single value.

    FastAPI keeps only the last of repeated values for a single-valued parameter, so
    `?offset=x&offset=1` would otherwise pass as `offset=1` and `x` would go unchecked.
    """
    query = request.query_params
    repeated = sorted({name for name in query if len(query.getlist(name)) > 1})
    if repeated:
        raise InvalidInput(
            f"query.{repeated[0]}: given more than once; give each query parameter once",
            errors=[
                {"field": f"query.{name}", "type": "repeated", "message": "given more than once"}
                for name in repeated
            ],
        )


# Declare it after the scope parameter: an unauthenticated request still gets 401 first.
SingleValuedQuery = Annotated[None, Depends(single_valued_query)]
