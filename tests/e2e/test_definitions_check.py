"""`tocsin definitions check` and `graph` through the CLI, the README's diagrams and pre-commit hook, and the
worker's warning about channels it has no adapter for.

check and graph need no database and no server: they run here with TOCSIN_DATABASE_URL and TEMPORAL_ADDRESS
pointing at a closed port, which any connection would fail on.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from pathlib import Path

import pytest
import yaml
from peers import free_port
from typer.testing import CliRunner, Result

from tocsin.cli.app import app
from tocsin.cli.definitions import warn_unknown_channels
from tocsin.client import utcnow
from tocsin.core.definitions import load_definition
from tocsin.core.graph import dot, mermaid
from tocsin.db import Database
from tocsin.engine.registry import register_definition
from tocsin.examples import example

ROOT = Path(__file__).parents[2]
EXAMPLES = sorted((ROOT / "tocsin" / "examples").glob("*.yaml"))
README = (ROOT / "README.md").read_text()

GOOD = (ROOT / "tocsin" / "examples" / "mention_escalation.yaml").read_text()
# Two problems of the definition itself, and a step on a channel with a typo.
BAD = """\
key: onboarding
version: 0
steps:
  - key: welcome
    channel: smss
    content: {body: "Hi {{ name }}"}
    progress: [{kind: on_outcome, outcome: delivered, to_step: nowhere}]
