"""Version 4: blind A/B votes from the Compare tab.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    text, json = sa.Text(), sa.JSON()
    op.create_table(
        "preferences",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rater_id", sa.Integer(), nullable=False),
        sa.Column("conversation_a_id", sa.Integer(), nullable=True),
        sa.Column("conversation_b_id", sa.Integer(), nullable=True),
        sa.Column("persona_name", text, nullable=False),
        sa.Column("persona", json, nullable=False),
        sa.Column("context", json, nullable=False),
        sa.Column("reply_a", text, nullable=False),
        sa.Column("reply_b", text, nullable=False),
        sa.Column("version_a", text, nullable=False),
        sa.Column("version_b", text, nullable=False),
        sa.Column("vote", text, nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_preferences")),
        sa.CheckConstraint("vote IN ('a', 'b', 'tie', 'both_bad')", name=op.f("ck_preferences_vote_allowed")),
        sa.ForeignKeyConstraint(["rater_id"], ["raters.id"], name=op.f("fk_preferences_rater_id_raters")),
        *(
            sa.ForeignKeyConstraint(
                [f"conversation_{side}_id"],
                ["conversations.id"],
                name=op.f(f"fk_preferences_conversation_{side}_id_conversations"),
                ondelete="SET NULL",
            )
            for side in ("a", "b")
        ),
    )
    for column in ("conversation_a_id", "conversation_b_id", "rater_id"):
        op.create_index(op.f(f"ix_preferences_{column}"), "preferences", [column])
