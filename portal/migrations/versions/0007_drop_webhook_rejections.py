"""Drop webhook_rejections: refused webhooks are counted in the rate-limit storage.

A refused delivery must leave the database unchanged, and a 503 (database down) could never
be written there anyway; portal/refusals.py keeps hourly counters instead. The rows held only
a status code and a time, so nothing is carried over: the health panel's 24-hour counts start
again from zero.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("webhook_rejections", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_rejections_at"))
    op.drop_table("webhook_rejections")


def downgrade():
    op.create_table(
        "webhook_rejections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("webhook_rejections", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_webhook_rejections_at"), ["at"], unique=False)
