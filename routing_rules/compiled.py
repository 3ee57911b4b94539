"""Rules compiled for fast matching: vocabulary indices and numpy requirement vectors.

Stage 0 of a rule is its own `require`; stages 1..k are its `relax` ladder; a fallback with
action `any_agent` is one more stage that requires no skills. A contact moves up the ladder
one stage at a time, each move triggered by total wait or by how long no agent eligible under
its current stage has had free capacity.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeGuard

import numpy as np
import numpy.typing as npt

from routing_rules.schema import (
    MAX_SKILL_LEVEL,
    AttributeTest,
    Match,
    Preference,
    Requirement,
    Rule,
    RuleSet,
    Scoring,
)

IMPLICIT_RULE_NAME = "(no rule matched: implicit default)"


@dataclass(frozen=True, slots=True)
class ContactFacts:
    """What routing knows about a contact: the vocabulary fields and free attributes."""

    channel: str
    segment: str
    inquiry_type: str
    journey_stage: str
    language: str
    attributes: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StagePlan:
    """One rung of a rule's ladder, with its requirements as skill-index arrays."""

    name: str
    after_wait_seconds: float | None
    no_eligible_free_seconds: float | None
    required_skills: npt.NDArray[np.intp]
    required_levels: npt.NDArray[np.int8]
    preferred_skills: npt.NDArray[np.intp]
    preferred_weights: npt.NDArray[np.float64]
    language: bool
    # The same over the whole skill vocabulary, so that scoring is one matrix product:
    # minimum level per skill (0: not required), 1/k on the k required skills, and the
    # normalised preference weights.
    minimum_levels: npt.NDArray[np.int8]
    fit_vector: npt.NDArray[np.float64]
    preference_vector: npt.NDArray[np.float64]
    # skill_fit · fit_vector + preferred · preference_vector, over MAX_SKILL_LEVEL: the whole
    # skill part of an agent's score is `skills @ score_vector`.
    score_vector: npt.NDArray[np.float32]
    # The two weighted parts side by side (skills × 2): `skills @ term_matrix` gives the
    # skill-fit and preference terms of an explanation in one product.
    term_matrix: npt.NDArray[np.float64]

    def triggered(self, *, wait_seconds: float, stalled_seconds: float) -> bool:
        """Whether this stage starts, given total wait and time without an eligible free agent."""
        if self.after_wait_seconds is not None and wait_seconds >= self.after_wait_seconds:
            return True
        return (
            self.no_eligible_free_seconds is not None
            and stalled_seconds >= self.no_eligible_free_seconds
        )


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule ready to match contacts and to say what each stage requires."""

    index: int
    name: str
    priority: int
    match: Match
    stages: tuple[StagePlan, ...]

    def matches(self, contact: ContactFacts) -> bool:
        """Whether every condition of the rule's match holds for `contact`."""
        return self.matches_fields(contact) and self.matches_attributes(contact)

    def matches_fields(self, contact: ContactFacts) -> bool:
        """Whether the vocabulary fields (segment, inquiry type, ...) match."""
        m = self.match
        for wanted, actual in (
            (m.segment, contact.segment),
            (m.inquiry_type, contact.inquiry_type),
            (m.journey_stage, contact.journey_stage),
            (m.language, contact.language),
            (m.channel, contact.channel),
        ):
            if wanted is None:
                continue
            if isinstance(wanted, str):
                if actual != wanted:
                    return False
            elif actual not in wanted:
                return False
        return True

    def matches_attributes(self, contact: ContactFacts) -> bool:
        """Whether every attribute test of the match holds."""
        for name, test in self.match.attributes.items():
            if not attribute_holds(test, contact.attributes.get(name, _MISSING)):
                return False
        return True

    def next_stage(self, stage: int, *, wait_seconds: float, stalled_seconds: float) -> int:
        """The stage after applying every trigger that holds now (at most one stalled step)."""
        if stage + 1 < len(self.stages) and self.stages[stage + 1].triggered(
            wait_seconds=wait_seconds, stalled_seconds=stalled_seconds
        ):
            stage += 1
            # Having just entered, the new stage has not stalled yet: only wait can chain.
            while stage + 1 < len(self.stages) and self.stages[stage + 1].triggered(
                wait_seconds=wait_seconds, stalled_seconds=0.0
            ):
                stage += 1
        return stage

    def next_check_time(
        self,
        stage: int,
        *,
        enqueued_at: float,
        stage_entered_at: float,
        last_eligible_free_at: float,
    ) -> float:
        """The earliest time the next stage could start (inf at the end of the ladder).

        The stall clock restarts whenever an eligible agent is seen free, so the time given
        here can move later; checking too early is harmless, never too late.
        """
        if stage + 1 >= len(self.stages):
            return math.inf
        trigger = self.stages[stage + 1]
        when = math.inf
        if trigger.after_wait_seconds is not None:
            when = enqueued_at + trigger.after_wait_seconds
        if trigger.no_eligible_free_seconds is not None:
            stalled_since = max(stage_entered_at, last_eligible_free_at)
            when = min(when, stalled_since + trigger.no_eligible_free_seconds)
        return when


