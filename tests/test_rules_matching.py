"""Which rule a contact gets, and how its requirements relax while it waits."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from routing_rules.compiled import (
    IMPLICIT_RULE_NAME,
    CompiledRule,
    CompiledRules,
    ContactFacts,
    StagePlan,
    compile_rules,
)
from routing_rules.validation import validate_rules_text

DEMO = Path(__file__).resolve().parent.parent / "routing_rules" / "examples" / "demo.yaml"

ATTRIBUTE_RULES = """\
vocabularies:
  segments: [consumer]
  inquiry_types: [billing]
  journey_stages: [established]
  channels: [voice]
  languages: [en]
  skills: [billing]
  attributes: {plan: string, tenure_days: number, vip: boolean}
rules:
  - name: vip
    match: {attributes: {vip: true}}
    fallback: {action: keep_waiting}
  - name: gold
    match: {attributes: {plan: {eq: gold}}}
    fallback: {action: keep_waiting}
  - name: silver-or-bronze
    match: {attributes: {plan: [silver, bronze]}}
    fallback: {action: keep_waiting}
  - name: loyal
    match: {attributes: {tenure_days: {gte: 365, lt: 3650}}}
    fallback: {action: keep_waiting}
  - name: not-trial
    match: {attributes: {plan: {ne: trial}}}
    fallback: {action: keep_waiting}
