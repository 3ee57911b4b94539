"""Checks of request values against the active rules' vocabularies (a typo is a 422)."""

from __future__ import annotations

from collections.abc import Iterable

from routing_rules.compiled import CompiledRules
from service.contacts import ContactState
from service.models import AgentIn, ContactIn
from service.problems import InvalidInput


def check_contact(rules: CompiledRules, body: ContactIn) -> None:
    """Raise InvalidInput naming each field whose value the vocabularies do not know."""
    vocab = rules.ruleset.vocabularies
    errors = []
    for field, known in (
        ("channel", vocab.channels),
        ("segment", vocab.segments),
        ("inquiry_type", vocab.inquiry_types),
        ("journey_stage", vocab.journey_stages),
        ("language", vocab.languages),
    ):
        value = getattr(body, field)
        if value not in known:
            errors.append(
                {
                    "field": field,
                    "type": "unknown_name",
                    "message": f"unknown {field} {value!r}; known: {', '.join(known)}",
                }
            )
    for name, kind in vocab.attributes.items():
        if name not in body.attributes:
            continue
        value = body.attributes[name]
        ok = (
            isinstance(value, bool)
            if kind == "boolean"
            else isinstance(value, int | float) and not isinstance(value, bool)
            if kind == "number"
            else isinstance(value, str)
        )
        if not ok:
            errors.append(
                {
                    "field": f"attributes.{name}",
                    "type": "type_mismatch",
                    "message": f"attribute {name!r} must be a {kind}",
                }
            )
    if errors:
        raise InvalidInput(errors[0]["message"], errors=errors)


def check_agent(rules: CompiledRules, body: AgentIn) -> None:
    """Raise InvalidInput naming each skill, language or channel the vocabularies lack."""
    vocab = rules.ruleset.vocabularies
    errors = []
    for field, noun, values, known in (
        ("skills", "skill", list(body.skills), vocab.skills),
        ("languages", "language", body.languages, vocab.languages),
        ("capacity", "channel", list(body.capacity), vocab.channels),
    ):
        for index, value in enumerate(values):
            if value not in known:
                # Named as pydantic names them: dict entries by key, list items by index.
                where = f"{field}.{index}" if field == "languages" else f"{field}.{value}"
                errors.append(
                    {
                        "field": where,
                        "type": "unknown_name",
                        "message": f"unknown {noun} {value!r}; known: {', '.join(known)}",
                    }
                )
    if errors:
        raise InvalidInput(errors[0]["message"], errors=errors)


def dropped_in_use(contacts: Iterable[ContactState], rules: CompiledRules) -> list[str]:
    """Why `rules` cannot be activated now: active contacts on channels/languages it drops."""
    return dropped_in_use_by(((c.channel, c.request["language"]) for c in contacts), rules)


def dropped_in_use_by(uses: Iterable[tuple[str, str]], rules: CompiledRules) -> list[str]:
    """The same, from the (channel, language) of each active contact."""
    in_use: dict[tuple[str, str], int] = {}
    for channel, language in uses:
        for kind, value, known in (
            ("channel", channel, rules.channels),
            ("language", language, rules.languages),
        ):
            if value not in known:
                in_use[(kind, value)] = in_use.get((kind, value), 0) + 1
    return [
        f"{count} active contact(s) use {kind} {value!r}, which the new rules drop; "
        "let them end first"
        for (kind, value), count in sorted(in_use.items())
    ]