_MISSING = object()


def attribute_holds(test: object, value: object) -> bool:
    """Whether a contact attribute value satisfies a rule's attribute test."""
    if value is _MISSING:
        return False
    if isinstance(test, AttributeTest):
        if test.eq is not None and not _same(value, test.eq):
            return False
        if test.ne is not None and _same(value, test.ne):
            return False
        if test.in_ is not None and not any(_same(value, v) for v in test.in_):
            return False
        if test.not_in is not None and any(_same(value, v) for v in test.not_in):
            return False
        for bound, holds in (
            (test.lt, operator.lt),
            (test.lte, operator.le),
            (test.gt, operator.gt),
            (test.gte, operator.ge),
        ):
            if bound is None:
                continue
            if not _is_number(value) or not holds(value, bound):
                return False
        return True
    if isinstance(test, list):
        return any(_same(value, v) for v in test)
    return _same(value, test)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same(a: object, b: object) -> bool:
    # True == 1 in Python; a rule that says `vip: true` must not match `vip: 1`.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


@dataclass(frozen=True)
class CompiledRules:
    """A whole validated rule set, indexed for dispatch."""

    ruleset: RuleSet
    version: int
    checksum: str
    skills: tuple[str, ...]
    channels: tuple[str, ...]
    languages: tuple[str, ...]
    rules: tuple[CompiledRule, ...]
    implicit: CompiledRule
    # Points that one step of tier precedence is worth: more than any match-quality difference.
    precedence_points: float = 0.0
    # Points for serving a contact at all: more than any precedence plus match quality, so
    # the assignment serves as many contacts as capacity allows before anything else.
    base_points: float = 100.0

    def rule_for(self, contact: ContactFacts) -> CompiledRule:
        """The first rule that matches, or the implicit default when none does.

        Which rules can match depends on five vocabulary fields, so the candidates for each
        combination are listed once (cut after the first one without attribute tests) and
        only attribute tests run per contact.
        """
        key = (
            contact.segment,
            contact.inquiry_type,
            contact.journey_stage,
            contact.language,
            contact.channel,
        )
        candidates = self._candidates.get(key)
        if candidates is None:
            found = []
            for rule in self.rules:
                if rule.matches_fields(contact):
                    found.append(rule)
                    if not rule.match.attributes:
                        break
            candidates = self._candidates[key] = tuple(found)
        for rule in candidates:
            if rule.matches_attributes(contact):
                return rule
        return self.implicit

    @property
    def _candidates(self) -> dict[tuple[str, ...], tuple[CompiledRule, ...]]:
        cached: dict[tuple[str, ...], tuple[CompiledRule, ...]] | None = self.__dict__.get(
            "_candidates_cache"
        )
        if cached is None:
            cached = {}
            object.__setattr__(self, "_candidates_cache", cached)
        return cached

    def rule_named(self, name: str) -> CompiledRule | None:
        """The compiled rule with this name (the implicit default included)."""
        return self._by_name.get(name)

    @property
    def _by_name(self) -> dict[str, CompiledRule]:
        cached: dict[str, CompiledRule] | None = self.__dict__.get("_by_name_cache")
        if cached is None:
            cached = {rule.name: rule for rule in (*self.rules, self.implicit)}
            object.__setattr__(self, "_by_name_cache", cached)
        return cached


MIN_BASE_POINTS = 100.0
MAX_PRECEDENCE = 2  # see sla.precedence: 0 normal, 1 tier first, 2 starvation guard


