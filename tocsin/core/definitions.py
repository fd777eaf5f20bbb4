"""Journey definitions (SPEC 3): the models, their validation and normalization, and loading from files.

Validation is hand-written over the raw document rather than left to pydantic, so that every problem
is reported at once with a stable code and a location a user can find in their own YAML.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeGuard, get_args

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from tocsin.core.conditions import condition_problems
from tocsin.core.data import data_schema_problems, required_names
from tocsin.core.documents import read_document
from tocsin.core.errors import DefinitionError, InvalidDocument, Problem, ProblemCode
from tocsin.core.limits import INT4_MAX, MAX_DURATION_SECONDS, identifier_fault, printable, shape_fault
from tocsin.core.templates import template_problems, text_template_problems
from tocsin.core.vocabulary import OUTCOMES, Outcome
from tocsin.core.windows import SendWindow, send_window_problems, timezone_problem

Anchor = Literal["prior_delivery_terminal_at", "step_activated_at"]

ANCHORS: tuple[Anchor, ...] = get_args(Anchor)
MAX_CANCEL_SIGNALS = 10
DEFAULT_MAX_STEP_ACTIVATIONS = 50
DEFAULT_FEEDBACK_TIMEOUT_SECONDS = 3 * 86400  # P3D
DEFAULT_TIMEZONE = "UTC"
# Past this the backoff passes any interval's cap within a few attempts: a larger factor is a typo.
MAX_BACKOFF_COEFFICIENT = 100
DEFAULT_MAX_BATCH_ITEMS = 100
MAX_BATCH_ITEMS = 1000  # every item of a batch is rendered into its content, in one transaction

_MODEL_CONFIG = ConfigDict(frozen=True, extra="forbid")


class RetryPolicy(BaseModel):
    """How a step's delivery is retried after a temporary failure."""

    model_config = _MODEL_CONFIG

    max_attempts: int = 5
    initial_interval_seconds: int = 30
    backoff_coefficient: float = 2.0
    maximum_interval_seconds: int = 3600

    def backoff_seconds(self, failed_attempt: int) -> int:
        """The wait after attempt number `failed_attempt` (1-based) failed."""
        if failed_attempt < 1:
            raise ValueError(f"attempts are numbered from 1, got {failed_attempt}")
        try:
            delay = self.initial_interval_seconds * self.backoff_coefficient ** (failed_attempt - 1)
        except OverflowError:  # far past the cap anyway
            return self.maximum_interval_seconds
        return int(min(delay, self.maximum_interval_seconds))


class _Model(BaseModel):
    """A definition model whose fields added after definitions were first registered are left out of its dump
    while at their default: a definition that does not use them dumps, and so checksums, exactly as before
    they existed (a changed checksum would make every registered definition a new version to the registry)."""

    model_config = _MODEL_CONFIG

    added_fields: ClassVar[frozenset[str]] = frozenset()

    def _omitted(self) -> set[str]:
        fields = type(self).model_fields
        return {name for name in self.added_fields if getattr(self, name) == fields[name].get_default()}

    @model_serializer(mode="wrap")
    def _omit_added_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name in self._omitted():
            data.pop(name, None)
        return data


class WaitUntilRule(_Model):
    added_fields = frozenset({"delay_seconds", "until", "offset_seconds", "when"})

    kind: Literal["wait_until"]
    anchor: Anchor = "prior_delivery_terminal_at"
    # Exactly one of the two (validation sees to it): a fixed delay after the anchor, or a moment from the data.
    delay_seconds: int | None = None
    until: str | None = None  # a template rendering to an ISO-8601 timestamp with an offset (SPEC 11.2)
    offset_seconds: int = 0  # added to `until`; negative is before it
    to_step: str
    cancel_signals: tuple[str, ...] = ()
    when: str | None = None

    def _omitted(self) -> set[str]:
        # The anchor does not apply to an `until` wait: its default is not part of what the rule says.
        omitted = super()._omitted()
        return omitted | {"anchor"} if self.until is not None else omitted


