"""`tocsin definitions check` and `tocsin definitions graph` (SPEC 13), and the worker's channel warning.

Neither command needs a database or a server: a definition is read and validated as `register` would,
so `check` fits a pre-commit hook or CI. The commands are registered on the `definitions` group in
tocsin/cli/app.py.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from tocsin.core.definitions import WorkflowDefinition, load_definition
from tocsin.core.documents import read_document
from tocsin.core.errors import DefinitionError, InvalidDocument, Problem
from tocsin.core.graph import render
from tocsin.core.limits import printable
from tocsin.db import Database
from tocsin.engine.registry import list_definitions

BAD_INPUT = 2

log = logging.getLogger("tocsin.cli")


def unknown_channels(document: object, channels: Collection[str]) -> list[tuple[int, str]]:
    """(index, channel) of every step of a definition document whose channel is not in `channels`.

    Read from the document as written (or a stored spec), so that it is found alongside the other problems
    of a definition that does not validate.
    """
    steps = document.get("steps") if isinstance(document, Mapping) else None
    if not isinstance(steps, list | tuple):
        return []
    return [
        (i, step["channel"])
        for i, step in enumerate(steps)
        if isinstance(step, Mapping) and isinstance(step.get("channel"), str) and step["channel"] not in channels
    ]


def channel_problems(document: object, channels: Collection[str]) -> list[Problem]:
    known = ", ".join(sorted(channels))
    return [
        Problem(f"steps[{i}].channel", "unknown_channel", f"channel {printable(repr(name))} is not one of {known}")
        for i, name in unknown_channels(document, channels)
    ]


def file_problems(path: Path, channels: Collection[str] | None) -> list[Problem]:
    """Every problem of the definition in the file at `path`: unreadable, not a document, invalid, or (with
    `channels`) on a channel outside them."""
    try:
        document = read_document(path)
    except InvalidDocument as exc:
        return [Problem("", "invalid_document", str(exc))]
    problems: list[Problem] = []
    try:
        WorkflowDefinition.parse(document)  # type: ignore[arg-type]  # parse refuses what is no mapping
    except DefinitionError as exc:
        problems.extend(exc.problems)
    if channels is not None:
        problems.extend(channel_problems(document, channels))
    return problems


def problem_line(path: str, problem: Problem) -> str:
    """`FILE:location: message [code]`; a problem of the whole file has no location: `FILE: message [code]`."""
    where = f"{path}:{problem.location}" if problem.location else path
    return f"{where}: {problem.message} [{problem.code}]"


def parse_channels(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise typer.BadParameter(
            "expected channel names separated by commas, e.g. in_app,email", param_hint="'--channels'"
        )
    return names


# Strings, not Paths: a problem line names the file as it was given (a Path would drop a leading ./).
Files = Annotated[
    list[str],
    typer.Argument(metavar="FILE...", help="Journey definitions: .yaml, .yml or .json files.", show_default=False),
]
Channels = Annotated[
    str | None,
    typer.Option(
        "--channels",
        help="Comma-separated channels the workers serve, e.g. in_app,email: other channels are problems.",
        show_default=False,
    ),
]


async def check(files: Files, channels: Channels = None) -> None:
    """Validate journey definitions without a database or server: each problem on a line of its own
    (file, location, message and code). Exit 2 on any problem, 0 when all are valid."""
    allowed = parse_channels(channels)
    found = 0
    failing = 0
    for name in files:
        problems = file_problems(Path(name), allowed)
        for problem in problems:
            typer.echo(problem_line(printable(name), problem))
        found += len(problems)
        failing += bool(problems)
    if found:
        typer.echo(f"error: {_count(found, 'problem')} in {failing} of {_count(len(files), 'file')}", err=True)
        raise typer.Exit(BAD_INPUT)
    typer.echo(f"{_count(len(files), 'definition')} valid")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


class GraphFormatOption(StrEnum):
    mermaid = "mermaid"
    dot = "dot"


async def graph(
    file: Annotated[Path, typer.Argument(help="A journey definition: .yaml, .yml or .json.", show_default=False)],
    format: Annotated[
        GraphFormatOption, typer.Option("--format", help="mermaid (GitHub renders it) or dot (Graphviz).")
    ] = GraphFormatOption.mermaid,
) -> None:
    """Print a journey definition as a diagram: steps as nodes, rules as labelled edges."""
    typer.echo(render(load_definition(file), format.value), nl=False)


async def warn_unknown_channels(db: Database, channels: Collection[str]) -> None:
    """Log a warning for every registered definition with a step on a channel this worker has no adapter
    for: such a delivery fails with `no_channel_adapter`, and a typo (`smss`) would otherwise go unnoticed."""
    for record in await list_definitions(db):
        missing = list(dict.fromkeys(name for _, name in unknown_channels(record.spec, channels)))
        if missing:
            log.warning(
                "definition %s version %s uses %s, which this worker has no adapter for: its deliveries "
                "there will fail with no_channel_adapter",
                record.key,
                record.version,
                ", ".join(f"channel {printable(repr(name))}" for name in missing),
                extra={"definition": record.key, "version": record.version, "channels": missing},
            )
