"""All configuration, from environment variables prefixed SKILLROUTE_ (or a .env file)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

import limits
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Scope = Literal["route", "admin", "billing"]

DEMO_API_KEYS: dict[str, list[Scope]] = {
    "demo-acd-key": ["route"],
    "demo-admin-key": ["admin"],
    "demo-billing-key": ["billing"],
}
_PLACEHOLDERS = {"", "changeme", "change-me", "secret", "password", "test", "example"}
DEMO_RULES = Path(__file__).resolve().parent.parent / "routing_rules" / "examples" / "demo.yaml"


class Settings(BaseSettings):
    """skillroute's settings; see the README's settings table for each one."""

    # hide_input_in_errors: a refused configuration must not print the other (real) API keys.
    model_config = SettingsConfigDict(
        env_prefix="SKILLROUTE_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    demo: bool = Field(
        default=False, description="demo mode: demo API keys, demo rules and agents if empty"
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    database_url: str = "sqlite:///./skillroute.db"
    api_keys: dict[str, list[Scope]] = Field(
        default_factory=dict, description='JSON object: {"key": ["route", "admin"]}'
    )
    rules_file: Path | None = Field(
        default=None, description="rules YAML to load at start and hot-reload on change"
    )
    reservation_ttl_seconds: float = Field(default=20.0, gt=0, le=600)
    reject_exclusion_seconds: float = Field(
        default=120.0,
        ge=0,
        le=86400,
        description="an agent who rejected or let an offer expire is passed over this long",
    )
    dispatch_interval_seconds: float = Field(default=1.0, gt=0, le=60)
    solve_time_limit_seconds: float = Field(default=2.0, gt=0, le=60)
    solve_inline_max_arcs: int = Field(
        default=20_000, ge=0, description="larger solves run in a worker process"
    )
    default_handle_seconds: float = Field(
        default=300.0, gt=0, description="mean handle time used for wait estimates"
    )
    simulation_time_limit_seconds: float = Field(
        default=300.0, gt=0, le=3600, description="POST /v1/rules/simulate stops a longer run"
    )
    simulation_max_contacts: int = Field(
        default=250_000,
        ge=1,
        le=10_000_000,
        description="POST /v1/rules/simulate refuses runs of more contacts (all seeds and arms)",
    )
    contact_memory_seconds: float = Field(
        default=3600.0, gt=0, description="ended contacts stay in memory this long"
    )
    idempotency_window_seconds: float = Field(
        default=7 * 86400.0,
        gt=0,
        description="a retried route within this window replays the first decision",
    )
    reorder_time_limit_seconds: float = Field(
        default=1.0,
        gt=0,
        le=30,
        description="CP-SAT time limit of one appointment reorder (the best plan found stands)",
    )
    redis_url: str | None = Field(
        default=None,
        pattern=r"^rediss?://",
        description="Redis shared by all replicas: real-time state, live contacts, rate limits",
    )
    redis_prefix: str = Field(
        default="skillroute",
        pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
        description="namespace of every Redis key ({prefix}:..., one Redis Cluster hash tag)",
    )
    redis_rebuild_grace_seconds: float = Field(
        default=1.5,
        ge=0,
        le=60,
        description="before rebuilding a lost Redis state, wait this long for other replicas' "
        "queued writes to reach the database",
    )
    redis_max_connections: int = Field(
        default=50, ge=2, le=10_000, description="Redis connections per process (pool size)"
    )
    rate_limit_route: str = Field(
        default="5000/second", description="per API key, `limits` notation: N/second|minute|hour"
    )
    rate_limit_admin: str = Field(default="100/second")
    rate_limit_billing: str = Field(default="500/second")
    idempotency_key_ttl_seconds: float = Field(
        default=86400.0,
        gt=0,
        description="how long a billing Idempotency-Key and its response are kept",
    )
    webhook_poll_seconds: float = Field(
        default=1.0, gt=0, le=60, description="how often the outbox is checked for events"
    )
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    webhook_max_attempts: int = Field(
        default=10, ge=1, le=100, description="attempts per event and endpoint before giving up"
    )
    webhook_backoff_seconds: float = Field(
        default=5.0, gt=0, le=3600, description="first retry delay; doubles each attempt (max 1 h)"
    )
    write_flush_interval_seconds: float = Field(default=0.05, gt=0, le=5)
    write_batch_max: int = Field(default=1000, ge=1)
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_requests: bool = True

    @field_validator("rate_limit_route", "rate_limit_admin", "rate_limit_billing")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        try:
            limits.parse(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit like '100/second': {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if self.demo:
            return self
        if not self.api_keys:
            raise ValueError(
                "SKILLROUTE_API_KEYS is empty: set API keys, or SKILLROUTE_DEMO=true for a demo"
            )
        for key in self.api_keys:
            if key.lower() in _PLACEHOLDERS or key in DEMO_API_KEYS or len(key) < 16:
                raise ValueError(
                    f"API key {key[:4]}… is a placeholder or shorter than 16 characters"
                )
        return self

    @cached_property
    def keys(self) -> dict[str, frozenset[Scope]]:
        """Every accepted API key with its scopes (demo keys only in demo mode)."""
        keys = {key: frozenset(scopes) for key, scopes in self.api_keys.items()}
        if self.demo:
            for key, scopes in DEMO_API_KEYS.items():
                keys.setdefault(key, frozenset(scopes))
        return keys

    @property
    def effective_rules_file(self) -> Path | None:
        """The rules file to load: the configured one, or the demo rules in demo mode."""
        if self.rules_file is not None:
            return self.rules_file
        return DEMO_RULES if self.demo else None
