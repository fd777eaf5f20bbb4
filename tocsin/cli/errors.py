"""The CLI's two kinds of failure, and the one-line reasons it gives for servers it cannot reach.

Bad input (exit 2) is a `TocsinError` that names what to change in the command: a definition, a run id, a
tenant, an argument. An environment fault (exit 1) is anything the command line cannot fix: a server that
is unreachable, not set up or cannot be started, a setting in the environment that cannot work.
"""

from __future__ import annotations

import os
import re

# The transport errors of the SDK's core quote the cause: `message: "Connection refused"` (an OS error),
# `error: "failed to lookup address information: ..."` (DNS), a gRPC status's `message: "..."`.
_QUOTED_CAUSE = re.compile(r'\b(?:message|error): "([^"]+)"')


class EnvironmentFault(Exception):
    """A server tocsin needs cannot be reached, is not set up or cannot be started: exit 1."""


def lowercase_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def transport_cause(error: BaseException) -> str:
    """`connection refused` from the SDK core's `tonic::transport::Error(... message: "Connection refused" ...)`."""
    text = str(error)
    found = _QUOTED_CAUSE.search(text)
    if found:
        return lowercase_first(found.group(1))
    first = text.removeprefix("Failed client connect: ").splitlines()[0] if text else type(error).__name__
    return lowercase_first(first)


def os_cause(error: BaseException) -> str:
    """`connection refused` from asyncpg's `OSError(111, "Connect call failed ('127.0.0.1', 5432)")`, the
    resolver's own words for a DNS failure (negative errno), else the error's text."""
    if isinstance(error, OSError):
        if error.errno is not None and error.errno > 0:
            return lowercase_first(os.strerror(error.errno))
        if error.strerror:
            return lowercase_first(error.strerror)
    return lowercase_first(str(error))


def temporal_unreachable(address: str, error: BaseException) -> EnvironmentFault:
    return EnvironmentFault(f"cannot reach Temporal at {address} ({transport_cause(error)})")
