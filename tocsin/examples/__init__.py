"""Journey definitions shipped with tocsin: the README's examples, used by the demo, tests and benchmarks."""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml


def example(name: str, **overrides: Any) -> dict[str, Any]:
    """The example journey `name` (a YAML file here) as a fresh dict; `overrides` replace top-level fields."""
    text = resources.files(__name__).joinpath(f"{name}.yaml").read_text()
    definition: dict[str, Any] = yaml.safe_load(text)
    return definition | overrides