class OnOutcomeRule(_Model):
    added_fields = frozenset({"when"})

    kind: Literal["on_outcome"]
    outcome: Outcome
    to_step: str
    when: str | None = None


class StopRule(_Model):
    added_fields = frozenset({"when"})

    kind: Literal["stop"]
    outcome: Outcome
    when: str | None = None


ProgressRule = Annotated[WaitUntilRule | OnOutcomeRule | StopRule, Field(discriminator="kind")]


class Step(_Model):
    added_fields = frozenset({"required", "when", "send_window", "feedback_timeout_seconds"})

    key: str
    channel: str
    content: dict[str, Any] = Field(default_factory=dict)
    progress: tuple[ProgressRule, ...] = ()
    retry: RetryPolicy = RetryPolicy()
    # Sent whatever the recipient's preferences say (receipts, security notices); the policy hook still runs.
    required: bool = False
    when: str | None = None  # false: the delivery is planned suppressed/condition_not_met (SPEC 11.1)
    send_window: SendWindow | None = None
    # How long a send the provider accepted may await its feedback before it counts as delivered (SPEC 11.3).
    feedback_timeout_seconds: int = DEFAULT_FEEDBACK_TIMEOUT_SECONDS

    @property
    def wait_rules(self) -> tuple[WaitUntilRule, ...]:
        return tuple(rule for rule in self.progress if isinstance(rule, WaitUntilRule))

    @property
    def wait_rule(self) -> WaitUntilRule | None:
        """The first wait_until rule: the one that waits, for a step whose wait rules carry no `when`."""
        return next(iter(self.wait_rules), None)

    def rule_for(self, outcome: Outcome) -> OnOutcomeRule | StopRule | None:
        """The first rule naming a terminal `outcome` of this step's delivery, whatever its `when`."""
        for rule in self.progress:
            if isinstance(rule, OnOutcomeRule | StopRule) and rule.outcome == outcome:
                return rule
        return None


class Throttle(_Model):
    """At most `limit` runs per `period_seconds` in one scope: tenant, workflow, recipient, rendered key."""

    added_fields = frozenset({"key"})

    limit: int
    period_seconds: int
    key: str | None = None  # a template


class Batch(_Model):
    """Triggers of one scope (tenant, workflow, recipient, rendered key) within `window_seconds` of the first
    are one run, closed early at `max_items` (SPEC 11.5)."""

    added_fields = frozenset({"key"})

    window_seconds: int
    key: str | None = None  # a template
    max_items: int = DEFAULT_MAX_BATCH_ITEMS


