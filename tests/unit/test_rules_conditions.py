"""decide() with conditions (SPEC 11.1): conditioned rules are tried in order, a false `when` is passed over,
one that fails to evaluate is RuleFailed. Pure: steps and outcomes built in memory."""

from __future__ import annotations

import pytest

from tocsin.core.definitions import OnOutcomeRule, Step, StopRule, WaitUntilRule
from tocsin.core.outcome import Branchable, NotBranchable
from tocsin.core.rules import Advance, Complete, EnterWait, Halt, Hold, RuleFailed, decide
from tocsin.core.vocabulary import Outcome

EVIDENCE = {
    "delivery_status": "succeeded",
    "suppression_reason": None,
    "attempt_outcome": None,
    "attempt_error_class": None,
}
DELIVERED = Branchable("delivered", True, EVIDENCE)
FAILED = Branchable("temporary_failure", False, EVIDENCE)
CONTEXT = {"plan": "pro", "seats": 3}


def make_step(*progress: OnOutcomeRule | StopRule | WaitUntilRule) -> Step:
    return Step(key="s", channel="email", progress=progress)


def on(to_step: str, when: str | None = None, outcome: Outcome = "delivered") -> OnOutcomeRule:
    return OnOutcomeRule(kind="on_outcome", outcome=outcome, to_step=to_step, when=when)


def stop(when: str | None = None, outcome: Outcome = "delivered") -> StopRule:
    return StopRule(kind="stop", outcome=outcome, when=when)


def wait(to_step: str, when: str | None = None) -> WaitUntilRule:
    return WaitUntilRule(kind="wait_until", delay_seconds=60, to_step=to_step, when=when)


def test_a_true_condition_fires_its_rule() -> None:
    upgrade = on("upgrade", when="plan == 'pro'")
    assert decide(make_step(upgrade), DELIVERED, CONTEXT) == Advance(upgrade, DELIVERED)


def test_a_false_condition_is_passed_over_for_the_next_rule() -> None:
    halt = stop(when="seats > 1")
    the_step = make_step(on("upgrade", when="plan == 'free'"), halt, on("other"))
    assert decide(the_step, DELIVERED, CONTEXT) == Halt(halt, DELIVERED)


def test_conditioned_rules_are_tried_in_order_the_first_that_holds_wins() -> None:
    first, second, fallback = on("first", when="seats > 2"), on("second", when="seats > 1"), on("fallback")
    the_step = make_step(first, second, fallback)
    assert decide(the_step, DELIVERED, CONTEXT) == Advance(first, DELIVERED)
    assert decide(the_step, DELIVERED, {"seats": 2}) == Advance(second, DELIVERED)
    assert decide(the_step, DELIVERED, {"seats": 0}) == Advance(fallback, DELIVERED)


def test_a_condition_that_fails_to_evaluate_is_rule_failed() -> None:
    failing = stop(when="missing > 1")  # StrictUndefined: a name the context lacks is an error
    the_step = make_step(on("upgrade", when="plan == 'free'"), failing, on("other"))
    assert decide(the_step, DELIVERED, CONTEXT) == RuleFailed(failing)


def test_rules_for_other_outcomes_are_not_evaluated() -> None:
    # `missing` would fail: the rule names another outcome, so its condition is never read.
    advance = on("next")
    assert decide(make_step(stop(when="missing", outcome="bounced"), advance), DELIVERED, CONTEXT) == Advance(
        advance, DELIVERED
    )


def test_outcome_rules_passed_over_lead_to_the_waits_in_order() -> None:
    later = wait("later", when="seats == 3")
    the_step = make_step(wait("never", when="plan == 'free'"), on("upgrade", when="seats > 5"), later)
    assert decide(the_step, DELIVERED, CONTEXT) == EnterWait(later, DELIVERED)


def test_a_wait_whose_condition_fails_is_rule_failed() -> None:
    failing = wait("later", when="plan.nope")
    assert decide(make_step(failing), DELIVERED, CONTEXT) == RuleFailed(failing)


def test_every_wait_passed_over_is_an_implicit_completion() -> None:
    the_step = make_step(wait("a", when="plan == 'free'"), on("b", when="seats > 5"), wait("c", when="seats > 5"))
    assert decide(the_step, DELIVERED, CONTEXT) == Complete(DELIVERED)


def test_a_temporary_failure_is_held_without_reading_the_waits() -> None:
    the_step = make_step(wait("later", when="missing"), on("sms", when="seats > 5", outcome="temporary_failure"))
    assert decide(the_step, FAILED, CONTEXT) == Hold("awaiting_terminal_outcome")
    retry_by_sms = on("sms", when="seats > 2", outcome="temporary_failure")
    assert decide(make_step(retry_by_sms), FAILED, CONTEXT) == Advance(retry_by_sms, FAILED)


@pytest.mark.parametrize("when", ["missing", "plan == 'pro'"])
def test_a_delivery_not_converged_evaluates_nothing(when: str) -> None:
    pending = NotBranchable(EVIDENCE)
    assert decide(make_step(wait("later", when=when)), pending, CONTEXT) == Hold("prior_delivery_not_converged")
    assert decide(make_step(stop(when=when)), pending, CONTEXT) == Hold("no_matching_progress_rule")
