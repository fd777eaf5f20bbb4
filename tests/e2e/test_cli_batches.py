"""`tocsin runs show` of a batched run (SPEC 11.5): its items by position, idempotency key and when they joined,
never their data, which `--json` has. A real Postgres, CliRunner (as tests/e2e/test_cli.py does)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from journeys import RECIPIENT, TENANT, journey, step
from test_cli import Cli, on_db

from tocsin.core.models import Run
from tocsin.db import Database
from tocsin.engine import create_run, progress_run
from tocsin.engine.registry import register_definition

DIGEST = journey(
    "digest",
    step("email", "email", content={"body": "{% for item in items %}{{ item.actor }} {% endfor %}"}),
    batch={"window": "PT10M", "key": "{{ post }}"},
)
SECRET = "the-excerpt-only-json-shows"


@pytest.fixture(autouse=True)
def in_a_folder_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands look for a running `tocsin dev` in ./.tocsin: never the one a developer runs in the checkout."""
    monkeypatch.chdir(tmp_path)


def digest_of_three(url: str, *, close: bool, prefix: str = "comment") -> Run:
    """Three comments on one post, a second apart, keyed `<prefix>-1` ...; with `close`, the batch closed at its
    due time."""
    now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    async def work(db: Database) -> Run:
        await register_definition(db, DIGEST, now=now)
        for n, actor in enumerate(("Ada", "Bob", "Cy")):
            run, _ = await create_run(
                db,
                tenant_id=TENANT,
                workflow_key="digest",
                recipient=RECIPIENT,
                idempotency_key=f"{prefix}-{n + 1}",
                data={"actor": actor, "post": "p1", "excerpt": SECRET},
                now=now + timedelta(seconds=n),
            )
        if close:
            run = (await progress_run(db, run.id, now=now + timedelta(minutes=10))).run
        return run

    return on_db(url, work)


def test_runs_show_lists_a_batch_s_items_without_their_data(fresh_db_url: str) -> None:
    run = digest_of_three(fresh_db_url, close=False)
    cli = Cli(fresh_db_url)

    shown = cli("runs", "show", str(run.id), "--tenant", TENANT).stdout

    lines = shown.splitlines()
    assert any(line.startswith("items (3)") for line in lines)
    cells = [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines]
    for position, second in ((1, "00"), (2, "01"), (3, "02")):
        assert [str(position), f"comment-{position}", f"2026-03-02 09:00:{second}"] in cells, shown
    assert SECRET not in shown and "Bob" not in shown
    assert {"collecting", "collecting_batch", "batch_item_added", "item=3"} <= set(shown.replace("│", " ").split())
    assert "due=2026-03-02 09:10:00" in shown  # the first transition says when the batch is due
    detail = cli.json("runs", "show", str(run.id), "--tenant", TENANT)
    assert [(i["position"], i["idempotency_key"], i["data"]["actor"]) for i in detail["items"]] == [
        (1, "comment-1", "Ada"),
        (2, "comment-2", "Bob"),
        (3, "comment-3", "Cy"),
    ]
    assert {i["data"]["excerpt"] for i in detail["items"]} == {SECRET}
    assert str(run.id) in cli("runs", "list", "--tenant", TENANT, "--state", "collecting").stdout


def test_runs_show_of_a_closed_batch_and_the_compact_layout(fresh_db_url: str) -> None:
    prefix = "forum-post-4711-comment-from-the-mobile-app"  # a key too long for a table row in 60 columns
    run = digest_of_three(fresh_db_url, close=True, prefix=prefix)
    narrow = Cli(fresh_db_url, settings={"COLUMNS": "60"})

    shown = narrow("runs", "show", str(run.id), "--tenant", TENANT).stdout

    assert max(len(line) for line in shown.splitlines()) <= 60, shown
    lines = [line.strip() for line in shown.splitlines()]
    assert ["#1  joined 2026-03-02 09:00:00", f"key {prefix}-1"] == lines[lines.index("items (3, UTC)") + 1 :][:2]
    assert {"batch_closed", "items=3", "#3", f"{prefix}-3"} <= set(shown.split())
    assert SECRET not in shown
    listed = narrow("runs", "list", "--tenant", TENANT, "--state", "collecting").stdout
    assert str(run.id) not in listed
