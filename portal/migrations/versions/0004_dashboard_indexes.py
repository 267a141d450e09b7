"""Indexes for the admin dashboard: keyset record pages and date-range aggregates.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 18:00:00.000000

"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_verifications_created_cover": [
        "created_at",
        "id",
        "state",
        "link_issued_at",
        "updated_at",
    ],
    "ix_verifications_updated_id": ["updated_at", "id"],
    "ix_verifications_state_created": ["state", "created_at", "id"],
    "ix_verifications_state_updated": ["state", "updated_at", "id"],
    "ix_verifications_decided_cover": ["decided_at", "state", "created_at"],
}


def upgrade():
    with op.batch_alter_table("verifications", schema=None) as batch_op:
        for name, columns in INDEXES.items():
            batch_op.create_index(name, columns, unique=False)


def downgrade():
    with op.batch_alter_table("verifications", schema=None) as batch_op:
        for name in reversed(INDEXES):
            batch_op.drop_index(name)
