"""Jobs keep what their dialect needs to answer later (``reply``: e.g. ModelsLab's track_id
and base64 flag) and how their webhook body is written (``webhook_format``), so a reply or
a webhook after a restart is the same as before it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: Union[str, Sequence[str], None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("reply", sa.Text(), nullable=True))
        batch.add_column(sa.Column("webhook_format", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("webhook_format")
        batch.drop_column("reply")
