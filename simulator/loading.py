"""Reading a scenario document: YAML with file/line/field errors, checked against the rules."""

from __future__ import annotations

from collections.abc import Iterator

from routing_rules.problems import RuleProblem, RulesInvalid
from routing_rules.schema import RuleSet
from routing_rules.validation import _at, _unknown, parse_document
from routing_rules.yaml_source import LocatedDocument
from simulator.scenario import Scenario

Path = tuple[str | int, ...]


def load_scenario(text: str, ruleset: RuleSet, *, file: str = "<scenario>") -> Scenario:
    """Parse and validate a scenario for `ruleset`; raise RulesInvalid with every problem."""
    document, scenario = parse_document(text, Scenario, file=file, what="scenario")
    problems = _located(document, file, _vocabulary_problems(scenario, ruleset))
    if problems:
        raise RulesInvalid(problems)
    return scenario


def _located(
    document: LocatedDocument, file: str, found: Iterator[tuple[Path, str]]
) -> list[RuleProblem]:
    return [_at(document, file, path, message, "unknown_name") for path, message in found]


def _vocabulary_problems(scenario: Scenario, ruleset: RuleSet) -> Iterator[tuple[Path, str]]:
    """Names in the scenario that the rules' vocabularies do not know."""
    v = ruleset.vocabularies
    known = {
        "channel": v.channels,
        "segment": v.segments,
        "inquiry_type": v.inquiry_types,
        "journey_stage": v.journey_stages,
        "language": v.languages,
    }
    for i, stream in enumerate(scenario.streams):
        for field, names in known.items():
            value = getattr(stream, field)
            if value not in names:
                yield ("streams", i, field), _unknown(field.replace("_", " "), value, names)
    for i, group in enumerate(scenario.agent_groups):
        for skill in group.skills:
            if skill not in v.skills:
                yield ("agent_groups", i, "skills", skill), _unknown("skill", skill, v.skills)
        for j, language in enumerate(group.languages):
            if language not in v.languages:
                yield (
                    ("agent_groups", i, "languages", j),
                    _unknown("language", language, v.languages),
                )
        for channel in group.capacity:
            if channel not in v.channels:
                yield (
                    ("agent_groups", i, "capacity", channel),
                    _unknown("channel", channel, v.channels),
                )
        for inquiry in group.resolution:
            if inquiry != "default" and inquiry not in v.inquiry_types:
                yield (
                    ("agent_groups", i, "resolution", inquiry),
                    _unknown("inquiry type", inquiry, v.inquiry_types),
                )
    sections: list[tuple[Path, list[str]]] = [
        (("handle_time", "by_inquiry_type"), list(scenario.handle_time.by_inquiry_type)),
        (("revenue",), list(scenario.revenue)),
    ]
    for path, names in sections:
        for inquiry in names:
            if inquiry not in v.inquiry_types:
                yield (*path, inquiry), _unknown("inquiry type", inquiry, v.inquiry_types)
