"""A rules document is accepted, or rejected with errors naming file, line, column and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from routing_rules.problems import RuleProblem, RulesInvalid
from routing_rules.validation import validate_rules_text

EXAMPLES = Path(__file__).resolve().parent.parent / "routing_rules" / "examples"
FILE = "rules.yaml"

# Line numbers below refer to this document; each test changes one thing in it.
BASE = """\
schema_version: 1
vocabularies:
  segments: [consumer, enterprise]
  inquiry_types: [billing, technical]
  journey_stages: [onboarding, established]
  channels: [voice, chat]
  languages: [en, es]
  skills: [billing, technical]
  attributes:
    vip: boolean
    tenure_days: number
rules:
  - name: vip
    match:
      attributes:
        vip: true
    priority: 90
    fallback:
      action: keep_waiting
  - name: billing
    match:
      segment: consumer
      inquiry_type: billing
    require:
      skills: {billing: 2}
    relax:
      - name: any-billing
        after_wait_seconds: 60
        require:
          skills: {billing: 1}
    fallback:
      action: any_agent
      after_wait_seconds: 300
  - name: default
    fallback:
      action: keep_waiting
"""


def _edited(old: str, new: str) -> str:
    assert BASE.count(old) == 1, f"{old!r} must occur exactly once in BASE"
    return BASE.replace(old, new)


def _problems(text: str) -> list[RuleProblem]:
    with pytest.raises(RulesInvalid) as caught:
        validate_rules_text(text, file=FILE)
    return caught.value.problems


def _error(line: int, column: int, field: str, message: str, code: str) -> RuleProblem:
    return RuleProblem(FILE, line, column, field, message, severity="error", code=code)


def test_every_example_file_validates() -> None:
    examples = sorted(EXAMPLES.glob("*.yaml"))
    assert [path.name for path in examples] == ["demo.yaml"]
    for path in examples:
        validated = validate_rules_text(path.read_text(), file=str(path))
        assert validated.file == str(path)
        assert validated.ruleset.rules[-1].name == "default"


def test_the_base_document_used_by_these_tests_is_valid() -> None:
    validated = validate_rules_text(BASE, file=FILE)
    assert [rule.name for rule in validated.ruleset.rules] == ["vip", "billing", "default"]


def test_malformed_yaml_is_reported_at_its_line_and_column() -> None:
    text = _edited("      inquiry_type: billing\n", "      inquiry_type: billing: x\n")
    assert _problems(text) == [
        _error(23, 28, "", "YAML syntax: mapping values are not allowed here", "yaml")
    ]


def test_a_duplicate_key_is_an_error_at_its_second_occurrence() -> None:
    text = _edited("    priority: 90\n", "    priority: 90\n    priority: 80\n")
    assert _problems(text) == [
        _error(18, 5, "rules[0].priority", "duplicate key 'priority'", "yaml")
    ]


def test_an_unknown_field_names_the_misspelt_key() -> None:
    text = _edited("\n    require:\n", "\n    requires:\n")
    assert _problems(text) == [
        _error(
            24,
            5,
            "rules[1].requires",
            "unknown field (not part of the rules schema)",
            "extra_forbidden",
        )
    ]


def test_a_value_of_the_wrong_type_names_the_field() -> None:
    text = _edited("    priority: 90\n", "    priority: high\n")
    assert _problems(text) == [
        _error(17, 5, "rules[0].priority", "Input should be a valid integer", "int_type")
    ]


def test_a_skill_level_above_five_is_out_of_range() -> None:
    text = _edited("{billing: 2}", "{billing: 7}")
    assert _problems(text) == [
        _error(
            25,
            16,
            "rules[1].require.skills.billing",
            "Input should be less than or equal to 5",
            "less_than_equal",
        )
    ]


def test_an_unknown_skill_names_the_typo_and_the_known_skills() -> None:
    text = _edited("{billing: 2}", "{biling: 2}")
    assert _problems(text) == [
        _error(
            25,
            16,
            "rules[1].require.skills.biling",
            "unknown skill 'biling'; known: billing, technical",
            "unknown_name",
        )
    ]


def test_an_unknown_segment_is_an_error_at_the_match_field() -> None:
    text = _edited("segment: consumer", "segment: consumr")
    assert _problems(text) == [
        _error(
            22,
            7,
            "rules[1].match.segment",
            "unknown segment 'consumr'; known: consumer, enterprise",
            "unknown_name",
        )
    ]


def test_an_unknown_segment_in_a_list_points_at_the_list_item() -> None:
    text = _edited("segment: consumer", "segment: [consumer, smb]")
    assert _problems(text) == [
        _error(
            22,
            27,
            "rules[1].match.segment[1]",
            "unknown segment 'smb'; known: consumer, enterprise",
            "unknown_name",
        )
    ]


def test_an_undeclared_attribute_is_an_error() -> None:
    text = _edited("        vip: true\n", "        vipp: true\n")
    assert _problems(text) == [
        _error(
            16,
            9,
            "rules[0].match.attributes.vipp",
            "unknown attribute 'vipp'; declare it under vocabularies.attributes (vip, tenure_days)",
            "unknown_name",
        )
    ]


def test_an_attribute_value_of_the_wrong_type_is_an_error() -> None:
    text = _edited("        vip: true\n", '        vip: "yes"\n')
    assert _problems(text) == [
        _error(
            16,
            9,
            "rules[0].match.attributes.vip",
            "attribute 'vip' is a boolean; 'yes' is not",
            "type_mismatch",
        )
    ]


def test_a_numeric_comparison_on_a_boolean_attribute_is_an_error() -> None:
    text = _edited("        vip: true\n", "        vip: {gt: 0}\n")
    assert _problems(text) == [
        _error(
            16,
            9,
            "rules[0].match.attributes.vip",
            "attribute 'vip' is a boolean; lt/lte/gt/gte need a number",
            "type_mismatch",
        )
    ]


def test_two_rules_with_the_same_name_are_an_error_at_the_second() -> None:
    text = _edited("  - name: default\n", "  - name: billing\n")
    assert _problems(text) == [
        _error(
            34,
            5,
            "rules[2].name",
            "rule name 'billing' is already used by rules[1]",
            "duplicate",
        )
    ]


def test_a_relax_stage_without_a_trigger_is_an_error() -> None:
    text = _edited("        after_wait_seconds: 60\n", "")
    assert _problems(text) == [
        _error(
            27,
            9,
            "rules[1].relax[0]",
            "a stage needs after_wait_seconds or no_eligible_free_seconds",
            "missing_trigger",
        )
    ]


def test_every_error_in_a_document_is_reported_at_once() -> None:
    text = _edited("{billing: 2}", "{biling: 2}").replace("  - name: default\n", "  - name: vip\n")
    assert [(p.line, p.field, p.code) for p in _problems(text)] == [
        (25, "rules[1].require.skills.biling", "unknown_name"),
        (34, "rules[2].name", "duplicate"),
    ]
