"""Demo agents for `make run`: a small center that exercises every example rule."""

from __future__ import annotations

from service.models import AgentIn

_TEAMS: list[tuple[str, dict[str, int], list[str], dict[str, int]]] = [
    # name prefix, skills, languages, capacity
    (
        "onboarding",
        {"onboarding": 4, "technical": 3, "billing": 2},
        ["en"],
        {"voice": 1, "chat": 2, "callback": 1},
    ),
    ("retention", {"retention": 5, "billing": 3, "sales": 3}, ["en"], {"voice": 1, "chat": 2}),
    (
        "enterprise",
        {"enterprise_care": 5, "technical": 4, "billing": 3, "onboarding": 2},
        ["en"],
        {"voice": 1, "email": 3},
    ),
    (
        "spanish",
        {"billing": 3, "technical": 3, "sales": 2, "onboarding": 2},
        ["en", "es"],
        {"voice": 1, "chat": 2, "callback": 1},
    ),
    (
        "general",
        {"billing": 3, "technical": 2, "sales": 2},
        ["en"],
        {"voice": 1, "chat": 3, "email": 5, "callback": 1},
    ),
]


def demo_agents() -> list[tuple[str, AgentIn]]:
    """Twelve available agents across five teams."""
    counts = {"onboarding": 2, "retention": 2, "enterprise": 2, "spanish": 2, "general": 4}
    agents = []
    for prefix, skills, languages, capacity in _TEAMS:
        for n in range(1, counts[prefix] + 1):
            agent_id = f"{prefix}-{n}"
            agents.append(
                (
                    agent_id,
                    AgentIn(
                        name=f"{prefix.title()} agent {n}",
                        skills=skills,
                        languages=languages,
                        capacity=capacity,
                        status="available",
                    ),
                )
            )
    return agents
