"""Dependency aliases: who is calling (by API key scope) and the app's components."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.agents import AgentDesk
from service.problems import Forbidden, Unauthorized
from service.routing import RoutingService
from service.rules_store import RulesStore
from service.settings import Scope, Settings

_bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer KEY`")


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated API key and its scopes."""

    key_id: str
    scopes: frozenset[Scope]


def _caller(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Caller:
    settings: Settings = request.app.state.settings
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized(
            "missing API key: send `Authorization: Bearer KEY`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    scopes = settings.keys.get(credentials.credentials)
    if scopes is None:
        raise Unauthorized("unknown API key", headers={"WWW-Authenticate": "Bearer"})
    return Caller(key_id=credentials.credentials[:4] + "…", scopes=scopes)


def _require(scope: Scope) -> object:
    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Caller:
        caller = _caller(request, credentials)
        if scope not in caller.scopes:
            raise Forbidden(f"this API key lacks the {scope!r} scope")
        return caller

    # Dependencies are async on purpose: FastAPI runs sync ones in a thread pool, a thread hop
    # per request that costs more than the route decision itself.
    return Depends(dependency)


AcdCaller = Annotated[Caller, _require("route")]
RulesAdmin = Annotated[Caller, _require("admin")]
BillingCaller = Annotated[Caller, _require("billing")]


async def _routing(request: Request) -> RoutingService:
    return request.app.state.routing  # type: ignore[no-any-return]


async def _agents(request: Request) -> AgentDesk:
    return request.app.state.agents  # type: ignore[no-any-return]


async def _rules(request: Request) -> RulesStore:
    return request.app.state.rules  # type: ignore[no-any-return]


RoutingDep = Annotated[RoutingService, Depends(_routing)]
AgentsDep = Annotated[AgentDesk, Depends(_agents)]
RulesDep = Annotated[RulesStore, Depends(_rules)]
