"""Turn YAML text into a validated `RuleSet`, or a list of precise problems."""

from __future__ import annotations

import hashlib
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from routing_rules.problems import RuleProblem, RulesInvalid
from routing_rules.schema import AttributeTest, Fallback, Match, Rule, RuleSet, Stage
from routing_rules.yaml_source import (
    LocatedDocument,
    Path,
    YamlSourceError,
    format_path,
    parse_located,
)


@dataclass(frozen=True)
class ValidatedRules:
    """A rules document that passed validation, with its source and content hash."""

    ruleset: RuleSet
    source: str
    checksum: str
    document: LocatedDocument
    file: str


ModelT = TypeVar("ModelT", bound=BaseModel)


def parse_document(
    text: str, model: type[ModelT], *, file: str, what: str = "document"
) -> tuple[LocatedDocument, ModelT]:
    """Parse a YAML mapping into `model`, keeping positions; RulesInvalid with every problem
    (YAML errors, then schema errors), each at its file, line, column and field."""
    try:
        document = parse_located(text)
    except YamlSourceError as exc:
        raise RulesInvalid(
            [
                RuleProblem(file, e.line, e.column, e.field, e.message, code="yaml")
                for e in exc.errors
            ]
        ) from exc
    if not isinstance(document.value, dict):
        raise RulesInvalid([RuleProblem(file, 1, 1, "", f"the {what} must be a mapping")])
    try:
        return document, model.model_validate(document.value)
    except ValidationError as exc:
        raise RulesInvalid(_schema_problems(exc, document, file)) from exc


def validate_rules_text(text: str, *, file: str = "<rules>") -> ValidatedRules:
    """Parse and validate a rules document; raise RulesInvalid with every problem found."""
    document, ruleset = parse_document(text, RuleSet, file=file)
    problems = [
        _at(document, file, path, message, code)
        for path, message, code in _vocabulary_problems(ruleset, document.value)
    ]
    if problems:
        raise RulesInvalid(problems)
    checksum = hashlib.sha256(text.encode()).hexdigest()
    return ValidatedRules(ruleset, text, checksum, document, file)


def _at(document: LocatedDocument, file: str, path: Path, message: str, code: str) -> RuleProblem:
    position, _ = document.position_of(path)
    return RuleProblem(file, position.line, position.column, format_path(path), message, code=code)


def _schema_problems(
    exc: ValidationError, document: LocatedDocument, file: str
) -> list[RuleProblem]:
    seen: set[tuple[str, str]] = set()
    problems: list[RuleProblem] = []
    for error in exc.errors(include_url=False):
        # pydantic adds union-member names ("str", "list[str]") to locations; keep real keys only.
        path = _data_path(document.value, tuple(error["loc"]))
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown field (not part of the rules schema)"
        elif error["type"] == "missing":
            path = tuple(error["loc"])
            message = "required field is missing"
        key = (format_path(path), message)
        if key in seen:
            continue
        seen.add(key)
        position, _ = document.position_of(path)
        problems.append(
            RuleProblem(
                file, position.line, position.column, format_path(path), message, code=error["type"]
            )
        )
    return problems


def _data_path(value: Any, loc: tuple[Any, ...]) -> Path:
    path: list[str | int] = []
    current = value
    for part in loc:
        in_mapping = isinstance(current, dict) and isinstance(part, str) and part in current
        in_list = isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        if in_mapping or in_list:
            current = current[part]
            path.append(part)
    return tuple(path)


def _vocabulary_problems(ruleset: RuleSet, raw: dict[str, Any]) -> Iterator[tuple[Path, str, str]]:
    vocab = ruleset.vocabularies
    for list_name in (
        "segments",
        "inquiry_types",
        "journey_stages",
        "channels",
        "languages",
        "skills",
    ):
        values: list[str] = getattr(vocab, list_name)
        for index, name in enumerate(values):
            if name in values[:index]:
                yield ("vocabularies", list_name, index), f"{name!r} is listed twice", "duplicate"
    names: dict[str, int] = {}
    for index, rule in enumerate(ruleset.rules):
        base: Path = ("rules", index)
        if rule.name in names:
            yield (
                (*base, "name"),
                (f"rule name {rule.name!r} is already used by rules[{names[rule.name]}]"),
                "duplicate",
            )
        names.setdefault(rule.name, index)
        yield from _match_problems(ruleset, rule.match, (*base, "match"))
        yield from _skill_problems(vocab.skills, rule.require.skills, (*base, "require", "skills"))
        yield from _skill_problems(vocab.skills, rule.prefer.skills, (*base, "prefer", "skills"))
        stage_names: set[str] = set()
        for s_index, stage in enumerate(rule.relax):
            s_base: Path = (*base, "relax", s_index)
            if stage.name in stage_names:
                yield (*s_base, "name"), f"stage name {stage.name!r} is used twice", "duplicate"
            stage_names.add(stage.name)
            if not _has_trigger(stage):
                yield (
                    s_base,
                    ("a stage needs after_wait_seconds or no_eligible_free_seconds"),
                    "missing_trigger",
                )
            yield from _skill_problems(
                vocab.skills, stage.require.skills, (*s_base, "require", "skills")
            )
            if stage.prefer is not None:
                yield from _skill_problems(
                    vocab.skills, stage.prefer.skills, (*s_base, "prefer", "skills")
                )
        if rule.fallback.action == "any_agent" and not _has_trigger(rule.fallback):
            yield (
                (*base, "fallback"),
                ("fallback any_agent needs after_wait_seconds or no_eligible_free_seconds"),
                "missing_trigger",
            )
    yield from _sla_problems(ruleset)
    yield from _outcome_problems(ruleset)


