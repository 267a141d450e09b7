"""Create verifications, submissions and webhook events.

Revision ID: 0001
Revises:
Create Date: 2026-12-03 16:21:41.069744

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "submissions",
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("user_access_code", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key_hash"),
    )
    op.create_table(
        "verifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_access_code", sa.String(length=36), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("raw_status", sa.String(length=100), nullable=True),
        sa.Column("verification_method", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("link_issued_at", sa.DateTime(), nullable=True),
        sa.Column("last_event_at", sa.DateTime(), nullable=True),
        sa.Column("decided_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("user_access_code"),
    )
    with op.batch_alter_table("verifications", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_verifications_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_verifications_state"), ["state"], unique=False)

    op.create_table(
        "webhook_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=100), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("user_access_code", sa.String(length=36), nullable=True),
        sa.Column("raw_status", sa.String(length=100), nullable=True),
        sa.Column("verification_method", sa.String(length=100), nullable=True),
        sa.Column("event_date", sa.DateTime(), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("orphan", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
    )
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_webhook_events_received_at"), ["received_at"], unique=False
        )
        batch_op.create_index(
            "ix_webhook_events_uac_date", ["user_access_code", "event_date"], unique=False
        )


def downgrade():
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_events_uac_date")
        batch_op.drop_index(batch_op.f("ix_webhook_events_received_at"))

    op.drop_table("webhook_events")
    with op.batch_alter_table("verifications", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_verifications_state"))
        batch_op.drop_index(batch_op.f("ix_verifications_created_at"))

    op.drop_table("verifications")
    op.drop_table("submissions")
