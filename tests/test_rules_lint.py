"""Lint warns about valid rules that cannot do what the admin meant, and is silent on the demo."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import pytest

from routing_rules.compiled import compile_rules
from routing_rules.lint import lint_rules
from routing_rules.problems import RuleProblem
from routing_rules.validation import validate_rules_text

DEMO = Path(__file__).resolve().parent.parent / "routing_rules" / "examples" / "demo.yaml"
FILE = "rules.yaml"

# Nine lines, so the first rule below always starts on line 10. A test whose first rule has no
# `match` leaves out CATCH_ALL: that rule is the catch-all, and would shadow a second one.
HEADER = """\
vocabularies:
  segments: [consumer, enterprise]
  inquiry_types: [billing, technical, sales]
  journey_stages: [onboarding, established]
  channels: [voice, chat]
  languages: [en, es]
  skills: [billing, technical, sales]
  attributes: {plan: string, tenure_days: number, vip: boolean}
rules:
"""
CATCH_ALL = """\
  - name: default
    fallback: {action: keep_waiting}
"""


def _lint(
    rules: str, *, catch_all: bool = True, agent_skills: Collection[str] | None = None
) -> list[RuleProblem]:
    text = HEADER + rules + (CATCH_ALL if catch_all else "")
    return lint_rules(validate_rules_text(text, file=FILE), agent_skills=agent_skills)


def _warning(line: int, column: int, field: str, message: str, code: str) -> RuleProblem:
    return RuleProblem(FILE, line, column, field, message, severity="warning", code=code)


def test_a_rule_behind_a_broader_rule_is_shadowed() -> None:
    rules = """\
  - name: billing
    match: {inquiry_type: billing}
    fallback: {action: keep_waiting}
  - name: consumer-billing
    match: {segment: consumer, inquiry_type: billing}
    fallback: {action: keep_waiting}
"""
    assert _lint(rules) == [
        _warning(
            14,
            5,
            "rules[1].match",
            "rule 'consumer-billing' can never match: rule 'billing' (rules[0]) comes first "
            "and matches every contact it matches",
            "shadowed_rule",
        )
    ]


def test_a_narrow_rule_before_a_broad_one_is_not_shadowed() -> None:
    rules = """\
  - name: consumer-billing
    match: {segment: consumer, inquiry_type: billing}
    fallback: {action: keep_waiting}
  - name: billing
    match: {inquiry_type: billing}
    fallback: {action: keep_waiting}
"""
    assert _lint(rules) == []


@pytest.mark.parametrize(
    ("earlier", "later", "shadowed"),
    [
        ("[billing, technical]", "billing", True),
        ("[billing, technical]", "[technical, billing]", True),
        ("billing", "[billing, technical]", False),
        ("billing", "sales", False),
    ],
)
def test_a_list_shadows_only_a_rule_whose_values_it_all_contains(
    earlier: str, later: str, shadowed: bool
) -> None:
    rules = f"""\
  - name: earlier
    match: {{inquiry_type: {earlier}}}
    fallback: {{action: keep_waiting}}
  - name: later
    match: {{inquiry_type: {later}}}
    fallback: {{action: keep_waiting}}
"""
    assert [p.code for p in _lint(rules)] == (["shadowed_rule"] if shadowed else [])


def test_every_rule_after_a_rule_without_match_is_shadowed() -> None:
    rules = """\
  - name: everyone
    fallback: {action: keep_waiting}
  - name: billing
    match: {inquiry_type: billing}
    fallback: {action: keep_waiting}
