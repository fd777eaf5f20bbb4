"""The outcome of a step's delivery, read from canonical rows only (SPEC 4.1). Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from tocsin.core.vocabulary import Outcome

# A cancelled delivery branches only when it was cancelled for one of these reasons.
CANCELLED_OUTCOMES: dict[str, Outcome] = {
    "retries_exhausted": "retries_exhausted",
    "permanent_failure": "permanent_failure",
    "bounced": "bounced",
}


class DeliveryFacts(Protocol):
    @property
    def status(self) -> str: ...
    @property
    def suppression_reason(self) -> str | None: ...


class AttemptFacts(Protocol):
    @property
    def outcome(self) -> str: ...
    @property
    def error_class(self) -> str | None: ...


@dataclass(frozen=True)
class NotBranchable:
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Branchable:
    outcome: Outcome
    terminal: bool
    evidence: dict[str, Any]


def evidence_of(delivery: DeliveryFacts, latest_attempt: AttemptFacts | None) -> dict[str, Any]:
    return {
        "delivery_status": delivery.status,
        "suppression_reason": delivery.suppression_reason,
        "attempt_outcome": latest_attempt.outcome if latest_attempt else None,
        "attempt_error_class": latest_attempt.error_class if latest_attempt else None,
    }


def outcome_of(delivery: DeliveryFacts, latest_attempt: AttemptFacts | None) -> Branchable | NotBranchable:
    evidence = evidence_of(delivery, latest_attempt)
    match delivery.status:
        case "succeeded":
            return Branchable("delivered", True, evidence)
        case "suppressed":
            return Branchable("suppressed", True, evidence)
        case "failed":
            # Still being retried: only a rule that names temporary_failure may act on it.
            return Branchable("temporary_failure", False, evidence)
        case "cancelled" if delivery.suppression_reason in CANCELLED_OUTCOMES:
            return Branchable(CANCELLED_OUTCOMES[delivery.suppression_reason], True, evidence)
        case _:
            return NotBranchable(evidence)
