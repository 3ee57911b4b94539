"""Prometheus metrics (served at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DECISIONS = Counter(
    "skillroute_decisions_total", "Routing decisions by outcome", ["outcome", "trigger"]
)
DISPATCH_SECONDS = Histogram(
    "skillroute_dispatch_solve_seconds",
    "Time of one dispatch (stage advance, scoring, solve, claims)",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
QUEUE_LENGTH = Gauge("skillroute_queue_length", "Contacts waiting for an agent", ["channel"])
WAIT_SECONDS = Histogram(
    "skillroute_wait_seconds",
    "Time from route request to an agent reservation",
    ["channel", "tier"],
    buckets=(0.01, 1, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600),
)
CLAIMS_LOST = Counter(
    "skillroute_claims_lost_total", "Solved pairs whose claim lost to a concurrent change"
)
SOLVE_FALLBACKS = Counter(
    "skillroute_solve_fallbacks_total", "Solves that ran out of time and fell back to greedy"
)
RESERVATIONS = Counter("skillroute_reservations_total", "Reservation outcomes", ["outcome"])
PROMOTIONS = Counter(
    "skillroute_tier_promotions_total",
    "Standard contacts served ahead of a waiting fast-lane contact, by protection",
    ["protection"],
)
PASS_CONSUME_RETRIES = Counter(
    "skillroute_pass_consume_retries_total",
    "Pass consumptions that failed and were queued for a retry",
)
STATE_REBUILDS = Counter(
    "skillroute_state_rebuilds_total",
    "Rebuilds of the shared real-time state from the database that this replica ran",
)
RULES_RELOADS = Counter("skillroute_rules_reloads_total", "Rules changes by result", ["result"])


_decisions: dict[tuple[str, str], Counter] = {}
_waits: dict[tuple[str, str], Histogram] = {}


def decision(outcome: str, trigger: str) -> None:
    """Count one routing decision (label children cached: this runs on every route call)."""
    child = _decisions.get((outcome, trigger))
    if child is None:
        child = _decisions[(outcome, trigger)] = DECISIONS.labels(outcome=outcome, trigger=trigger)
    child.inc()


def wait_seconds(channel: str, tier: str, seconds: float) -> None:
    """Observe how long a contact waited for its reservation."""
    child = _waits.get((channel, tier))
    if child is None:
        child = _waits[(channel, tier)] = WAIT_SECONDS.labels(channel=channel, tier=tier)
    child.observe(seconds)


_dispatch_seconds: dict[str, Histogram] = {}


def dispatch_seconds(method: str, seconds: float) -> None:
    """Observe one dispatch's duration by solve method."""
    child = _dispatch_seconds.get(method)
    if child is None:
        child = _dispatch_seconds[method] = DISPATCH_SECONDS.labels(method=method)
    child.observe(seconds)