class WorkflowDefinition(_Model):
    added_fields = frozenset({"throttle", "data_schema", "default_timezone", "batch"})

    key: str
    version: int
    steps: tuple[Step, ...]
    max_step_activations: int = DEFAULT_MAX_STEP_ACTIVATIONS
    throttle: Throttle | None = None
    data_schema: dict[str, Any] | None = None  # a JSON Schema (draft 2020-12) the trigger data must meet
    default_timezone: str = DEFAULT_TIMEZONE  # for send windows, when neither the step nor the recipient names one
    batch: Batch | None = None

    @functools.cached_property
    def required_data(self) -> tuple[tuple[str, str], ...]:
        """(name, location) for each top-level data name a run of this definition needs (SPEC 11.7), at its first
        use. Computed once: a definition is immutable, and pydantic keeps a cached property out of equality."""
        return required_names(self)

    @property
    def first_step(self) -> Step:
        return self.steps[0]

    def step(self, key: str) -> Step:
        for step in self.steps:
            if step.key == key:
                return step
        raise KeyError(key)

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def checksum(self) -> str:
        """sha256 of the canonical JSON: equal for definitions that differ only in how they were written."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | WorkflowDefinition) -> WorkflowDefinition:
        """Validate and normalize; raises DefinitionError listing every problem found."""
        if isinstance(raw, WorkflowDefinition):
            # A model built by hand skipped the cross-reference checks: run them all.
            raw = raw.model_dump()
        if not isinstance(raw, Mapping):
            raise DefinitionError([Problem("", "invalid_document", "a definition must be a mapping")])
        # Before anything walks it recursively: a document too deep (or cyclic) or too big is one problem.
        found = shape_fault(raw)
        if found is not None:
            location, reason = found
            raise DefinitionError([Problem(location, "invalid_document", reason)])
        checker = _Checker()
        normalized = checker.definition(raw)
        if checker.problems:
            raise DefinitionError(checker.problems)
        return cls.model_validate(normalized)


def load_definition(
    source: Mapping[str, Any] | WorkflowDefinition | str | os.PathLike[str],
) -> WorkflowDefinition:
    """A definition from a mapping, a model, or the path of a .json, .yaml or .yml file."""
    if isinstance(source, str | os.PathLike):
        return WorkflowDefinition.parse(_read_document(Path(source)))
    return WorkflowDefinition.parse(source)


def _read_document(path: Path) -> Mapping[str, Any]:
    def invalid(cause: str) -> DefinitionError:
        return DefinitionError([Problem("", "invalid_document", f"{printable(str(path))}: {cause}")])

    try:
        document = read_document(path)  # the format named by the suffix
    except InvalidDocument as exc:
        raise invalid(str(exc)) from exc
    if not isinstance(document, Mapping):
        raise invalid(f"the document must be a mapping, not {type(document).__name__}")
    return document


# ISO-8601 durations of fixed length: weeks alone, or days and a time part. Only seconds may carry a
# fraction, and only one that adds up to whole seconds: every delay tocsin keeps is an int of seconds.
_DURATION = re.compile(
    r"P(?:(?P<weeks>\d+)W"
    r"|(?:(?P<days>\d+)D)?(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?)",
    re.ASCII,
)
# More digits than this is far beyond MAX_DURATION_SECONDS in any unit (and keeps int() of them cheap).
_MAX_DURATION_DIGITS = 12
_UNIT_SECONDS = {"weeks": 604800, "days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}


def _duration_seconds(text: str, shown: object) -> int:
    """Seconds in the ISO-8601 duration `text` (zero included); errors name `shown`, the value as written."""
    match = _DURATION.fullmatch(text)
    if match is None or text.endswith("T") or not any(match.groupdict().values()):
        if re.match(r"P[^T]*[YM]", text):
            raise ValueError(f"{shown!r}: years and months have no fixed length; use weeks or days")
        raise ValueError(f"{shown!r} is not an ISO-8601 duration such as PT2H, P3D or PT1H30M")
    seconds = 0
    for unit, amount in match.groupdict().items():
        whole, _, fraction = (amount or "0").partition(".")
        if fraction.strip("0"):
            raise ValueError(f"{shown!r} is not a whole number of seconds")
        digits = whole.lstrip("0") or "0"
        if len(digits) > _MAX_DURATION_DIGITS:
            raise _too_long(shown)
        seconds += int(digits) * _UNIT_SECONDS[unit]
    return seconds


def _duration_type_error(value: object) -> ValueError:
    return ValueError(f"expected an ISO-8601 duration or a number of seconds, got {value!r}")


def parse_duration(value: object) -> int:
    """Seconds in an ISO-8601 duration (`PT2H`, `P3D`, `PT1H30M`, `P2W`) or a positive int of seconds,
    at most MAX_DURATION_SECONDS (ten years)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _duration_type_error(value)
    seconds = value if isinstance(value, int) else _duration_seconds(value, value)
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    if seconds > MAX_DURATION_SECONDS:
        raise _too_long(value)
    return seconds


