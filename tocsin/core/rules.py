"""Which progress rule a step's outcome fires (SPEC 4.2 step 5, with the conditions of 11.1). Pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tocsin.core.conditions import ConditionError, evaluate_condition
from tocsin.core.definitions import OnOutcomeRule, Step, StopRule, WaitUntilRule
from tocsin.core.outcome import Branchable, NotBranchable


@dataclass(frozen=True)
class Hold:
    """Nothing to do yet; `reason` is the noop reason."""

    reason: str


@dataclass(frozen=True)
class Advance:
    rule: OnOutcomeRule
    outcome: Branchable


@dataclass(frozen=True)
class Halt:
    rule: StopRule
    outcome: Branchable


@dataclass(frozen=True)
class EnterWait:
    rule: WaitUntilRule
    outcome: Branchable


@dataclass(frozen=True)
class Complete:
    outcome: Branchable


@dataclass(frozen=True)
class RuleFailed:
    """The `when` of `rule` failed to evaluate: the run stops with rule_failed (error `evaluation_failed`)."""

    rule: OnOutcomeRule | StopRule | WaitUntilRule


Decision = Hold | Advance | Halt | EnterWait | Complete | RuleFailed


def _applies(rule: OnOutcomeRule | StopRule | WaitUntilRule, context: Mapping[str, Any]) -> bool:
    """Whether the rule's `when` holds (a rule without one always applies); ConditionError when it fails."""
    return rule.when is None or evaluate_condition(rule.when, context)


def decide(step: Step, outcome: Branchable | NotBranchable, context: Mapping[str, Any]) -> Decision:
    """The decision for `step` on `outcome`; conditions are evaluated against the render `context`.

    Rules naming the outcome are tried in definition order, a rule whose `when` is false passed over; on a
    terminal outcome the wait_until rules are tried next, in order; when none fires the step completes (a
    temporary failure is held: the delivery is still being retried).
    """
    if isinstance(outcome, NotBranchable):
        if not step.progress:
            return Hold("no_progress_rules")
        if step.wait_rule is not None:
            return Hold("prior_delivery_not_converged")
        return Hold("no_matching_progress_rule")
    candidates: list[OnOutcomeRule | StopRule | WaitUntilRule] = [
        rule for rule in step.progress if isinstance(rule, OnOutcomeRule | StopRule) and rule.outcome == outcome.outcome
    ]
    if outcome.terminal:
        candidates.extend(step.wait_rules)
    for rule in candidates:
        try:
            if not _applies(rule, context):
                continue
        except ConditionError:
            return RuleFailed(rule)
        if isinstance(rule, OnOutcomeRule):
            return Advance(rule, outcome)
        if isinstance(rule, StopRule):
            return Halt(rule, outcome)
        return EnterWait(rule, outcome)
    return Complete(outcome) if outcome.terminal else Hold("awaiting_terminal_outcome")
