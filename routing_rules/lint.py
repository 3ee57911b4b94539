"""Lint warnings: a valid rules document that will not do what its author most likely meant.

Every check is conservative: it warns only when it can prove the problem from the document
alone (a rule that can never match, a stage that is never in effect), never on a hunch.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise

from routing_rules.compiled import attribute_holds
from routing_rules.problems import RuleProblem
from routing_rules.schema import AttributeTest, Match, OneOrMany, Requirement, Rule
from routing_rules.validation import ValidatedRules
from routing_rules.yaml_source import Path, format_path

Finding = tuple[Path, str, str]  # where, code, message
Bound = tuple[float, bool]  # value, strict

_CATEGORICAL = ("segment", "inquiry_type", "journey_stage", "language", "channel")


def lint_rules(
    validated: ValidatedRules, *, agent_skills: Collection[str] | None = None
) -> list[RuleProblem]:
    """Warnings for a validated document, in source order; `agent_skills`: skills agents have."""
    rules = validated.ruleset.rules
    findings: list[Finding] = list(_shadowed_rules(rules))
    for index, rule in enumerate(rules):
        findings.extend(_unreachable_stages(index, rule))
        if agent_skills is not None:
            findings.extend(_unknown_agent_skills(index, rule, agent_skills))
    if not any(_is_catch_all(rule.match) for rule in rules):
        findings.append(
            (
                ("rules", len(rules) - 1),
                "missing_catch_all",
                "no rule has an empty match: contacts that match no rule get the implicit "
                "default (any agent speaking the contact's language, no skills required); "
                "add a last rule without `match` to decide what they get",
            )
        )
    return sorted(
        (_warning(validated, *finding) for finding in findings),
        key=lambda problem: (problem.line, problem.column, problem.code),
    )


def _warning(validated: ValidatedRules, path: Path, code: str, message: str) -> RuleProblem:
    # Name the path that exists in the text (a rule without `match:` is pointed at as a whole).
    position, found = validated.document.position_of(path)
    where = (validated.file, position.line, position.column, format_path(found))
    return RuleProblem(*where, message, severity="warning", code=code)


def _is_catch_all(match: Match) -> bool:
    return all(getattr(match, name) is None for name in _CATEGORICAL) and not match.attributes


# --- shadowed_rule ---------------------------------------------------------------------------


def _shadowed_rules(rules: Sequence[Rule]) -> Iterator[Finding]:
    for later_index, later in enumerate(rules):
        for earlier_index, earlier in enumerate(rules[:later_index]):
            if _covers(earlier.match, later.match):
                yield (
                    ("rules", later_index, "match"),
                    "shadowed_rule",
                    f"rule {later.name!r} can never match: rule {earlier.name!r} "
                    f"(rules[{earlier_index}]) comes first and matches every contact it matches",
                )
                break


def _covers(wide: Match, narrow: Match) -> bool:
    """Whether every contact that `narrow` matches is also matched by `wide`."""
    for name in _CATEGORICAL:
        wide_values: OneOrMany | None = getattr(wide, name)
        narrow_values: OneOrMany | None = getattr(narrow, name)
        if wide_values is None:
            continue
        if narrow_values is None or not set(_as_list(narrow_values)) <= set(_as_list(wide_values)):
            return False
    # A missing attribute matches no test, so `narrow` must test every attribute `wide` tests.
    return all(
        name in narrow.attributes and _implies(narrow.attributes[name], wide_test)
        for name, wide_test in wide.attributes.items()
    )


def _as_list(value: OneOrMany) -> list[str]:
    return [value] if isinstance(value, str) else value


def _implies(narrow: object, wide: object) -> bool:
    """Whether every attribute value that passes test `narrow` also passes test `wide`."""
    candidates = _finite_values(narrow)
    if candidates is not None:
        # The values `narrow` accepts are exactly these (up to 1 == 1.0): check each one.
        return all(attribute_holds(wide, v) for v in candidates if attribute_holds(narrow, v))
    # `narrow` accepts infinitely many values: a `wide` that lists what it accepts cannot cover.
    if not isinstance(wide, AttributeTest) or wide.eq is not None or wide.in_ is not None:
        return False
    excluded = [*([] if wide.ne is None else [wide.ne]), *(wide.not_in or [])]
    if any(attribute_holds(narrow, value) for value in excluded):
        return False
    return isinstance(narrow, AttributeTest) and _range_implies(narrow, wide)


def _finite_values(test: object) -> list[object] | None:
    if isinstance(test, AttributeTest):
        if test.eq is not None:
            return [test.eq]
        return None if test.in_ is None else list(test.in_)
    if isinstance(test, list):
        return list(test)
    return [test]


def _range_implies(narrow: AttributeTest, wide: AttributeTest) -> bool:
    low = _tightest([(narrow.gt, True), (narrow.gte, False)], lower=True)
    high = _tightest([(narrow.lt, True), (narrow.lte, False)], lower=False)
    checks = [
        wide.gt is None or (low is not None and (low[0] > wide.gt or low == (wide.gt, True))),
        wide.gte is None or (low is not None and low[0] >= wide.gte),
        wide.lt is None or (high is not None and (high[0] < wide.lt or high == (wide.lt, True))),
        wide.lte is None or (high is not None and high[0] <= wide.lte),
    ]
    return all(checks)


def _tightest(bounds: list[tuple[float | None, bool]], *, lower: bool) -> Bound | None:
    present = [(value, strict) for value, strict in bounds if value is not None]
    if not present:
        return None
    # On equal values the strict bound is the tighter one.
    if lower:
        return max(present, key=lambda b: (b[0], b[1]))
    return min(present, key=lambda b: (b[0], not b[1]))


# --- unreachable_stage -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Rung:
    """One stage of a rule's ladder as `compiled.py` builds it."""

    path: Path
    label: str
    after_wait: int | None
    no_eligible_free: int | None
    require: Requirement
    own_prefer: bool