def parse_offset(value: object) -> int:
    """Seconds in a signed ISO-8601 duration (`-P1D` is a day before, `PT30M` or `+PT30M` half an hour after)
    or an int of seconds, negative before; zero is no offset. At most MAX_DURATION_SECONDS either way."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _duration_type_error(value)
    if isinstance(value, int):
        seconds = value
    else:
        sign = -1 if value.startswith("-") else 1
        seconds = sign * _duration_seconds(value[1:] if value[:1] in ("-", "+") else value, value)
    if abs(seconds) > MAX_DURATION_SECONDS:
        raise _too_long(value)
    return seconds


def _too_long(value: object) -> ValueError:
    return ValueError(f"{value!r} is longer than ten years ({MAX_DURATION_SECONDS} seconds), the longest allowed")


_DEFINITION_FIELDS = frozenset(
    {"key", "version", "steps", "max_step_activations", "throttle", "data_schema", "default_timezone", "batch"}
)
_STEP_FIELDS = frozenset(
    {
        "key",
        "channel",
        "content",
        "progress",
        "retry",
        "required",
        "when",
        "send_window",
        "feedback_timeout",
        "feedback_timeout_seconds",
    }
)
_RULE_FIELDS = {
    "wait_until": frozenset(
        {
            "kind",
            "anchor",
            "delay_seconds",
            "delay",
            "until",
            "offset",
            "offset_seconds",
            "to_step",
            "cancel_signals",
            "when",
        }
    ),
    "on_outcome": frozenset({"kind", "outcome", "to_step", "when"}),
    "stop": frozenset({"kind", "outcome", "when"}),
}
_THROTTLE_FIELDS = frozenset({"limit", "period", "period_seconds", "key"})
_BATCH_FIELDS = frozenset({"window", "window_seconds", "key", "max_items"})
_RETRY_FIELDS = frozenset(
    {
        "max_attempts",
        "initial_interval",
        "initial_interval_seconds",
        "backoff_coefficient",
        "maximum_interval",
        "maximum_interval_seconds",
    }
)
_DEFAULT_RETRY = RetryPolicy()


def _is_positive_int(value: object, maximum: int = INT4_MAX) -> TypeGuard[int]:
    """An int from 1 to `maximum`; by default what a Postgres int4 (versions, activations, attempts) holds."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= maximum


def _is_seconds(value: object) -> TypeGuard[int]:
    """A positive int of seconds no longer than MAX_DURATION_SECONDS."""
    return _is_positive_int(value, MAX_DURATION_SECONDS)


_INT_RANGE = f"must be an int from 1 to {INT4_MAX}"
_SECONDS_RANGE = f"must be an int of seconds from 1 to {MAX_DURATION_SECONDS} (ten years)"


def _is_text(value: object) -> TypeGuard[str]:
    """A string that is not blank."""
    return isinstance(value, str) and bool(value.strip())


def _field(location: str, name: object) -> str:
    # A location is printed on one line: a field name with a NUL or a newline in it is shown escaped.
    shown = printable(str(name))
    return f"{location}.{shown}" if location else shown


