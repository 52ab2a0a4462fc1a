"""Version 7: rater quality and what to label next. A label item may be gold (`gold`: its known
verdict); `repeats` keeps a rater's second verdict on an item shown to them again; `boost` puts
items ahead of `priority` in the queue, and the queue's index leads with it.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE ADD COLUMNs on both (batch mode would copy the table on SQLite).
    op.add_column("label_items", sa.Column("gold", sa.Text(), nullable=True))
    op.add_column("label_items", sa.Column("boost", sa.Integer(), nullable=False, server_default=sa.text("0")))
    op.drop_index(op.f("ix_label_items_queue"), table_name="label_items")
    op.create_index(
        op.f("ix_label_items_queue"), "label_items", [sa.text("boost DESC"), sa.text("priority DESC"), "id", "holders"]
    )
    op.create_table(
        "repeats",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("rater_id", sa.Integer(), nullable=False),
        sa.Column("shown_at", sa.DateTime(), nullable=False),
        sa.Column("answered_at", sa.DateTime(), nullable=True),
        sa.Column("verdict", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_repeats")),
        sa.UniqueConstraint("item_id", "rater_id", name=op.f("uq_repeats_item_id_rater_id")),
        sa.CheckConstraint("verdict IN ('good', 'bad')", name=op.f("ck_repeats_verdict_allowed")),
        sa.ForeignKeyConstraint(["item_id"], ["label_items.id"], name=op.f("fk_repeats_item_id_label_items")),
        sa.ForeignKeyConstraint(["rater_id"], ["raters.id"], name=op.f("fk_repeats_rater_id_raters")),
    )
    for column in ("item_id", "rater_id"):
        op.create_index(op.f(f"ix_repeats_{column}"), "repeats", [column])
