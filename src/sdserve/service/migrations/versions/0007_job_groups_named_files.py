"""Job groups (a dialect's request that became several jobs, e.g. a ComfyUI prompt) and
named files (the names a dialect gives uploads and outputs, e.g. ComfyUI's /view), so
a prompt's history and its files survive a restart.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: Union[str, Sequence[str], None] = "0006"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "job_groups",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("dialect", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("job_ids", sa.Text(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=True),
    )
    op.create_index("ix_job_groups_dialect_owner", "job_groups", ["dialect", "owner", "created_at"])
    op.create_table(
        "named_files",
        sa.Column("dialect", sa.String(32), primary_key=True),
        sa.Column("owner_ns", sa.String(64), primary_key=True),
        sa.Column("folder", sa.String(16), primary_key=True),
        sa.Column("subfolder", sa.String(255), primary_key=True),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("prefix", sa.String(255), nullable=True),
        sa.Column("counter", sa.Integer(), nullable=True),
        sa.Column("key", sa.String(512), nullable=True),
        sa.Column("job_id", sa.String(64), nullable=True),
        sa.Column("image_index", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_named_files_job_id", "named_files", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_named_files_job_id", table_name="named_files")
    op.drop_table("named_files")
    op.drop_index("ix_job_groups_dialect_owner", table_name="job_groups")
    op.drop_table("job_groups")
