"""Version 5: the queue's holder count as a column (label_items.holders), filled from
assignments, and the queue's index.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ALTER TABLE ADD COLUMN on both (batch mode would copy the table on SQLite).
    op.add_column("label_items", sa.Column("holders", sa.Integer(), nullable=False, server_default=sa.text("0")))
    op.execute(
        "UPDATE label_items SET holders = (SELECT COUNT(*) FROM assignments WHERE assignments.item_id = label_items.id)"
    )
    op.create_index(op.f("ix_label_items_queue"), "label_items", [sa.text("priority DESC"), "id", "holders"])
