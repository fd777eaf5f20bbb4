"""delivery_attempts.send_number: the send a result row belongs to, an explicit fact instead of a clock comparison.

Rows written before this migration keep NULL: dispatch then treats an in-flight send as having no result
and sends it again under the same idempotency key, which the provider can drop.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

S = "tocsin"


def upgrade() -> None:
    op.add_column("delivery_attempts", sa.Column("send_number", sa.Integer, nullable=True), schema=S)
    op.create_check_constraint(
        "delivery_attempts_send_number_positive", "delivery_attempts", "send_number > 0", schema=S
    )


def downgrade() -> None:
    op.drop_constraint("delivery_attempts_send_number_positive", "delivery_attempts", schema=S)
    op.drop_column("delivery_attempts", "send_number", schema=S)
