"""Version 2: label items get a priority (the queue hands out higher ones first).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ALTER TABLE ADD COLUMN on both (batch mode would copy the table on SQLite).
    op.add_column("label_items", sa.Column("priority", sa.Integer(), nullable=False, server_default=sa.text("0")))