def _ladder(index: int, rule: Rule) -> list[_Rung]:
    base: Path = ("rules", index)
    # The rule's own requirements start at arrival: as if triggered by a wait of 0 s.
    rungs = [_Rung((*base, "require"), "the rule's own require", 0, None, rule.require, False)]
    for s_index, stage in enumerate(rule.relax):
        rungs.append(
            _Rung(
                (*base, "relax", s_index),
                f"stage {stage.name!r}",
                stage.after_wait_seconds,
                stage.no_eligible_free_seconds,
                stage.require,
                stage.prefer is not None,
            )
        )
    fallback = rule.fallback
    if fallback.action == "any_agent":
        rungs.append(
            _Rung(
                (*base, "fallback"),
                "the fallback",
                fallback.after_wait_seconds,
                fallback.no_eligible_free_seconds,
                Requirement(skills={}, language=fallback.language),
                False,
            )
        )
    return rungs


def _unreachable_stages(index: int, rule: Rule) -> Iterator[Finding]:
    rungs = _ladder(index, rule)
    for current, successor in pairwise(rungs):
        reason = _takes_over_at_once(current, successor)
        if reason:
            message = (
                f"{current.label} is never in effect: {successor.label} starts the moment it "
                f"does ({reason})"
            )
            yield current.path, "unreachable_stage", message
    widest: _Rung | None = None
    for rung in rungs:
        # Only dropping the language can widen a stage that requires no skills; a stage that
        # changes preferences is deliberate, so it is not flagged.
        if (
            widest is None
            or rung.own_prefer
            or (widest.require.language and not rung.require.language)
        ):
            if not rung.require.skills and (widest is None or not rung.require.language):
                widest = rung
            continue
        no_language = "" if widest.require.language else " and no common language"
        message = (
            f"{rung.label} relaxes nothing: {widest.label} before it already requires no "
            f"skills{no_language}, so no further agent can become eligible"
        )
        yield rung.path, "unreachable_stage", message


def _takes_over_at_once(current: _Rung, successor: _Rung) -> str:
    """Why `successor` always triggers as soon as `current` starts, or "" if it need not."""
    # next_stage chains on entry with no stall time yet, so a stall trigger of 0 s holds at once.
    if successor.no_eligible_free == 0:
        return "no_eligible_free_seconds: 0"
    # A rung entered only by total wait starts at `after_wait`; a successor due no later wins.
    if (
        current.no_eligible_free is None
        and current.after_wait is not None
        and successor.after_wait is not None
        and successor.after_wait <= current.after_wait
    ):
        return (
            f"its after_wait_seconds {successor.after_wait} is not greater than "
            f"{current.after_wait}"
        )
    return ""


# --- unknown_agent_skill ---------------------------------------------------------------------


def _unknown_agent_skills(
    index: int, rule: Rule, agent_skills: Collection[str]
) -> Iterator[Finding]:
    base: Path = ("rules", index)
    requirements = [((*base, "require"), rule.require)] + [
        ((*base, "relax", s_index, "require"), stage.require)
        for s_index, stage in enumerate(rule.relax)
    ]
    for path, requirement in requirements:
        for skill in requirement.skills:
            if skill not in agent_skills:
                message = f"no agent has skill {skill!r}: nobody is eligible under this requirement"
                yield (*path, "skills", skill), "unknown_agent_skill", message
