"""Domain errors and their RFC 9457 problem+json form, mapped in one place."""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, iter_route_contexts
from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match, Route

from service.storage.writer import WriterBacklogFull

log = structlog.get_logger(__name__)

PROBLEM_TYPE = "https://skillroute.dev/problems/"


class Problem(Exception):
    """A client-visible error: HTTP status, short title, detail and optional field errors."""

    status = 400
    title = "Bad request"
    slug = "bad-request"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers


class BadRequest(Problem):
    """The request is missing something it needs (for example a required header)."""

    status, title, slug = 400, "Bad request", "bad-request"


class NotFound(Problem):
    """The named resource does not exist."""

    status, title, slug = 404, "Not found", "not-found"


class Conflict(Problem):
    """The request clashes with the resource's current state."""

    status, title, slug = 409, "Conflict", "conflict"


class InvalidInput(Problem):
    """The request is well-formed JSON but its content is not acceptable."""

    status, title, slug = 422, "Invalid input", "invalid-input"


class PayloadTooLarge(Problem):
    """The request body is larger than this endpoint accepts."""

    status, title, slug = 413, "Request body too large", "too-large"


class Unauthorized(Problem):
    """No valid API key."""

    status, title, slug = 401, "Unauthorized", "unauthorized"


class Forbidden(Problem):
    """The API key lacks the scope this call needs."""

    status, title, slug = 403, "Forbidden", "forbidden"


class TooManyRequests(Problem):
    """The API key is over its rate limit."""

    status, title, slug = 429, "Too many requests", "too-many-requests"


class Unavailable(Problem):
    """A dependency is down, or the state is being rebuilt; nothing was changed.

    Always with `Retry-After` (5 s unless the raiser says otherwise).
    """

    status, title, slug = 503, "Service unavailable", "unavailable"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": "5", **(headers or {})})


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    slug: str,
    instance: str,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A problem+json response."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    if errors:
        body["errors"] = errors
    return Response(
        orjson.dumps(body),
        status_code=status,
        media_type="application/problem+json",
        headers=headers,
    )


def validation_errors(errors: Any) -> list[dict[str, Any]]:
    """Pydantic errors as JSON-safe dicts with a dotted `field` path."""
    out = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        out.append(
            {
                "field": ".".join(loc),
                "message": error.get("msg", "invalid"),
                "type": error.get("type", "invalid"),
            }
        )
    return out


def error_summary(error: dict[str, Any]) -> str:
    """`field: message`, or just the message when the whole body is at fault."""
    return f"{error['field']}: {error['message']}" if error["field"] else str(error["message"])


def install_problem_handlers(app: FastAPI) -> None:
    """Map every error the API can raise to problem+json."""

    @app.exception_handler(WriterBacklogFull)
    async def _backlog(request: Request, exc: WriterBacklogFull) -> Response:
        return problem_response(
            503,
            "Service unavailable",
            "the database has not accepted writes for too long; retry later",
            slug="unavailable",
            instance=request.url.path,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(OperationalError)
    async def _database_down(request: Request, exc: OperationalError) -> Response:
        # Every write runs in one transaction that rolls back on the error: nothing changed.
        log.warning("database.unavailable", path=request.url.path, error=str(exc.orig)[:300])
        return problem_response(
            503,
            "Service unavailable",
            "the database is unavailable; nothing was changed, retry later",
            slug="unavailable",
            instance=request.url.path,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(RedisError)
    async def _redis_down(request: Request, exc: RedisError) -> Response:
        log.warning("redis.unavailable", path=request.url.path, error=str(exc)[:300])
        return problem_response(
            503,
            "Service unavailable",
            "the shared real-time state (Redis) is unavailable; retry later",
            slug="unavailable",
            instance=request.url.path,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> Response:
        return problem_response(
            exc.status,
            exc.title,
            exc.detail,
            slug=exc.slug,
            instance=request.url.path,
            errors=exc.errors,
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = validation_errors(_located(exc))
        first = errors[0] if errors else {"field": "", "message": "invalid request"}
        return problem_response(
            422,
            "Invalid input",
            error_summary(first),
            slug="invalid-input",
            instance=request.url.path,
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": _allowed_methods(request)}
        return problem_response(
            exc.status_code,
            str(exc.detail),
            str(exc.detail),
            slug=f"http-{exc.status_code}",
            instance=request.url.path,
            headers=headers,
        )


def _located(exc: RequestValidationError) -> list[dict[str, Any]]:
    """FastAPI's errors with body fields named as in the JSON document, like /v1/route's.

    `skills.billing`, not `body.skills.billing`; a JSON syntax error at a line and column,
    not at `body.9`.
    """
    located = []
    for error in exc.errors():
        loc = tuple(error.get("loc", ()))
        if (
            error.get("type") == "json_invalid"
            and len(loc) == 2
            and isinstance(loc[1], int)
            and isinstance(exc.body, str)
        ):
            line = exc.body.count("\n", 0, loc[1]) + 1
            column = loc[1] - exc.body.rfind("\n", 0, loc[1])
            reason = error.get("ctx", {}).get("error", "invalid JSON")
            error = {
                **error,
                "loc": (),
                "msg": f"Invalid JSON: {reason} at line {line} column {column}",
            }
        elif len(loc) > 1 and loc[0] == "body":
            error = {**error, "loc": loc[1:]}
        located.append(error)
    return located


def _allowed_methods(request: Request) -> str:
    """Every method of every route at the request's path (RFC 9110 Allow).

    Starlette's own 405 names only the first route that matched the path, so `GET /v1/rules`
    and `PUT /v1/rules` would each hide the other.
    """
    methods: set[str] = set()
    for context in iter_route_contexts(request.app.routes):
        route = context.route
        if isinstance(route, Route | APIRoute) and route.methods:
            match, _ = route.matches(request.scope)
            if match != Match.NONE:
                methods |= route.methods
    return ", ".join(sorted(methods))
