"""The command line (`tocsin ...`), its renderers, the local dev stack and the demo."""

from tocsin.cli.app import main

__all__ = ["main"]
