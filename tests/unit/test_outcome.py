"""outcome_of (SPEC 4.1): one test per row of the table. Pure: small dataclasses stand in for rows."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tocsin.core.outcome import Branchable, NotBranchable, outcome_of

EVIDENCE_KEYS = {"delivery_status", "suppression_reason", "attempt_outcome", "attempt_error_class"}


@dataclass(frozen=True)
class FakeDelivery:
    status: str
    suppression_reason: str | None = None


@dataclass(frozen=True)
class FakeAttempt:
    outcome: str
    error_class: str | None = None


def evidence(status: str, reason: str | None, attempt: FakeAttempt | None) -> dict[str, str | None]:
    return {
        "delivery_status": status,
        "suppression_reason": reason,
        "attempt_outcome": attempt.outcome if attempt else None,
        "attempt_error_class": attempt.error_class if attempt else None,
    }


SUCCEEDED = FakeAttempt("succeeded")
TEMPORARY = FakeAttempt("failed", "temporary")
PERMANENT = FakeAttempt("failed", "permanent")
BOUNCED = FakeAttempt("bounced", "bounced")
REJECTED = FakeAttempt("rejected", "permanent")


@pytest.mark.parametrize("reason", [None, "anything"])
@pytest.mark.parametrize("attempt", [SUCCEEDED, None])
def test_succeeded_is_delivered_and_terminal(reason: str | None, attempt: FakeAttempt | None) -> None:
    assert outcome_of(FakeDelivery("succeeded", reason), attempt) == Branchable(
        "delivered", True, evidence("succeeded", reason, attempt)
    )


@pytest.mark.parametrize(
    ("reason", "attempt"),
    [("recipient_opted_out", None), ("render_failed", REJECTED), (None, None), ("quiet_hours", SUCCEEDED)],
)
def test_suppressed_is_suppressed_and_terminal(reason: str | None, attempt: FakeAttempt | None) -> None:
    assert outcome_of(FakeDelivery("suppressed", reason), attempt) == Branchable(
        "suppressed", True, evidence("suppressed", reason, attempt)
    )


@pytest.mark.parametrize("reason", [None, "whatever"])
def test_failed_is_temporary_failure_and_not_terminal(reason: str | None) -> None:
    assert outcome_of(FakeDelivery("failed", reason), TEMPORARY) == Branchable(
        "temporary_failure", False, evidence("failed", reason, TEMPORARY)
    )


def test_cancelled_retries_exhausted() -> None:
    delivery = FakeDelivery("cancelled", "retries_exhausted")
    assert outcome_of(delivery, TEMPORARY) == Branchable(
        "retries_exhausted",
        True,
        {
            "delivery_status": "cancelled",
            "suppression_reason": "retries_exhausted",
            "attempt_outcome": "failed",
            "attempt_error_class": "temporary",
        },
    )


def test_cancelled_permanent_failure() -> None:
    delivery = FakeDelivery("cancelled", "permanent_failure")
    assert outcome_of(delivery, PERMANENT) == Branchable(
        "permanent_failure",
        True,
        {
            "delivery_status": "cancelled",
            "suppression_reason": "permanent_failure",
            "attempt_outcome": "failed",
            "attempt_error_class": "permanent",
        },
    )


def test_cancelled_bounced() -> None:
    delivery = FakeDelivery("cancelled", "bounced")
    assert outcome_of(delivery, BOUNCED) == Branchable(
        "bounced",
        True,
        {
            "delivery_status": "cancelled",
            "suppression_reason": "bounced",
            "attempt_outcome": "bounced",
            "attempt_error_class": "bounced",
        },
    )


@pytest.mark.parametrize("reason", [None, "run_cancelled", "superseded", "operator", "delivered"])
def test_cancelled_for_any_other_reason_is_not_branchable(reason: str | None) -> None:
    result = outcome_of(FakeDelivery("cancelled", reason), None)
    assert result == NotBranchable(evidence("cancelled", reason, None))


@pytest.mark.parametrize(("status", "attempt"), [("pending", None), ("dispatched", None), ("dispatched", TEMPORARY)])
def test_in_flight_is_not_branchable(status: str, attempt: FakeAttempt | None) -> None:
    result = outcome_of(FakeDelivery(status), attempt)
    assert result == NotBranchable(evidence(status, None, attempt))


ALL_CASES = [
    (FakeDelivery(status, reason), attempt)
    for status in ("pending", "dispatched", "succeeded", "failed", "suppressed", "cancelled")
    for reason in (None, "bounced", "retries_exhausted", "permanent_failure", "run_cancelled")
    for attempt in (None, SUCCEEDED, TEMPORARY, BOUNCED)
]


@pytest.mark.parametrize(("delivery", "attempt"), ALL_CASES)
def test_evidence_always_has_the_four_keys(delivery: FakeDelivery, attempt: FakeAttempt | None) -> None:
    result = outcome_of(delivery, attempt)
    assert set(result.evidence) == EVIDENCE_KEYS
    assert result.evidence == evidence(delivery.status, delivery.suppression_reason, attempt)


def test_outcome_of_does_not_mutate_or_share_evidence() -> None:
    delivery = FakeDelivery("succeeded")
    first = outcome_of(delivery, SUCCEEDED)
    first.evidence["delivery_status"] = "tampered"
    assert outcome_of(delivery, SUCCEEDED).evidence["delivery_status"] == "succeeded"
