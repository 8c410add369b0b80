"""Input images by role: one ``job_inputs`` row per (job, role, position) instead of one row
per job with an ``init_image`` and a ``mask_image`` column, so add-ons' inputs (control
images, IP-Adapter images, ...) need no new column. Existing rows are converted, so queued
jobs of a database written before this run with the same pixels.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: Union[str, Sequence[str], None] = "0004"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# The old column of each role.
_ROLES = (("init", "init_image"), ("mask", "mask_image"))


def upgrade() -> None:
    op.create_table(
        "job_inputs_by_role",
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id"), primary_key=True),
        sa.Column("role", sa.String(32), primary_key=True),
        sa.Column("position", sa.Integer(), primary_key=True, server_default="0"),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )
    for role, column in _ROLES:
        op.execute(f"INSERT INTO job_inputs_by_role (job_id, role, position, data) "  # noqa: S608 - constants
                   f"SELECT job_id, '{role}', 0, {column} FROM job_inputs WHERE {column} IS NOT NULL")
    op.drop_table("job_inputs")
    op.rename_table("job_inputs_by_role", "job_inputs")


def downgrade() -> None:
    op.create_table(
        "job_inputs_by_column",
        sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id"), primary_key=True),
        sa.Column("init_image", sa.LargeBinary(), nullable=True),
        sa.Column("mask_image", sa.LargeBinary(), nullable=True),
    )
    op.execute("INSERT INTO job_inputs_by_column (job_id, init_image, mask_image) SELECT job_id, "
               "MAX(CASE WHEN role = 'init' THEN data END), MAX(CASE WHEN role = 'mask' THEN data END) "
               "FROM job_inputs WHERE position = 0 GROUP BY job_id")
    op.drop_table("job_inputs")
    op.rename_table("job_inputs_by_column", "job_inputs")
