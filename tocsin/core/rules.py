"""Which progress rule a step's outcome fires (SPEC 4.2 step 5). Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass

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


Decision = Hold | Advance | Halt | EnterWait | Complete


def decide(step: Step, outcome: Branchable | NotBranchable) -> Decision:
    if isinstance(outcome, NotBranchable):
        if not step.progress:
            return Hold("no_progress_rules")
        if step.wait_rule is not None:
            return Hold("prior_delivery_not_converged")
        return Hold("no_matching_progress_rule")
    rule = step.rule_for(outcome.outcome)
    if isinstance(rule, OnOutcomeRule):
        return Advance(rule, outcome)
    if isinstance(rule, StopRule):
        return Halt(rule, outcome)
    if not outcome.terminal:
        return Hold("awaiting_terminal_outcome")
    if step.wait_rule is not None:
        return EnterWait(step.wait_rule, outcome)
    return Complete(outcome)
