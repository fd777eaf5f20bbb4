"""The Temporal layer: connecting a client, starting and waking run workflows, building the worker."""
