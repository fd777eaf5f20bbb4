"""The resolution order of preferences (SPEC 12.1): the most specific row wins; no row means opted in."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tocsin.core.preferences import Preference, opted_in, resolve

WHEN = datetime(2026, 1, 5, tzinfo=UTC)


def row(workflow_key: str | None, channel: str | None, allowed: bool) -> Preference:
    return Preference(
        tenant_id="acme",
        recipient="user:42",
        workflow_key=workflow_key,
        channel=channel,
        opted_in=allowed,
        updated_at=WHEN,
    )


def test_no_row_means_opted_in() -> None:
    assert opted_in([], "mention", "email") is True


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([row(None, None, False)], False),
        ([row(None, None, False), row(None, "email", True)], True),
        ([row(None, "email", False), row("mention", None, True)], True),
        ([row("mention", None, False), row("mention", "email", True)], True),
        ([row("mention", "email", False), row("mention", None, True), row(None, "email", True)], False),
        ([row(None, None, True), row(None, "email", False)], False),
    ],
    ids=["any-any", "channel-over-any", "workflow-over-channel", "both-over-workflow", "both-over-all", "deny"],
)
def test_the_most_specific_row_wins_whatever_the_order(rows: list[Preference], expected: bool) -> None:
    assert opted_in(rows, "mention", "email") is expected
    assert opted_in(list(reversed(rows)), "mention", "email") is expected


def test_rows_of_other_workflows_and_channels_do_not_apply() -> None:
    rows = [row("digest", None, False), row(None, "sms", False), row("digest", "email", False)]

    assert opted_in(rows, "mention", "email") is True
    assert opted_in(rows, "digest", "in_app") is False
    assert opted_in(rows, "mention", "sms") is False


def test_resolve_covers_every_workflow_and_each_channel_it_uses() -> None:
    rows = [row(None, "email", False), row("billing", "email", True)]

    resolved = resolve(rows, {"mention": ["in_app", "email", "email"], "billing": ["email"], "empty": []})

    assert resolved == {
        "billing": {"email": True},
        "empty": {},
        "mention": {"email": False, "in_app": True},
    }
