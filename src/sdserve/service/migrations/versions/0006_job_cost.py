"""Metering: each job's cost (compute units, known before it runs), compute credits and
usage plus per-request limits on keys, and rate-limit buckets shared by every server on
the database (one limit per key, not one per process).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: Union[str, Sequence[str], None] = "0005"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("cost", sa.Float(), nullable=False, server_default="0"))
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("compute_credits", sa.Float(), nullable=True))
        batch.add_column(sa.Column("compute_used", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("limits", sa.Text(), nullable=True))
    op.create_table(
        "rate_buckets",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rate_buckets")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("limits")
        batch.drop_column("compute_used")
        batch.drop_column("compute_credits")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("cost")
