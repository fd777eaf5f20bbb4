"""`tocsin preferences show|set` (SPEC 12.1): a recipient's notification preferences from the shell.

They work on Postgres alone: a preference is read by the next send, no workflow needs telling.
"""

from __future__ import annotations

from datetime import UTC
from typing import Annotated

import typer
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from tocsin.cli.app import (
    DatabaseUrl,
    JsonOutput,
    Recipient,
    Tenant,
    app,
    command,
    load_settings,
    open_database,
    show,
)
from tocsin.cli.render import as_json
from tocsin.client import utcnow
from tocsin.core.errors import InvalidRequest
from tocsin.core.preferences import Preferences
from tocsin.engine.preferences import preferences, set_preference

preferences_app = typer.Typer(help="Show and set a recipient's notification preferences.", no_args_is_help=True)
app.add_typer(preferences_app, name="preferences")

ANY = "(any)"


def _choice(opted_in: bool) -> Text:
    return Text("opted in", style="green") if opted_in else Text("opted out", style="red")


def preferences_view(found: Preferences) -> RenderableType:
    """The rows the recipient set (most general first), then what each registered workflow's channels resolve to."""
    rows = Table(title="preferences set", title_justify="left")
    for column in ("workflow", "channel", "choice", "updated (UTC)"):
        rows.add_column(column)
    for row in found.rows:
        rows.add_row(
            Text(row.workflow_key or ANY),  # Text: a key is shown as written, never read as Rich markup
            Text(row.channel or ANY),
            _choice(row.opted_in),
            row.updated_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        )
    resolved = Table(title="resolved (no row: opted in)", title_justify="left")
    for column in ("workflow", "channel", "sends"):
        resolved.add_column(column)
    for workflow_key, channels in found.resolved.items():
        for channel, opted_in in channels.items():
            resolved.add_row(Text(workflow_key), Text(channel), _choice(opted_in))
    parts: list[RenderableType] = [rows if found.rows else Text("no preferences set: opted in to everything")]
    if found.resolved:
        parts.append(resolved)
    return Group(*parts)


@command(preferences_app, "show")
async def preferences_show(
    tenant: Tenant, recipient: Recipient, json_output: JsonOutput = False, database_url: DatabaseUrl = None
) -> None:
    """Show a recipient's preferences and what they resolve to for every registered journey."""
    async with await open_database(load_settings(database_url, uses_temporal=False)) as db:
        found = await preferences(db, tenant_id=tenant, recipient=recipient)
    if json_output:
        typer.echo(as_json(found))
    else:
        show(lambda _: preferences_view(found))


@command(preferences_app, "set")
async def preferences_set(
    tenant: Tenant,
    recipient: Recipient,
    workflow: Annotated[
        str | None, typer.Option("--workflow", help="Only this journey key; default: any.", show_default=False)
    ] = None,
    channel: Annotated[
        str | None, typer.Option("--channel", help="Only this channel, e.g. email; default: any.", show_default=False)
    ] = None,
    opt_in: Annotated[bool, typer.Option("--opt-in", help="Send in this scope.")] = False,
    opt_out: Annotated[
        bool, typer.Option("--opt-out", help="Send nothing in this scope (required steps still go).")
    ] = False,
    json_output: JsonOutput = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Opt a recipient in or out of one scope; the most specific scope decides each send.

    Scopes, most specific first: --workflow and --channel, --workflow alone, --channel alone, neither.
    Setting a scope again replaces its choice.
    """
    if opt_in == opt_out:  # before connecting: nothing to write
        raise InvalidRequest("pass exactly one of --opt-in or --opt-out")
    async with await open_database(load_settings(database_url, uses_temporal=False)) as db:
        found = await set_preference(
            db,
            tenant_id=tenant,
            recipient=recipient,
            opted_in=opt_in,
            workflow_key=workflow,
            channel=channel,
            now=utcnow(),
        )
    if json_output:
        typer.echo(as_json(found))
        return
    scope = f"workflow {workflow or ANY}, channel {channel or ANY}"
    typer.echo(f"{recipient} is {'opted in' if opt_in else 'opted out'} for {scope}")
    show(lambda _: preferences_view(found))
