"""The exceptions tocsin raises at its boundaries; each names what is wrong."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Every code a definition problem can carry: the one list that validation (typed against it) and the tests
# (tests/unit/test_definitions.py covers each) agree on.
ProblemCode = Literal[
    "invalid_document",
    "blank_key",
    "invalid_version",
    "invalid_step_limit",
    "no_steps",
    "blank_step_key",
    "duplicate_step_key",
    "blank_channel",
    "unknown_rule_kind",
    "unexpected_field",
    "invalid_anchor",
    "invalid_outcome",
    "invalid_delay",
    "unknown_to_step",
    "invalid_cancel_signals",
    "too_many_cancel_signals",
    "duplicate_outcome_rule",
    "duplicate_wait_rule",
    "invalid_template",
    "invalid_retry",
    "invalid_text",
    "invalid_required",
    "invalid_condition",
    "unreachable_rule",
    "invalid_send_window",
    "invalid_timezone",
    "invalid_throttle",
    "invalid_batch",
    "invalid_data_schema",
    "invalid_feedback_timeout",
    "unknown_channel",  # only from `tocsin definitions check --channels`
]


class TocsinError(Exception):
    """Base class of every error tocsin raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a definition: where (`steps[0].progress[1].to_step`), a code, a message."""

    location: str
    code: ProblemCode
    message: str

    def __str__(self) -> str:
        return f"{self.location or '<definition>'}: {self.message} [{self.code}]"


class DefinitionError(TocsinError, ValueError):
    """A journey definition failed validation; `problems` lists every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))

    @property
    def codes(self) -> list[ProblemCode]:
        return [p.code for p in self.problems]


class InvalidDocument(TocsinError, ValueError):
    """Text that is not a usable JSON or YAML document: unparsable, or beyond a limit of tocsin.core.limits.

    The message is one line, fit to show a user as it is.
    """


class DefinitionConflict(TocsinError):
    """A (key, version) is already registered with a different checksum: definitions are immutable."""


class DefinitionNotFound(TocsinError, LookupError):
    """No registered definition has this key (and version)."""


class RunNotFound(TocsinError, LookupError):
    """No run has this id for this tenant."""


class DeliveryNotFound(TocsinError, LookupError):
    """No delivery has this id for this tenant."""


class InvalidDeliveryTransition(TocsinError):
    """A delivery status move that SPEC 2.4 does not allow; nothing was written."""


class InvalidRequest(TocsinError, ValueError):
    """An API call with an argument that cannot be valid (blank reason, unknown outcome, ...)."""


class ConfigurationError(TocsinError):
    """A setting that cannot work as given (a missing extra, an impossible combination)."""
