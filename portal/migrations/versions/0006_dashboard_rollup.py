"""The dashboard's daily roll-up tables, filled from the existing records.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from portal.store import rollup

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# The records as they are at this revision (naive UTC times), not as the models may grow.
RECORDS = sa.table(
    "verifications",
    sa.column("created_at", sa.DateTime()),
    sa.column("state", sa.String()),
    sa.column("link_issued_at", sa.DateTime()),
    sa.column("decided_at", sa.DateTime()),
)


def upgrade():
    days = op.create_table(
        "daily_counts",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("created", sa.Integer(), nullable=False),
        sa.Column("linked", sa.Integer(), nullable=False),
        sa.Column("decided", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", "state"),
    )
    times = op.create_table(
        "decision_time_counts",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("bucket", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("decided", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", "bucket"),
    )
    connection = op.get_bind()
    # Streamed in batches; execution_options on the statement, as on the connection they
    # would stay set for alembic's own statements after this one.
    query = sa.select(RECORDS).execution_options(yield_per=rollup.REBUILD_BATCH)
    rollup.insert_tally(rollup.tally(connection.execute(query)), days, times, connection.execute)


def downgrade():
    op.drop_table("decision_time_counts")
    op.drop_table("daily_counts")