"""


def tocsin(*args: str, code: int) -> Result:
    closed = f"127.0.0.1:{free_port()}"
    env = {"TOCSIN_DATABASE_URL": f"postgresql://nobody@{closed}/none", "TEMPORAL_ADDRESS": closed}
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder of definition files, the current directory (paths are given relative to it)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "journeys").mkdir()
    (tmp_path / "journeys" / "mention.yaml").write_text(GOOD)
    (tmp_path / "journeys" / "mention.json").write_text(json.dumps(yaml.safe_load(GOOD)))
    (tmp_path / "journeys" / "onboarding.yaml").write_text(BAD)
    (tmp_path / "journeys" / "latin1.yaml").write_bytes("key: café\n".encode("latin-1"))
    (tmp_path / "journeys" / "list.yaml").write_text("- key: a\n")
    return tmp_path


def test_valid_files_exit_0_with_a_one_line_summary(files: Path) -> None:
    result = tocsin("definitions", "check", "journeys/mention.yaml", "./journeys/mention.json", code=0)
    assert (result.stdout, result.stderr) == ("2 definitions valid\n", "")


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_journey_is_valid(path: Path) -> None:
    result = tocsin("definitions", "check", str(path), "--channels", "in_app,email,sms", code=0)
    assert (result.stdout, result.stderr) == ("1 definition valid\n", "")


def test_every_problem_of_every_file_on_a_line_of_its_own_with_the_path_as_given(files: Path) -> None:
    result = tocsin(
        "definitions",
        "check",
        "./journeys/onboarding.yaml",
        "journeys/mention.yaml",
        "journeys/latin1.yaml",
        "journeys/missing.yaml",
        "journeys",
        "journeys/list.yaml",
        code=2,
    )
    assert result.stdout.splitlines() == [
        "./journeys/onboarding.yaml:version: version must be an int from 1 to 2147483647, got 0 [invalid_version]",
        "./journeys/onboarding.yaml:steps[0].progress[0].to_step: no step of this definition has the key 'nowhere'"
        " [unknown_to_step]",
        "journeys/latin1.yaml: cannot read the file: not UTF-8 (invalid continuation byte at byte 8)"
        " [invalid_document]",
        "journeys/missing.yaml: cannot read the file: [Errno 2] No such file or directory: 'journeys/missing.yaml'"
        " [invalid_document]",
        "journeys: a document file must end in .json, .yaml or .yml [invalid_document]",
        "journeys/list.yaml: a definition must be a mapping [invalid_document]",
    ]
    assert result.stderr == "error: 6 problems in 5 of 6 files\n"


def test_an_unreadable_file_alone_exits_2(files: Path) -> None:
    (files / "journeys" / "folder.yaml").mkdir()
    result = tocsin("definitions", "check", "journeys/folder.yaml", code=2)
    assert result.stdout == (
        "journeys/folder.yaml: cannot read the file: [Errno 21] Is a directory: 'journeys/folder.yaml'"
        " [invalid_document]\n"
    )


def test_channels_outside_the_list_are_unknown_channel_alongside_the_other_problems(files: Path) -> None:
    result = tocsin("definitions", "check", "journeys/onboarding.yaml", "--channels", "in_app, email,sms", code=2)
    assert result.stdout.splitlines()[-1] == (
        "journeys/onboarding.yaml:steps[0].channel: channel 'smss' is not one of email, in_app, sms [unknown_channel]"
    )
    assert len(result.stdout.splitlines()) == 3
    # The mention journey uses in_app and email: one of them missing is a problem too.
    mention = tocsin("definitions", "check", "journeys/mention.yaml", "--channels", "in_app", code=2)
    assert mention.stdout == (
        "journeys/mention.yaml:steps[1].channel: channel 'email' is not one of in_app [unknown_channel]\n"
    )
    assert tocsin("definitions", "check", "journeys/mention.yaml", "--channels", "email,in_app", code=0).stdout == (
        "1 definition valid\n"
    )


def test_bad_arguments_are_one_line_exit_2(files: Path) -> None:
    assert tocsin("definitions", "check", code=2).stderr.startswith("error: missing argument 'FILE...'")
    blank = tocsin("definitions", "check", "journeys/mention.yaml", "--channels", " , ", code=2)
    assert blank.stderr.startswith("error: invalid value for '--channels': expected channel names")
    wrong = tocsin("definitions", "graph", "journeys/mention.yaml", "--format", "png", code=2)
    assert wrong.stderr.startswith("error: invalid value for '--format'")


def test_graph_prints_mermaid_by_default_and_dot_on_request(files: Path) -> None:
    definition = load_definition("journeys/mention.yaml")
    assert tocsin("definitions", "graph", "journeys/mention.yaml", code=0).stdout == mermaid(definition)
    assert tocsin("definitions", "graph", "journeys/mention.yaml", "--format", "dot", code=0).stdout == dot(definition)
    refused = tocsin("definitions", "graph", "journeys/onboarding.yaml", code=2)
    assert refused.stdout == ""
    assert refused.stderr.splitlines()[0] == "error: invalid journey definition (2 problems):"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_the_readme_shows_the_current_diagram_of_each_example_journey(path: Path) -> None:
    output = tocsin("definitions", "graph", str(path), code=0).stdout
    assert f"```mermaid\n{output}```" in README, f"regenerate with: tocsin definitions graph {path.relative_to(ROOT)}"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_the_readme_shows_each_example_journey_as_it_is(path: Path) -> None:
    example_file = load_definition(path)
    blocks = [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", README, re.DOTALL)]
    copies = [block for block in blocks if isinstance(block, dict) and block.get("key") == example_file.key]
    assert copies, f"the README shows no copy of {path.relative_to(ROOT)}"
    assert all(load_definition(copy) == example_file for copy in copies)


def test_the_readme_pre_commit_hook_runs_the_check(files: Path) -> None:
    (block,) = re.findall(r"```yaml\n(# \.pre-commit-config\.yaml\n.*?)```", README, re.DOTALL)
    [hook] = yaml.safe_load(block)["repos"][0]["hooks"]
    assert re.search(hook["files"], "journeys/mention.yaml") and not re.search(hook["files"], "src/app.py")
    command, *args = shlex.split(hook["entry"])
    assert command == "tocsin"
    # pre-commit appends the staged files that match to the entry.
    assert tocsin(*args, "journeys/mention.yaml", code=0).stdout == "1 definition valid\n"
    assert tocsin(*args, "journeys/onboarding.yaml", code=2).stdout.count("\n") == 3  # two, and smss


async def test_the_worker_warns_about_definitions_on_channels_it_cannot_serve(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    typo = example("mention_escalation", key="typo")
    typo["steps"][1]["channel"] = "smss"
    for definition in (example("mention_escalation"), typo):
        await register_definition(db, definition, now=utcnow())
    caplog.set_level(logging.WARNING, logger="tocsin.cli")

    await warn_unknown_channels(db, ["in_app", "email", "log"])

    [warning] = [r for r in caplog.records if r.name == "tocsin.cli"]
    assert warning.levelno == logging.WARNING
    assert warning.getMessage() == (
        "definition typo version 1 uses channel 'smss', which this worker has no adapter for: its deliveries "
        "there will fail with no_channel_adapter"
    )
    caplog.clear()
    await warn_unknown_channels(db, ["in_app", "email", "smss"])
    assert [r for r in caplog.records if r.name == "tocsin.cli"] == []
