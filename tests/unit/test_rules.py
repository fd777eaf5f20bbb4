"""decide() (SPEC 4.2 step 5): which rule a step's outcome fires. Pure: steps and outcomes built in memory."""

from __future__ import annotations

from typing import Any

import pytest
from journeys import on, step, stop, wait

from tocsin.core.definitions import OnOutcomeRule, Step, StopRule, WaitUntilRule
from tocsin.core.outcome import Branchable, NotBranchable
from tocsin.core.rules import Advance, Complete, EnterWait, Halt, Hold, decide

EVIDENCE = {
    "delivery_status": "cancelled",
    "suppression_reason": "bounced",
    "attempt_outcome": "bounced",
    "attempt_error_class": "bounced",
}
PENDING = NotBranchable(
    {"delivery_status": "pending", "suppression_reason": None, "attempt_outcome": None, "attempt_error_class": None}
)
TERMINAL_OUTCOMES = ["delivered", "suppressed", "retries_exhausted", "permanent_failure", "bounced"]


def make_step(*progress: dict[str, Any]) -> Step:
    return Step.model_validate(step("s", "email", *progress))


def branch(outcome: str, *, terminal: bool = True) -> Branchable:
    return Branchable(outcome, terminal, dict(EVIDENCE))  # type: ignore[arg-type]


# --- not branchable ------------------------------------------------------------------------------------


def test_not_branchable_without_rules_holds_no_progress_rules() -> None:
    assert decide(make_step(), PENDING, {}) == Hold("no_progress_rules")


@pytest.mark.parametrize(
    "progress",
    [
        [wait("t", 60)],
        [on("bounced", "t"), wait("t", 60)],
        [stop("delivered"), on("bounced", "t"), wait("t", 60, anchor="step_activated_at")],
    ],
)
def test_not_branchable_with_a_wait_rule_holds_prior_delivery_not_converged(progress: list[dict[str, Any]]) -> None:
    assert decide(make_step(*progress), PENDING, {}) == Hold("prior_delivery_not_converged")


@pytest.mark.parametrize(
    "progress",
    [[on("bounced", "t")], [stop("delivered")], [on("temporary_failure", "t"), stop("bounced")]],
)
def test_not_branchable_without_a_wait_rule_holds_no_matching_progress_rule(progress: list[dict[str, Any]]) -> None:
    assert decide(make_step(*progress), PENDING, {}) == Hold("no_matching_progress_rule")


# --- an outcome rule names the outcome -----------------------------------------------------------------


@pytest.mark.parametrize("outcome", TERMINAL_OUTCOMES)
def test_on_outcome_rule_naming_the_outcome_advances(outcome: str) -> None:
    the_step = make_step(wait("w", 60), on(outcome, "next"), stop("temporary_failure"))
    decision = decide(the_step, branch(outcome), {})
    assert decision == Advance(OnOutcomeRule(kind="on_outcome", outcome=outcome, to_step="next"), branch(outcome))


@pytest.mark.parametrize("outcome", TERMINAL_OUTCOMES)
def test_stop_rule_naming_the_outcome_halts(outcome: str) -> None:
    the_step = make_step(wait("w", 60), stop(outcome))
    assert decide(the_step, branch(outcome), {}) == Halt(StopRule(kind="stop", outcome=outcome), branch(outcome))


def test_the_first_rule_naming_the_outcome_wins() -> None:
    # Registration forbids two unconditioned rules for one outcome; decide() still takes the first in order.
    first_on = make_step(on("bounced", "a"), stop("bounced"), on("bounced", "b"))
    assert decide(first_on, branch("bounced"), {}) == Advance(
        OnOutcomeRule(kind="on_outcome", outcome="bounced", to_step="a"), branch("bounced")
    )
    first_stop = make_step(stop("bounced"), on("bounced", "a"))
    assert decide(first_stop, branch("bounced"), {}) == Halt(
        StopRule(kind="stop", outcome="bounced"), branch("bounced")
    )


def test_an_outcome_rule_wins_over_the_wait_rule_listed_before_it() -> None:
    the_step = make_step(wait("w", 60), on("delivered", "next"))
    assert isinstance(decide(the_step, branch("delivered"), {}), Advance)


def test_a_rule_naming_temporary_failure_fires_on_the_non_terminal_outcome() -> None:
    failed = branch("temporary_failure", terminal=False)
    assert decide(make_step(wait("w", 60), on("temporary_failure", "sms")), failed, {}) == Advance(
        OnOutcomeRule(kind="on_outcome", outcome="temporary_failure", to_step="sms"), failed
    )
    assert decide(make_step(stop("temporary_failure")), failed, {}) == Halt(
        StopRule(kind="stop", outcome="temporary_failure"), failed
    )


# --- no rule names the outcome -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "progress",
    [[], [wait("w", 60)], [on("bounced", "t")], [wait("w", 60), on("retries_exhausted", "t"), stop("bounced")]],
)
def test_unnamed_temporary_failure_holds_awaiting_terminal_outcome(progress: list[dict[str, Any]]) -> None:
    failed = branch("temporary_failure", terminal=False)
    assert decide(make_step(*progress), failed, {}) == Hold("awaiting_terminal_outcome")


@pytest.mark.parametrize("outcome", TERMINAL_OUTCOMES)
def test_unnamed_terminal_outcome_enters_the_wait(outcome: str) -> None:
    the_step = make_step(
        on("temporary_failure", "x"), wait("w", 90, anchor="step_activated_at", cancel_signals=["read"])
    )
    assert decide(the_step, branch(outcome), {}) == EnterWait(
        WaitUntilRule(
            kind="wait_until", anchor="step_activated_at", delay_seconds=90, to_step="w", cancel_signals=("read",)
        ),
        branch(outcome),
    )


@pytest.mark.parametrize("outcome", TERMINAL_OUTCOMES)
def test_unnamed_terminal_outcome_without_a_wait_completes(outcome: str) -> None:
    assert decide(make_step(), branch(outcome), {}) == Complete(branch(outcome))


@pytest.mark.parametrize("outcome", ["delivered", "suppressed"])
def test_rules_for_other_outcomes_do_not_stop_completion(outcome: str) -> None:
    the_step = make_step(on("bounced", "x"), stop("permanent_failure"), on("retries_exhausted", "y"))
    assert decide(the_step, branch(outcome), {}) == Complete(branch(outcome))