def _outcome_problems(ruleset: RuleSet) -> Iterator[tuple[Path, str, str]]:
    tags = ruleset.outcomes.tags
    for kind in ("needs", "frustrations", "requests"):
        names: list[str] = getattr(tags, kind)
        for index, name in enumerate(names):
            if name in names[:index]:
                yield ("outcomes", "tags", kind, index), f"{name!r} is listed twice", "duplicate"


def _sla_problems(ruleset: RuleSet) -> Iterator[tuple[Path, str, str]]:
    channels = ruleset.vocabularies.channels
    for tier in ("standard", "fast_lane"):
        for channel in getattr(ruleset.tiers, tier).sla:
            if channel not in channels:
                yield (
                    ("tiers", tier, "sla", channel),
                    _unknown("channel", channel, channels),
                    "unknown_name",
                )
    for channel in ruleset.capacity_plan.channels:
        if channel not in channels:
            yield (
                ("capacity_plan", "channels", channel),
                _unknown("channel", channel, channels),
                "unknown_name",
            )
    zones: list[tuple[Path, str]] = [
        (("calendar", "timezone"), ruleset.calendar.timezone),
        (("capacity_plan", "timezone"), ruleset.capacity_plan.timezone),
    ]
    for path, zone in zones:
        if not _known_zone(zone):
            yield (
                path,
                f"unknown time zone {zone!r} (use an IANA name such as Europe/Berlin)",
                "unknown_name",
            )
    spans: list[tuple[Path, str, str]] = [
        (("calendar", "hours", i), h.start, h.end) for i, h in enumerate(ruleset.calendar.hours)
    ]
    for channel, plan in ruleset.capacity_plan.channels.items():
        spans += [
            (("capacity_plan", "channels", channel, "intervals", i), p.start, p.end)
            for i, p in enumerate(plan.intervals)
        ]
    for path, start, end in spans:
        if start >= end:
            yield (*path, "end"), f"end {end} is not after start {start}", "bad_interval"


def _known_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _has_trigger(trigger: Stage | Fallback) -> bool:
    return trigger.after_wait_seconds is not None or trigger.no_eligible_free_seconds is not None


def _skill_problems(
    skills: list[str], used: dict[str, Any], path: Path
) -> Iterator[tuple[Path, str, str]]:
    for name in used:
        if name not in skills:
            yield (*path, name), _unknown("skill", name, skills), "unknown_name"


def _unknown(kind: str, name: str, known: list[str]) -> str:
    return f"unknown {kind} {name!r}; known: {', '.join(known)}"


_MATCH_FIELDS = {
    "segment": "segments",
    "inquiry_type": "inquiry_types",
    "journey_stage": "journey_stages",
    "language": "languages",
    "channel": "channels",
}


def _match_problems(ruleset: RuleSet, match: Match, path: Path) -> Iterator[tuple[Path, str, str]]:
    vocab = ruleset.vocabularies
    for field, vocab_name in _MATCH_FIELDS.items():
        value = getattr(match, field)
        if value is None:
            continue
        known: list[str] = getattr(vocab, vocab_name)
        values = [value] if isinstance(value, str) else value
        for index, name in enumerate(values):
            if name not in known:
                where = (*path, field) if isinstance(value, str) else (*path, field, index)
                yield where, _unknown(field.replace("_", " "), name, known), "unknown_name"
    for attr, test in match.attributes.items():
        where = (*path, "attributes", attr)
        kind = vocab.attributes.get(attr)
        if kind is None:
            declared = ", ".join(vocab.attributes) or "none declared"
            yield (
                where,
                (
                    f"unknown attribute {attr!r}; declare it under vocabularies.attributes "
                    f"({declared})"
                ),
                "unknown_name",
            )
            continue
        for value in _test_values(test):
            if not _fits(kind, value):
                yield where, f"attribute {attr!r} is a {kind}; {value!r} is not", "type_mismatch"
        if (
            isinstance(test, AttributeTest)
            and kind != "number"
            and any(op is not None for op in (test.lt, test.lte, test.gt, test.gte))
        ):
            yield (
                where,
                f"attribute {attr!r} is a {kind}; lt/lte/gt/gte need a number",
                "type_mismatch",
            )


def _test_values(test: object) -> list[object]:
    if isinstance(test, AttributeTest):
        values: list[object] = [test.eq, test.ne, *(test.in_ or []), *(test.not_in or [])]
        return [v for v in values if v is not None]
    if isinstance(test, list):
        return list(test)
    return [test]


def _fits(kind: str, value: object) -> bool:
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, str)


def rule_of(ruleset: RuleSet, name: str) -> Rule | None:
    """The rule called `name`, if any."""
    return next((rule for rule in ruleset.rules if rule.name == name), None)