"""
    assert [(p.field, p.code) for p in _lint(rules)] == [
        ("rules[1].match", "shadowed_rule"),
        ("rules[2]", "shadowed_rule"),
    ]


@pytest.mark.parametrize(
    ("earlier", "later", "shadowed"),
    [
        ("vip: true", "vip: true", True),
        ("vip: true", "vip: {eq: true}, plan: pro", True),
        ("vip: true", "plan: pro", False),
        ("vip: true", "vip: false", False),
        ("plan: [pro, business]", "plan: pro", True),
        ("plan: [pro, business]", "plan: {in: [pro, free]}", False),
        ("plan: [pro, business]", "plan: {in: [pro, free], ne: free}", True),
        ("plan: {ne: free}", "plan: [pro, business]", True),
        ("plan: {ne: free}", "plan: {not_in: [free, trial]}", True),
        ("plan: {not_in: [free, trial]}", "plan: {ne: free}", False),
        ("plan: {ne: free}", "plan: {ne: trial}", False),
        ("tenure_days: {gte: 365}", "tenure_days: {gt: 400}", True),
        ("tenure_days: {gte: 365}", "tenure_days: {gt: 365}", True),
        ("tenure_days: {gt: 365}", "tenure_days: {gte: 365}", False),
        ("tenure_days: {gt: 365}", "tenure_days: {gte: 365, gt: 365}", True),
        ("tenure_days: {lt: 1000}", "tenure_days: {gte: 400, lte: 500}", True),
        ("tenure_days: {lte: 500}", "tenure_days: {lt: 500}", True),
        ("tenure_days: {lt: 500}", "tenure_days: {lte: 500}", False),
        ("tenure_days: {gte: 10, lt: 500}", "tenure_days: {gte: 20}", False),
        ("tenure_days: {lt: 100}", "tenure_days: 50", True),
        ("tenure_days: {lt: 100}", "tenure_days: [50, 150]", False),
        ("tenure_days: {ne: 0}", "tenure_days: {gt: 0}", True),
        ("tenure_days: {gte: 1}", "tenure_days: {ne: 0}", False),
        # True, but not provable without reasoning about single-point ranges: stay silent.
        ("tenure_days: 1", "tenure_days: {gte: 1, lte: 1}", False),
    ],
)
def test_an_attribute_test_shadows_only_a_test_it_always_accepts(
    earlier: str, later: str, shadowed: bool
) -> None:
    rules = f"""\
  - name: earlier
    match: {{attributes: {{{earlier}}}}}
    fallback: {{action: keep_waiting}}
  - name: later
    match: {{attributes: {{{later}}}}}
    fallback: {{action: keep_waiting}}
"""
    assert [p.code for p in _lint(rules)] == (["shadowed_rule"] if shadowed else [])


SKIPPED_STAGE = """\
  - name: billing
    require: {skills: {billing: 3}}
    relax:
      - name: slow
        after_wait_seconds: 120
        require: {skills: {billing: 2}}
      - name: fast
        after_wait_seconds: 90
        require: {skills: {billing: 1}}
    fallback: {action: any_agent, after_wait_seconds: 600}
"""


def test_a_stage_the_next_stage_overtakes_is_unreachable() -> None:
    assert _lint(SKIPPED_STAGE, catch_all=False) == [
        _warning(
            13,
            9,
            "rules[0].relax[0]",
            "stage 'slow' is never in effect: stage 'fast' starts the moment it does "
            "(its after_wait_seconds 90 is not greater than 120)",
            "unreachable_stage",
        )
    ]
    # The ladder agrees: a contact that reaches 120 s goes straight past 'slow'.
    rule = compile_rules(validate_rules_text(HEADER + SKIPPED_STAGE).ruleset).rules[0]
    assert rule.next_stage(1, wait_seconds=90, stalled_seconds=0) == 2
    assert rule.next_stage(0, wait_seconds=120, stalled_seconds=0) == 2


def test_a_last_stage_due_no_sooner_than_the_fallback_is_unreachable() -> None:
    rules = """\
  - name: billing
    require: {skills: {billing: 2}}
    relax:
      - name: any-billing
        after_wait_seconds: 600
        require: {skills: {billing: 1}}
    fallback: {action: any_agent, after_wait_seconds: 600}
"""
    assert _lint(rules, catch_all=False) == [
        _warning(
            13,
            9,
            "rules[0].relax[0]",
            "stage 'any-billing' is never in effect: the fallback starts the moment it does "
            "(its after_wait_seconds 600 is not greater than 600)",
            "unreachable_stage",
        )
    ]


def test_a_stage_that_can_also_start_on_a_stall_is_reachable() -> None:
    rules = SKIPPED_STAGE.replace(
        "        after_wait_seconds: 120\n",
        "        after_wait_seconds: 120\n        no_eligible_free_seconds: 30\n",
    )
    assert _lint(rules, catch_all=False) == []


def test_a_zero_second_stall_trigger_makes_the_previous_stage_unreachable() -> None:
    rules = """\
  - name: billing
    require: {skills: {billing: 3}}
    relax:
      - name: at-once
        no_eligible_free_seconds: 0
        require: {skills: {billing: 1}}
    fallback: {action: keep_waiting}
