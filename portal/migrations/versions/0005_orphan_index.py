"""Partial index for listing orphan webhook events.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index(
        "ix_webhook_events_orphan_id",
        "webhook_events",
        ["id"],
        postgresql_where=sa.text("orphan"),
        sqlite_where=sa.text("orphan"),
    )


def downgrade():
    op.drop_index("ix_webhook_events_orphan_id", table_name="webhook_events")
