"""`tocsin preferences show|set` end to end: a real Postgres, CliRunner (as tests/e2e/test_cli.py does)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from journeys import ESCALATION, RECIPIENT, TENANT, snapshot
from test_cli import Cli, on_db

from tocsin.db import Database
from tocsin.engine.preferences import opted_out
from tocsin.engine.registry import register_definition


@pytest.fixture(autouse=True)
def in_a_folder_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands look for a running `tocsin dev` in ./.tocsin: never the one a developer runs in the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def cli(fresh_db_url: str) -> Cli:
    async def register(db: Database) -> None:
        await register_definition(db, ESCALATION, now=datetime.now(UTC))

    on_db(fresh_db_url, register)
    return Cli(fresh_db_url)


WHO = ("--tenant", TENANT, "--recipient", RECIPIENT)


def scopes(found: dict[str, Any]) -> list[tuple[str | None, str | None, bool]]:
    return [(row["workflow_key"], row["channel"], row["opted_in"]) for row in found["rows"]]


def test_show_with_no_rows_resolves_every_registered_channel_to_opted_in(cli: Cli) -> None:
    assert cli.json("preferences", "show", *WHO) == {
        "rows": [],
        "resolved": {"mention_escalation": {"email": True, "in_app": True}},
    }
    text = cli("preferences", "show", *WHO).stdout
    assert "no preferences set: opted in to everything" in text
    assert "mention_escalation" in text


def test_set_writes_one_scope_and_setting_it_again_updates_it(cli: Cli, fresh_db_url: str) -> None:
    out = cli("preferences", "set", *WHO, "--channel", "email", "--opt-out")
    assert out.stdout.splitlines()[0] == f"{RECIPIENT} is opted out for workflow (any), channel email"

    found = cli.json("preferences", "set", *WHO, "--workflow", "mention_escalation", "--channel", "email", "--opt-in")
    assert scopes(found) == [(None, "email", False), ("mention_escalation", "email", True)]
    assert found["resolved"] == {"mention_escalation": {"email": True, "in_app": True}}

    again = cli.json("preferences", "set", *WHO, "--channel", "email", "--opt-in")
    assert scopes(again) == [(None, "email", True), ("mention_escalation", "email", True)]
    assert cli.json("preferences", "show", *WHO) == again

    cli("preferences", "set", *WHO, "--workflow", "mention_escalation", "--opt-out")
    shown = cli("preferences", "show", *WHO).stdout
    assert "opted out" in shown and "(any)" in shown
    # What dispatch reads: the workflow's row outranks the any-workflow email row, not the (workflow, email) one.
    decided = on_db(
        fresh_db_url,
        lambda db: opted_out(db, tenant_id=TENANT, recipient=RECIPIENT, workflow_key="mention_escalation",
                             channel="in_app"),
    )  # fmt: skip
    assert decided is True


def test_set_is_scoped_to_the_tenant_and_recipient(cli: Cli) -> None:
    cli("preferences", "set", *WHO, "--opt-out")
    assert cli.json("preferences", "show", "--tenant", "globex", "--recipient", RECIPIENT)["rows"] == []
    assert cli.json("preferences", "show", "--tenant", TENANT, "--recipient", "user:7")["rows"] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "error: pass exactly one of --opt-in or --opt-out"),
        (("--opt-in", "--opt-out"), "error: pass exactly one of --opt-in or --opt-out"),
        (("--channel", " ", "--opt-out"), "error: channel must not be blank"),
        (("--workflow", "", "--opt-in"), "error: workflow_key must not be blank"),
    ],
)
def test_bad_input_to_set_exits_2_with_one_line_and_writes_nothing(
    cli: Cli, fresh_db_url: str, args: tuple[str, ...], message: str
) -> None:
    before = on_db(fresh_db_url, snapshot)

    assert cli.error("preferences", "set", *WHO, *args, code=2) == message

    assert on_db(fresh_db_url, snapshot) == before
    assert cli.json("preferences", "show", *WHO)["rows"] == []


SET = ("preferences", "set")
SHOW = ("preferences", "show")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((*SHOW, "--tenant", " ", "--recipient", RECIPIENT), "error: tenant_id must not be blank"),
        ((*SET, "--tenant", TENANT, "--recipient", "", "--opt-in"), "error: recipient must not be blank"),
        (
            (*SHOW, "--tenant", TENANT),
            "error: missing option '--recipient'; see 'tocsin preferences show --help'",
        ),
        (
            (*SET, *WHO, "--opt-in", "--colour", "red"),
            "error: no such option: --colour; see 'tocsin preferences set --help'",
        ),
    ],
)
def test_bad_arguments_exit_2_with_one_line(cli: Cli, args: tuple[str, ...], message: str) -> None:
    assert cli.error(*args, code=2) == message


def test_an_unreachable_database_is_one_line_exit_1(cli: Cli) -> None:
    broken = Cli("postgresql://tocsin@127.0.0.1:1/nowhere")
    line = broken.error("preferences", "show", *WHO, code=1)
    assert line.startswith("error: cannot reach the database at postgresql")
    assert cli.json("preferences", "show", *WHO)["rows"] == []