"""
    assert _lint(rules, catch_all=False) == [
        _warning(
            11,
            5,
            "rules[0].require",
            "the rule's own require is never in effect: stage 'at-once' starts the moment it "
            "does (no_eligible_free_seconds: 0)",
            "unreachable_stage",
        )
    ]
    rule = compile_rules(validate_rules_text(HEADER + rules).ruleset).rules[0]
    assert rule.next_stage(0, wait_seconds=0, stalled_seconds=0) == 1


def test_a_fallback_after_a_stage_without_skills_relaxes_nothing() -> None:
    rules = """\
  - name: general
    match: {segment: consumer}
    fallback: {action: any_agent, after_wait_seconds: 300}
"""
    assert _lint(rules) == [
        _warning(
            12,
            5,
            "rules[0].fallback",
            "the fallback relaxes nothing: the rule's own require before it already requires "
            "no skills, so no further agent can become eligible",
            "unreachable_stage",
        )
    ]


def test_a_fallback_that_drops_the_language_still_relaxes() -> None:
    rules = """\
  - name: general
    match: {segment: consumer}
    fallback: {action: any_agent, after_wait_seconds: 300, language: false}
"""
    assert _lint(rules) == []


def test_a_stage_after_one_without_skills_or_language_relaxes_nothing() -> None:
    rules = """\
  - name: general
    match: {segment: consumer}
    require: {language: false}
    relax:
      - name: billing
        after_wait_seconds: 60
        require: {skills: {billing: 1}, language: false}
    fallback: {action: keep_waiting}
"""
    assert [(p.field, p.code, p.message) for p in _lint(rules)] == [
        (
            "rules[0].relax[0]",
            "unreachable_stage",
            "stage 'billing' relaxes nothing: the rule's own require before it already "
            "requires no skills and no common language, so no further agent can become "
            "eligible",
        )
    ]


def test_a_stage_that_only_changes_preferences_is_not_reported() -> None:
    rules = """\
  - name: general
    match: {segment: consumer}
    prefer: {skills: {sales: 1}}
    relax:
      - name: prefer-billing
        after_wait_seconds: 60
        require: {}
        prefer: {skills: {billing: 1}}
    fallback: {action: keep_waiting}
"""
    assert _lint(rules) == []


TECHNICAL = """\
  - name: technical
    require: {skills: {technical: 2}}
    prefer: {skills: {sales: 1}}
    relax:
      - name: any-technical
        after_wait_seconds: 60
        require: {skills: {technical: 1, billing: 1}}
    fallback: {action: keep_waiting}
"""


def test_a_required_skill_no_agent_has_is_reported_where_it_is_required() -> None:
    assert _lint(TECHNICAL, catch_all=False, agent_skills={"billing"}) == [
        _warning(
            11,
            24,
            "rules[0].require.skills.technical",
            "no agent has skill 'technical': nobody is eligible under this requirement",
            "unknown_agent_skill",
        ),
        _warning(
            16,
            28,
            "rules[0].relax[0].require.skills.technical",
            "no agent has skill 'technical': nobody is eligible under this requirement",
            "unknown_agent_skill",
        ),
    ]


def test_agent_skills_are_only_checked_when_the_agents_are_known() -> None:
    assert _lint(TECHNICAL, catch_all=False) == []
    assert _lint(TECHNICAL, catch_all=False, agent_skills={"billing", "technical"}) == []


def test_rules_without_a_catch_all_are_reported_at_the_last_rule() -> None:
    rules = """\
  - name: billing
    match: {inquiry_type: billing}
    fallback: {action: keep_waiting}
  - name: sales
    match: {inquiry_type: sales}
    fallback: {action: keep_waiting}
"""
    assert _lint(rules, catch_all=False) == [
        _warning(
            13,
            5,
            "rules[1]",
            "no rule has an empty match: contacts that match no rule get the implicit default "
            "(any agent speaking the contact's language, no skills required); add a last rule "
            "without `match` to decide what they get",
            "missing_catch_all",
        )
    ]


def test_the_demo_rules_have_no_warnings() -> None:
    validated = validate_rules_text(DEMO.read_text(), file=str(DEMO))
    skills = validated.ruleset.vocabularies.skills
    assert lint_rules(validated) == []
    assert lint_rules(validated, agent_skills=skills) == []
