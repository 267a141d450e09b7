"""Keep the latest Medallion token for reconciliation.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 16:31:46.580727

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("verifications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("medallion_token", sa.String(length=100), nullable=True))


def downgrade():
    with op.batch_alter_table("verifications", schema=None) as batch_op:
        batch_op.drop_column("medallion_token")
