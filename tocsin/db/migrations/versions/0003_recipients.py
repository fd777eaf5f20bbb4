"""Recipients and their preferences (SPEC 12.1), archived inbox items and the inbox's NOTIFY trigger (SPEC 12.2).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

S = "tocsin"


def ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "preferences",
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("recipient", sa.Text, nullable=False),
        sa.Column("workflow_key", sa.Text, nullable=True),
        sa.Column("channel", sa.Text, nullable=True),
        sa.Column("opted_in", sa.Boolean, nullable=False),
        ts("updated_at"),
        schema=S,
    )
    # NULL means "any" workflow or channel, so NULLs must collide: one row per scope.
    op.create_index(
        "preferences_scope_key",
        "preferences",
        ["tenant_id", "recipient", "workflow_key", "channel"],
        unique=True,
        schema=S,
        postgresql_nulls_not_distinct=True,
    )
    op.create_table(
        "recipients",
        sa.Column("tenant_id", sa.Text, primary_key=True),
        sa.Column("recipient", sa.Text, primary_key=True),
        sa.Column("timezone", sa.Text, nullable=True),
        ts("updated_at"),
        schema=S,
    )
    op.add_column("deliveries", ts("archived_at", nullable=True), schema=S)
    # The inbox stream (SPEC 12.2): one channel for every tenant; listeners pick their recipient's rows.
    # 'item' when an in-app delivery lands, 'counts' when a receipt or the archive stamp changes.
    op.execute(
        f"""
        CREATE FUNCTION {S}.notify_inbox() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            kind text;
        BEGIN
            IF NEW.status = 'succeeded' AND (TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM 'succeeded') THEN
                kind := 'item';
            ELSIF TG_OP = 'UPDATE' AND NEW.status = 'succeeded' AND (
                NEW.read_at IS DISTINCT FROM OLD.read_at
                OR NEW.seen_at IS DISTINCT FROM OLD.seen_at
                OR NEW.archived_at IS DISTINCT FROM OLD.archived_at
            ) THEN
                kind := 'counts';
            ELSE
                RETURN NULL;
            END IF;
            PERFORM pg_notify(
                'tocsin_inbox',
                json_build_object(
                    'kind', kind, 'id', NEW.id, 'tenant_id', NEW.tenant_id, 'recipient', NEW.recipient
                )::text
            );
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        f"CREATE TRIGGER deliveries_notify_inbox AFTER INSERT OR UPDATE ON {S}.deliveries "
        f"FOR EACH ROW WHEN (NEW.channel = 'in_app') EXECUTE FUNCTION {S}.notify_inbox()"
    )


def downgrade() -> None:
    op.execute(f"DROP TRIGGER deliveries_notify_inbox ON {S}.deliveries")
    op.execute(f"DROP FUNCTION {S}.notify_inbox()")
    op.drop_column("deliveries", "archived_at", schema=S)
    op.drop_table("recipients", schema=S)
    op.drop_table("preferences", schema=S)