def score_ceiling(scoring: Scoring) -> float:
    """The largest match score (without base and precedence) the weights allow."""
    return (
        scoring.priority * 100
        + scoring.wait * scoring.wait_cap_minutes
        + scoring.skill_fit
        + scoring.preferred
        + scoring.idle * scoring.idle_cap_minutes
        + scoring.performance
    )


def compile_rules(ruleset: RuleSet, *, version: int = 0, checksum: str = "") -> CompiledRules:
    """Index a validated rule set for dispatch."""
    vocab = ruleset.vocabularies
    skill_index = {name: i for i, name in enumerate(vocab.skills)}
    compiled = tuple(
        _compile_rule(index, rule, skill_index, ruleset.scoring)
        for index, rule in enumerate(ruleset.rules)
    )
    ceiling = score_ceiling(ruleset.scoring)
    precedence = float(math.floor(ceiling) + 1)
    implicit = CompiledRule(
        index=-1,
        name=IMPLICIT_RULE_NAME,
        priority=0,
        match=Match(),
        stages=(
            _plan("default", None, None, Requirement(), Preference(), skill_index, ruleset.scoring),
        ),
    )
    return CompiledRules(
        ruleset=ruleset,
        version=version,
        checksum=checksum,
        skills=tuple(vocab.skills),
        channels=tuple(vocab.channels),
        languages=tuple(vocab.languages),
        rules=compiled,
        implicit=implicit,
        precedence_points=precedence,
        base_points=max(MIN_BASE_POINTS, MAX_PRECEDENCE * precedence + ceiling + 1.0),
    )


def _compile_rule(
    index: int, rule: Rule, skill_index: dict[str, int], scoring: Scoring
) -> CompiledRule:
    stages = [_plan("base", None, None, rule.require, rule.prefer, skill_index, scoring)]
    preference = rule.prefer
    for stage in rule.relax:
        preference = stage.prefer if stage.prefer is not None else preference
        stages.append(
            _plan(
                stage.name,
                stage.after_wait_seconds,
                stage.no_eligible_free_seconds,
                stage.require,
                preference,
                skill_index,
                scoring,
            )
        )
    if rule.fallback.action == "any_agent":
        stages.append(
            _plan(
                "fallback",
                rule.fallback.after_wait_seconds,
                rule.fallback.no_eligible_free_seconds,
                Requirement(skills={}, language=rule.fallback.language),
                preference,
                skill_index,
                scoring,
            )
        )
    return CompiledRule(index, rule.name, rule.priority, rule.match, tuple(stages))


def _plan(
    name: str,
    after: int | None,
    stalled: int | None,
    require: Requirement,
    prefer: Preference,
    skill_index: dict[str, int],
    scoring: Scoring,
) -> StagePlan:
    weights = np.array(list(prefer.skills.values()), dtype=np.float64)
    total = weights.sum()
    normalised = weights / total if total > 0 else np.zeros_like(weights)
    required = np.array([skill_index[s] for s in require.skills], dtype=np.intp)
    levels = np.array(list(require.skills.values()), dtype=np.int8)
    preferred = np.array([skill_index[s] for s in prefer.skills], dtype=np.intp)
    n_skills = len(skill_index)
    minimum = np.zeros(n_skills, dtype=np.int8)
    minimum[required] = levels
    fit = np.zeros(n_skills, dtype=np.float64)
    if required.size:
        fit[required] = 1.0 / required.size
    preference = np.zeros(n_skills, dtype=np.float64)
    np.add.at(preference, preferred, normalised)
    return StagePlan(
        name=name,
        after_wait_seconds=None if after is None else float(after),
        no_eligible_free_seconds=None if stalled is None else float(stalled),
        required_skills=required,
        required_levels=levels,
        preferred_skills=preferred,
        preferred_weights=normalised,
        language=require.language,
        minimum_levels=minimum,
        fit_vector=fit,
        preference_vector=preference,
        score_vector=(
            (fit * scoring.skill_fit + preference * scoring.preferred) / MAX_SKILL_LEVEL
        ).astype(np.float32),
        term_matrix=np.stack([fit * scoring.skill_fit, preference * scoring.preferred], axis=1)
        / MAX_SKILL_LEVEL,
    )
