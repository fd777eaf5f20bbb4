"""The public names of the `tocsin` package: pinned, importable, and resolved only when first used."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import tocsin
import tocsin.workflows

PUBLIC = [
    "Attempt",
    "Channel",
    "Database",
    "DefinitionConflict",
    "DefinitionError",
    "DefinitionNotFound",
    "Delivery",
    "DeliveryBounced",
    "DeliveryNotFound",
    "InvalidDeliveryTransition",
    "InvalidRequest",
    "OutboundMessage",
    "PermanentDeliveryError",
    "Progress",
    "Run",
    "RunDetail",
    "RunItem",
    "RunNotFound",
    "SendReceipt",
    "Settings",
    "StartedRun",
    "TemporaryDeliveryError",
    "Tocsin",
    "TocsinError",
    "Transition",
    "WorkflowDefinition",
    "build_worker",
    "ensure_reconcile_schedule",
    "load_definition",
]


def test_the_public_names_are_pinned() -> None:
    # A name added or removed here is a change of the public API: update PUBLIC (and the changelog) on purpose.
    assert PUBLIC == sorted(PUBLIC)
    assert tocsin.__all__ == PUBLIC


def test_importing_tocsin_loads_none_of_its_layers() -> None:
    """Workflow code imports tocsin's pure modules through the package: `import tocsin` must stay cheap."""
    probe = (
        "import json, sys; import tocsin; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('tocsin.', 'sqlalchemy', 'temporalio')))))"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True).stdout)
    assert loaded == []


@pytest.mark.parametrize("name", PUBLIC)
def test_each_name_resolves_to_the_object_its_type_checking_import_names(name: str) -> None:
    """Type checkers read the `if TYPE_CHECKING:` imports, the runtime reads the lazy table: they agree."""
    value = getattr(tocsin, name)
    assert vars(tocsin)[name] is value  # cached after the first lookup
    module = TYPE_CHECKING_IMPORTS[name]
    assert getattr(importlib.import_module(module), name) is value


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        getattr(tocsin, "NoSuchThing")  # noqa: B009
    with pytest.raises(ImportError):
        exec("from tocsin import NoSuchThing", {})


def test_star_import_gives_exactly_the_public_names() -> None:
    namespace: dict[str, object] = {}
    exec("from tocsin import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == PUBLIC


def _type_checking_imports() -> dict[str, str]:
    """name -> module, from the `from M import name` statements under `if TYPE_CHECKING:` in tocsin/__init__.py."""
    tree = ast.parse(Path(tocsin.__file__).read_text())
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom) and statement.module, ast.dump(statement)
                found.update({alias.name: statement.module for alias in statement.names})
    return found


TYPE_CHECKING_IMPORTS = _type_checking_imports()


def test_type_checkers_see_exactly_the_public_names() -> None:
    assert sorted(TYPE_CHECKING_IMPORTS) == PUBLIC


def test_a_workflow_module_loads_no_other_workflow() -> None:
    """The workflow sandbox re-imports a run's workflow module, its package with it, for every run a worker
    holds: a journey's run must not carry a copy of the reconcile workflow (bench/RESULTS.md, issue 14 goal 4)."""
    probe = (
        "import json, sys; import tocsin.workflows.journey; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('tocsin.workflows'))))"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True).stdout)
    assert loaded == ["tocsin.workflows", "tocsin.workflows.journey"]
    from tocsin.workflows import JourneyWorkflow, ReconcileWorkflow

    assert (JourneyWorkflow.__name__, ReconcileWorkflow.__name__) == ("JourneyWorkflow", "ReconcileWorkflow")
    with pytest.raises(AttributeError, match="no attribute 'NoSuchWorkflow'"):
        getattr(tocsin.workflows, "NoSuchWorkflow")  # noqa: B009


def test_a_worker_does_not_load_the_migrations_tool() -> None:
    """alembic is ~13 MB of a worker's RSS, and a worker never migrates: it is imported by `migrate` only."""
    probe = "import sys; import tocsin.cli.app, tocsin.temporal.worker; print('alembic' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout == "False\n"