"""


def _compiled(text: str) -> CompiledRules:
    return compile_rules(validate_rules_text(text).ruleset)


def _demo() -> CompiledRules:
    return _compiled(DEMO.read_text())


def _contact(
    *,
    segment: str = "consumer",
    inquiry_type: str = "billing",
    journey_stage: str = "established",
    language: str = "en",
    attributes: Mapping[str, object] | None = None,
) -> ContactFacts:
    return ContactFacts(
        channel="voice",
        segment=segment,
        inquiry_type=inquiry_type,
        journey_stage=journey_stage,
        language=language,
        attributes=attributes or {},
    )


def _rule_name(rules: CompiledRules, contact: ContactFacts) -> str:
    return rules.rule_for(contact).name


def _required(rules: CompiledRules, stage: StagePlan) -> dict[str, int]:
    return {
        rules.skills[int(skill)]: int(level)
        for skill, level in zip(stage.required_skills, stage.required_levels, strict=True)
    }


def test_the_first_matching_rule_wins() -> None:
    rules = _demo()
    # An enterprise customer who wants to cancel matches both rules; enterprise comes first.
    assert _rule_name(rules, _contact(segment="enterprise", inquiry_type="cancellation")) == (
        "enterprise"
    )
    assert _rule_name(rules, _contact(inquiry_type="cancellation")) == "cancellation"
    assert _rule_name(rules, _contact(segment="enterprise", attributes={"vip": True})) == "vip"


def test_a_list_in_a_match_accepts_any_of_its_values() -> None:
    rules = _demo()
    for inquiry in ("setup", "technical", "billing"):
        contact = _contact(journey_stage="onboarding", inquiry_type=inquiry)
        assert _rule_name(rules, contact) == "onboarding"
    assert _rule_name(rules, _contact(journey_stage="onboarding", inquiry_type="sales")) == "sales"


def test_an_onboarding_contact_first_requires_an_onboarding_expert() -> None:
    rules = _demo()
    rule = rules.rule_for(_contact(journey_stage="onboarding", inquiry_type="setup"))
    assert _required(rules, rule.stages[0]) == {"onboarding": 3}
    assert rule.stages[0].language is True


def test_spanish_speakers_are_routed_by_their_language() -> None:
    rules = _demo()
    assert _rule_name(rules, _contact(language="es")) == "spanish-billing"
    assert _rule_name(rules, _contact(language="es", inquiry_type="setup")) == "spanish-technical"
    assert _rule_name(rules, _contact(language="es", inquiry_type="sales")) == "spanish-general"
    assert _rule_name(rules, _contact(language="en", inquiry_type="sales")) == "sales"


def test_attribute_equality_membership_and_numeric_ranges() -> None:
    rules = _compiled(ATTRIBUTE_RULES)
    assert _rule_name(rules, _contact(attributes={"plan": "gold"})) == "gold"
    assert _rule_name(rules, _contact(attributes={"plan": "bronze"})) == "silver-or-bronze"
    assert _rule_name(rules, _contact(attributes={"plan": "trial", "tenure_days": 365})) == "loyal"
    assert _rule_name(rules, _contact(attributes={"plan": "trial", "tenure_days": 400.5})) == (
        "loyal"
    )
    # Outside [365, 3650): neither bound is stretched.
    assert _rule_name(rules, _contact(attributes={"plan": "trial", "tenure_days": 364})) == (
        IMPLICIT_RULE_NAME
    )
    assert _rule_name(rules, _contact(attributes={"plan": "trial", "tenure_days": 3650})) == (
        IMPLICIT_RULE_NAME
    )
    assert _rule_name(rules, _contact(attributes={"plan": "platinum"})) == "not-trial"


def test_a_boolean_rule_does_not_match_a_number() -> None:
    rules = _compiled(ATTRIBUTE_RULES)
    assert _rule_name(rules, _contact(attributes={"vip": True})) == "vip"
    # In Python True == 1; a contact sending `vip: 1` must still not count as a VIP.
    assert _rule_name(rules, _contact(attributes={"vip": 1})) == IMPLICIT_RULE_NAME
    # ...and a boolean is not a number of days.
    assert _rule_name(rules, _contact(attributes={"tenure_days": True})) == IMPLICIT_RULE_NAME


def test_a_contact_without_the_attribute_does_not_match_even_a_not_equal_test() -> None:
    rules = _compiled(ATTRIBUTE_RULES)
    assert _rule_name(rules, _contact()) == IMPLICIT_RULE_NAME
    assert _rule_name(rules, _contact(attributes={"vip": False})) == IMPLICIT_RULE_NAME


def test_a_contact_that_matches_no_rule_gets_any_agent_speaking_its_language() -> None:
    rules = _compiled(ATTRIBUTE_RULES)
    rule = rules.rule_for(_contact())
    assert rule is rules.implicit
    assert rule.name == IMPLICIT_RULE_NAME
    assert len(rule.stages) == 1
    assert _required(rules, rule.stages[0]) == {}
    assert rule.stages[0].language is True


def _onboarding(rules: CompiledRules) -> CompiledRule:
    rule = rules.rule_named("onboarding")
    assert rule is not None
    return rule


def test_the_onboarding_ladder_relaxes_step_by_step() -> None:
    rules = _demo()
    rule = _onboarding(rules)
    assert [stage.name for stage in rule.stages] == [
        "base",
        "any-onboarding",
        "technical-support",
        "fallback",
    ]
    assert [_required(rules, stage) for stage in rule.stages] == [
        {"onboarding": 3},
        {"onboarding": 1},
        {"technical": 1},
        {},
    ]


def test_total_wait_moves_a_contact_up_the_ladder() -> None:
    rule = _onboarding(_demo())
    assert rule.next_stage(0, wait_seconds=59, stalled_seconds=0) == 0
    assert rule.next_stage(0, wait_seconds=60, stalled_seconds=0) == 1
    assert rule.next_stage(1, wait_seconds=179, stalled_seconds=0) == 1
    assert rule.next_stage(1, wait_seconds=180, stalled_seconds=0) == 2
    assert rule.next_stage(2, wait_seconds=600, stalled_seconds=0) == 3


def test_a_contact_evaluated_late_climbs_every_stage_its_wait_allows() -> None:
    rule = _onboarding(_demo())
    assert rule.next_stage(0, wait_seconds=200, stalled_seconds=0) == 2
    assert rule.next_stage(0, wait_seconds=700, stalled_seconds=0) == 3


def test_no_eligible_free_agent_moves_a_contact_to_the_next_stage() -> None:
    rule = _onboarding(_demo())
    assert rule.next_stage(1, wait_seconds=100, stalled_seconds=44) == 1
    assert rule.next_stage(1, wait_seconds=100, stalled_seconds=45) == 2


def test_stall_time_under_one_stage_does_not_skip_the_next() -> None:
    rule = _onboarding(_demo())
    # Waiting 100 s enters any-onboarding; the stall was measured under the base stage, so it
    # says nothing about onboarding agents of any level and cannot trigger technical-support.
    assert rule.next_stage(0, wait_seconds=100, stalled_seconds=999) == 1


def test_the_fallback_stage_has_no_skill_requirement() -> None:
    rules = _demo()
    for rule in rules.rules:
        if rules.ruleset.rules[rule.index].fallback.action == "any_agent":
            fallback = rule.stages[-1]
            assert fallback.name == "fallback"
            assert _required(rules, fallback) == {}
            assert fallback.language is True
        else:
            assert rule.stages[-1].name != "fallback"


def test_the_last_stage_is_final() -> None:
    rule = _onboarding(_demo())
    assert rule.next_stage(3, wait_seconds=10_000, stalled_seconds=10_000) == 3
