"""The due sweep's index ends with the run id: `(due_at, id) WHERE state = 'waiting'`, was `(state, due_at)`.

The sweep pages by `(due_at, id)` (`NEXT_DUE_RUN`, `ORDER BY due_at, id`). Without `id` in the index, runs that
share a `due_at` (a campaign started at once, a delay from one moment) made each keyset lookup read and sort
the whole tie group to return one row: quadratic over a sweep. `state` in the key was redundant with the
partial index's predicate (the `collecting` runs' index of 0005 is `(due_at, id)` already). The index is
rebuilt in the migration's transaction, blocking writes to the runs while it builds; it covers waiting runs
only (bench/RESULTS.md, "the due index").

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

S = "tocsin"
NAME = "workflow_runs_waiting_due"
WAITING = sa.text("state = 'waiting'")


def upgrade() -> None:
    op.drop_index(NAME, "workflow_runs", schema=S)
    op.create_index(NAME, "workflow_runs", ["due_at", "id"], schema=S, postgresql_where=WAITING)


def downgrade() -> None:
    op.drop_index(NAME, "workflow_runs", schema=S)
    op.create_index(NAME, "workflow_runs", ["state", "due_at"], schema=S, postgresql_where=WAITING)
