"""Testing journeys with pytest (SPEC 13): the `tocsin_db` and `journeys` fixtures, RecordingChannel.

The fixtures come from the plugin (tocsin.testing.plugin), which pytest loads by itself wherever tocsin is
installed; the `testing` extra brings what they run on. A journey test::

    async def test_mention(journeys):
        await journeys.register("journeys/mention.yaml")
        run = await journeys.tocsin.start_run(...)
        detail = await journeys.run_to_end(run)
        assert detail.run.state == "completed"

Names are imported lazily: pytest imports this package for the plugin in every test session.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tocsin import _lazy_exports

_EXPORTS = {
    "ACTIONS": "tocsin.testing.channels",
    "Action": "tocsin.testing.channels",
    "RecordingChannel": "tocsin.testing.channels",
    "JourneyDidNotFinish": "tocsin.testing.journeys",
    "Journeys": "tocsin.testing.journeys",
    "eventually": "tocsin.testing.journeys",
    "start_time_skipping_server": "tocsin.testing.journeys",
}

__all__ = sorted(_EXPORTS)


__getattr__ = _lazy_exports(globals(), _EXPORTS)


if TYPE_CHECKING:
    from tocsin.testing.channels import ACTIONS, Action, RecordingChannel
    from tocsin.testing.journeys import JourneyDidNotFinish, Journeys, eventually, start_time_skipping_server