class _Checker:
    """One validation pass: collects every problem and builds the normalized document alongside.

    The normalized document is only used when no problem was found, so where a value is wrong
    the builder carries it along as it is rather than inventing a replacement.
    """

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, location: str, code: ProblemCode, message: str) -> None:
        self.problems.append(Problem(location, code, message))

    def identifier(self, value: object, location: str, blank: ProblemCode, what: str) -> TypeGuard[str]:
        """Whether `value` can be a key, channel or signal: `blank` when it is no non-blank string at all,
        invalid_text when it is too long or holds what Postgres text cannot (NUL, a lone surrogate)."""
        if not _is_text(value):
            self.add(location, blank, f"{what} must be a non-blank string, got {value!r}")
            return False
        fault = identifier_fault(value)
        if fault is not None:
            self.add(location, "invalid_text", f"{what} {fault}")
            return False
        return True

    def unexpected(self, raw: Mapping[Any, Any], allowed: frozenset[str], location: str) -> None:
        for name in raw:
            if name not in allowed:
                self.add(_field(location, name), "unexpected_field", f"unknown field {name!r}")

    def definition(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        self.unexpected(raw, _DEFINITION_FIELDS, "")
        key = raw.get("key")
        self.identifier(key, "key", "blank_key", "the definition's key")
        version = raw.get("version")
        if not _is_positive_int(version):
            self.add("version", "invalid_version", f"version {_INT_RANGE}, got {version!r}")
        limit = raw.get("max_step_activations", DEFAULT_MAX_STEP_ACTIVATIONS)
        if not _is_positive_int(limit):
            self.add("max_step_activations", "invalid_step_limit", f"{_INT_RANGE}, got {limit!r}")
        raw_steps = raw.get("steps")
        if not isinstance(raw_steps, list | tuple) or not raw_steps:
            self.add("steps", "no_steps", "a definition needs a non-empty list of steps")
            raw_steps = ()
        # Rules may point forward (and back, for cycles): collect every step key before checking them.
        step_keys = {
            step["key"] for step in raw_steps if isinstance(step, Mapping) and isinstance(step.get("key"), str)
        }
        seen: set[str] = set()
        steps = [self.step(step, f"steps[{i}]", step_keys, seen) for i, step in enumerate(raw_steps)]
        normalized = {"key": key, "version": version, "steps": steps, "max_step_activations": limit}
        if "throttle" in raw:
            normalized["throttle"] = self.throttle(raw["throttle"], "throttle")
        if "batch" in raw:
            normalized["batch"] = self.batch(raw["batch"], "batch")
        if "data_schema" in raw:
            self.problems.extend(data_schema_problems(raw["data_schema"], "data_schema"))
            normalized["data_schema"] = copy.deepcopy(raw["data_schema"])
        if "default_timezone" in raw:
            normalized["default_timezone"] = raw["default_timezone"]
            problem = timezone_problem(raw["default_timezone"], "default_timezone")
            if problem is not None:
                self.problems.append(problem)
        return normalized

    def throttle(self, raw: object, location: str) -> object:
        if not isinstance(raw, Mapping):
            self.add(
                location, "invalid_throttle", "throttle must be a mapping with limit and period (and optionally key)"
            )
            return raw
        self.unexpected(raw, _THROTTLE_FIELDS, location)
        limit = raw.get("limit")
        if not _is_positive_int(limit):
            self.add(f"{location}.limit", "invalid_throttle", f"limit {_INT_RANGE}, got {limit!r}")
        normalized = {
            "limit": limit,
            "period_seconds": self.interval(raw, location, "period", None, "invalid_throttle"),
        }
        if "key" in raw:
            self.problems.extend(text_template_problems(raw["key"], f"{location}.key"))
            normalized["key"] = raw["key"]
        return normalized

    def batch(self, raw: object, location: str) -> object:
        if not isinstance(raw, Mapping):
            self.add(location, "invalid_batch", "batch must be a mapping with window (and optionally key, max_items)")
            return raw
        self.unexpected(raw, _BATCH_FIELDS, location)
        max_items = raw.get("max_items", DEFAULT_MAX_BATCH_ITEMS)
        if not _is_positive_int(max_items, MAX_BATCH_ITEMS):
            self.add(
                f"{location}.max_items",
                "invalid_batch",
                f"max_items must be an int from 1 to {MAX_BATCH_ITEMS}, got {max_items!r}",
            )
        normalized = {
            "window_seconds": self.interval(raw, location, "window", None, "invalid_batch"),
            "max_items": max_items,
        }
        if "key" in raw:
            self.problems.extend(text_template_problems(raw["key"], f"{location}.key"))
            normalized["key"] = raw["key"]
        return normalized

    def step(self, raw: object, location: str, step_keys: set[str], seen: set[str]) -> object:
        if not isinstance(raw, Mapping):
            self.add(location, "blank_step_key", "step must be a mapping")
            return raw
        self.unexpected(raw, _STEP_FIELDS, location)
        key = raw.get("key")
        if self.identifier(key, f"{location}.key", "blank_step_key", "a step's key"):
            if key in seen:
                self.add(f"{location}.key", "duplicate_step_key", f"another step already has the key {key!r}")
            seen.add(key)
        self.identifier(raw.get("channel"), f"{location}.channel", "blank_channel", "a step's channel")
        content = raw.get("content", {})
        self.problems.extend(template_problems(content, f"{location}.content"))
        raw_progress = raw.get("progress", ())
        if not isinstance(raw_progress, list | tuple):
            self.add(f"{location}.progress", "unknown_rule_kind", "progress must be a list of rules")
            raw_progress = ()
        progress = self.progress(raw_progress, f"{location}.progress", step_keys)
        retry = self.retry(raw["retry"], f"{location}.retry") if "retry" in raw else _DEFAULT_RETRY.model_dump()
        normalized = {
            "key": key,
            "channel": raw.get("channel"),
            # A definition is immutable: it must not share nested content with the caller's document.
            "content": copy.deepcopy(content),
            "progress": progress,
            "retry": retry,
        }
        required = raw.get("required", False)
        if not isinstance(required, bool):
            self.add(f"{location}.required", "invalid_required", f"required must be true or false, got {required!r}")
        elif required:
            normalized["required"] = True  # only when true: the normalized form of every other step is unchanged
        if "when" in raw:
            normalized["when"] = self.condition(raw["when"], f"{location}.when")
        if "send_window" in raw:
            window, problems = send_window_problems(raw["send_window"], f"{location}.send_window")
            self.problems.extend(problems)
            normalized["send_window"] = window
        normalized["feedback_timeout_seconds"] = self.interval(
            raw, location, "feedback_timeout", DEFAULT_FEEDBACK_TIMEOUT_SECONDS, "invalid_feedback_timeout"
        )
        return normalized

    def condition(self, raw: object, location: str) -> object:
        self.problems.extend(condition_problems(raw, location))
        return raw

    def progress(self, raw_rules: list[Any] | tuple[Any, ...], location: str, step_keys: set[str]) -> list[object]:
        # Rules are tried in order and the first that applies fires: after a rule without `when`, a rule for the
        # same outcome (for a wait_until: any wait_until) can never fire. Two such rules without `when` are the
        # duplicates of SPEC 3; a conditioned one after an unconditioned one is unreachable.
        rules: list[object] = []
        has_wait = False  # an unconditioned wait_until came before
        outcomes: set[str] = set()  # outcomes an unconditioned on_outcome or stop rule handles
        for j, raw in enumerate(raw_rules):
            at = f"{location}[{j}]"
            if not isinstance(raw, Mapping):
                self.add(at, "unknown_rule_kind", "a rule must be a mapping with a kind")
                rules.append(raw)
                continue
            kind = raw.get("kind")
            if not isinstance(kind, str) or kind not in _RULE_FIELDS:
                kinds = ", ".join(_RULE_FIELDS)
                self.add(f"{at}.kind", "unknown_rule_kind", f"kind must be one of {kinds}, got {kind!r}")
                rules.append(raw)
                continue
            self.unexpected(raw, _RULE_FIELDS[kind], at)
            conditioned = "when" in raw
            if kind == "wait_until":
                if has_wait and not conditioned:
                    self.add(at, "duplicate_wait_rule", "another wait_until without when comes first in this step")
                elif has_wait:
                    self.add(at, "unreachable_rule", "never fires: a wait_until without when comes first")
                has_wait = has_wait or not conditioned
                rule = self.wait_rule(raw, at, step_keys)
            else:
                outcome = raw.get("outcome")
                if outcome not in OUTCOMES:
                    self.add(f"{at}.outcome", "invalid_outcome", f"outcome must be one of {', '.join(OUTCOMES)}")
                elif outcome in outcomes and not conditioned:
                    self.add(
                        f"{at}.outcome",
                        "duplicate_outcome_rule",
                        f"another rule without when already handles {outcome}",
                    )
                elif outcome in outcomes:
                    self.add(at, "unreachable_rule", f"never fires: a rule without when for {outcome} comes first")
                elif not conditioned:
                    outcomes.add(outcome)
                rule = {"kind": kind, "outcome": outcome}
                if kind == "on_outcome":
                    rule["to_step"] = self.to_step(raw, at, step_keys)
            if conditioned:
                rule["when"] = self.condition(raw["when"], f"{at}.when")
            rules.append(rule)
        return rules

    def to_step(self, raw: Mapping[str, Any], location: str, step_keys: set[str]) -> object:
        to_step = raw.get("to_step")
        if not isinstance(to_step, str) or to_step not in step_keys:
            self.add(
                f"{location}.to_step",
                "unknown_to_step",
                f"no step of this definition has the key {to_step!r}",
            )
        return to_step

    def wait_rule(self, raw: Mapping[str, Any], location: str, step_keys: set[str]) -> dict[str, object]:
        rule: dict[str, object] = {"kind": "wait_until"}
        if "until" in raw:
            rule.update(self.until(raw, location))
        else:
            anchor = raw.get("anchor", "prior_delivery_terminal_at")
            if anchor not in ANCHORS:
                self.add(f"{location}.anchor", "invalid_anchor", f"anchor must be one of {', '.join(ANCHORS)}")
            for name in ("offset", "offset_seconds"):
                if name in raw:
                    self.add(f"{location}.{name}", "invalid_delay", f"{name} only applies to a wait with until")
            rule.update(anchor=anchor, delay_seconds=self.delay(raw, location))
        rule["to_step"] = self.to_step(raw, location, step_keys)
        rule["cancel_signals"] = self.cancel_signals(raw.get("cancel_signals", ()), f"{location}.cancel_signals")
        return rule

    def until(self, raw: Mapping[str, Any], location: str) -> dict[str, object]:
        """A wait until a moment from the data (SPEC 11.2): `until`, a template, and an optional signed offset."""
        for name in ("delay", "delay_seconds"):
            if name in raw:
                self.add(
                    f"{location}.{name}", "invalid_delay", f"give one of delay, delay_seconds or until, not {name} too"
                )
        if "anchor" in raw:
            # The moment comes from the data: an anchor would be silently ignored, so it is refused.
            self.add(f"{location}.anchor", "invalid_anchor", "anchor does not apply to a wait with until")
        self.problems.extend(text_template_problems(raw["until"], f"{location}.until"))
        if "offset" in raw and "offset_seconds" in raw:
            self.add(f"{location}.offset", "invalid_delay", "give offset or offset_seconds, not both")
            offset: object = None
        elif "offset" in raw:
            try:
                offset = parse_offset(raw["offset"])
            except ValueError as exc:
                self.add(f"{location}.offset", "invalid_delay", str(exc))
                offset = None
        else:
            offset = raw.get("offset_seconds", 0)
            if isinstance(offset, bool) or not isinstance(offset, int) or abs(offset) > MAX_DURATION_SECONDS:
                self.add(
                    f"{location}.offset_seconds",
                    "invalid_delay",
                    f"must be an int of seconds from -{MAX_DURATION_SECONDS} to {MAX_DURATION_SECONDS}, got {offset!r}",
                )
        return {"until": raw["until"], "offset_seconds": offset}

    def delay(self, raw: Mapping[str, Any], location: str) -> object:
        if "delay_seconds" in raw and "delay" in raw:
            self.add(f"{location}.delay", "invalid_delay", "give delay_seconds or delay, not both")
            return None
        if "delay" in raw:
            try:
                return parse_duration(raw["delay"])
            except ValueError as exc:
                self.add(f"{location}.delay", "invalid_delay", str(exc))
                return None
        if "delay_seconds" not in raw:
            self.add(
                f"{location}.delay_seconds", "invalid_delay", "a wait_until rule needs delay_seconds, delay or until"
            )
            return None
        seconds = raw["delay_seconds"]
        if not _is_seconds(seconds):
            self.add(f"{location}.delay_seconds", "invalid_delay", f"{_SECONDS_RANGE}, got {seconds!r}")
        return seconds

    def cancel_signals(self, raw: object, location: str) -> list[str]:
        if not isinstance(raw, list | tuple):
            self.add(location, "invalid_cancel_signals", "cancel_signals must be a list of signal names")
            return []
        names: dict[str, None] = {}  # an ordered set: duplicates dropped, first occurrence kept
        for k, name in enumerate(raw):
            if self.identifier(name, f"{location}[{k}]", "invalid_cancel_signals", "a cancel signal"):
                names[name.strip()] = None
        if len(names) > MAX_CANCEL_SIGNALS:
            self.add(
                location,
                "too_many_cancel_signals",
                f"{len(names)} distinct signals; at most {MAX_CANCEL_SIGNALS} are allowed",
            )
        return list(names)

    def retry(self, raw: object, location: str) -> object:
        if not isinstance(raw, Mapping):
            self.add(location, "invalid_retry", "retry must be a mapping")
            return raw
        self.unexpected(raw, _RETRY_FIELDS, location)
        max_attempts = raw.get("max_attempts", _DEFAULT_RETRY.max_attempts)
        if not _is_positive_int(max_attempts):
            self.add(f"{location}.max_attempts", "invalid_retry", f"{_INT_RANGE}, got {max_attempts!r}")
        coefficient = raw.get("backoff_coefficient", _DEFAULT_RETRY.backoff_coefficient)
        if isinstance(coefficient, bool) or not isinstance(coefficient, int | float):
            self.add(f"{location}.backoff_coefficient", "invalid_retry", f"must be a number, got {coefficient!r}")
        # Compared before float(): a huge int would overflow it, and NaN fails every comparison.
        elif not 1 <= coefficient <= MAX_BACKOFF_COEFFICIENT:
            self.add(
                f"{location}.backoff_coefficient",
                "invalid_retry",
                f"must be from 1 to {MAX_BACKOFF_COEFFICIENT}, got {coefficient!r}",
            )
        else:
            coefficient = float(coefficient)
        initial = self.interval(
            raw, location, "initial_interval", _DEFAULT_RETRY.initial_interval_seconds, "invalid_retry"
        )
        maximum = self.interval(
            raw, location, "maximum_interval", _DEFAULT_RETRY.maximum_interval_seconds, "invalid_retry"
        )
        if initial is not None and maximum is not None and maximum < initial:
            self.add(location, "invalid_retry", f"maximum interval {maximum}s is below the initial {initial}s")
        return {
            "max_attempts": max_attempts,
            "initial_interval_seconds": initial,
            "backoff_coefficient": coefficient,
            "maximum_interval_seconds": maximum,
        }

    def interval(
        self, raw: Mapping[str, Any], location: str, name: str, default: int | None, code: ProblemCode
    ) -> int | None:
        """`name` (a duration or seconds) or `name_seconds` (the normalized int), `default` when neither is given
        (None: one of them is required); None when invalid."""
        seconds_name = f"{name}_seconds"
        if name in raw and seconds_name in raw:
            self.add(f"{location}.{name}", code, f"give {name} or {seconds_name}, not both")
            return None
        if name in raw:
            try:
                return parse_duration(raw[name])
            except ValueError as exc:
                self.add(f"{location}.{name}", code, str(exc))
                return None
        if seconds_name not in raw and default is None:
            self.add(f"{location}.{name}", code, f"needs {name} (an ISO-8601 duration such as PT1H) or {seconds_name}")
            return None
        value = raw.get(seconds_name, default)
        if not _is_seconds(value):
            self.add(f"{location}.{seconds_name}", code, f"{_SECONDS_RANGE}, got {value!r}")
            return None
        return value
