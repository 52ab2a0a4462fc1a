"""Version 1: the tables as the first store created them.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _pk(table: str) -> sa.PrimaryKeyConstraint:
    return sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}"))


def _fk(table: str, column: str, target: str, ondelete: str | None = None) -> sa.ForeignKeyConstraint:
    name = op.f(f"fk_{table}_{column}_{target}")
    return sa.ForeignKeyConstraint([column], [f"{target}.id"], name=name, ondelete=ondelete)


def _check(table: str, column: str, values: tuple[str, ...]) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=op.f(f"ck_{table}_{column}_allowed"))


def _index(table: str, *columns: str) -> None:
    op.create_index(op.f(f"ix_{table}_{columns[0]}"), table, list(columns))


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), nullable=False)


def _created() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(), nullable=False)


def _rated(table: str, *columns: sa.Column) -> None:
    """assignments, labels and skips: a rater's row on an item, one per pair."""
    op.create_table(
        table,
        _id(),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("rater_id", sa.Integer(), nullable=False),
        *columns,
        _pk(table),
        sa.UniqueConstraint("item_id", "rater_id", name=op.f(f"uq_{table}_item_id_rater_id")),
        _fk(table, "item_id", "label_items"),
        _fk(table, "rater_id", "raters"),
    )
    _index(table, "item_id")
    _index(table, "rater_id")


def upgrade() -> None:
    text, json = sa.Text(), sa.JSON()
    op.create_table(
        "conversations",
        _id(),
        sa.Column("source", text, nullable=False),
        sa.Column("persona_key", text, nullable=False),
        sa.Column("persona", json, nullable=False),
        sa.Column("model_version", text, nullable=False),
        _created(),
        _pk("conversations"),
        _check("conversations", "source", ("chat", "compare", "eval")),
    )
    op.create_table(
        "eval_runs",
        _id(),
        sa.Column("model_version", text, nullable=False),
        sa.Column("path", text, nullable=False),
        sa.Column("config", json, nullable=False),
        sa.Column("summary", json, nullable=False),
        _created(),
        _pk("eval_runs"),
    )
    _index("eval_runs", "model_version")
    op.create_table(
        "raters",
        _id(),
        sa.Column("name", text, nullable=False),
        _created(),
        _pk("raters"),
        sa.UniqueConstraint("name", name=op.f("uq_raters_name")),
    )
    op.create_table("schema_version", sa.Column("version", sa.Integer(), nullable=False))
    op.create_table(
        "label_items",
        _id(),
        sa.Column("source", text, nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=True),
        sa.Column("eval_run_id", sa.Integer(), nullable=True),
        sa.Column("persona_name", text, nullable=False),
        sa.Column("persona", json, nullable=False),
        sa.Column("context", json, nullable=False),
        sa.Column("answer", text, nullable=False),
        sa.Column("model_version", text, nullable=False),
        sa.Column("dedupe_key", sa.String(64), nullable=False),
        _created(),
        _pk("label_items"),
        _check("label_items", "source", ("chat", "eval")),
        _fk("label_items", "conversation_id", "conversations", ondelete="SET NULL"),
        _fk("label_items", "eval_run_id", "eval_runs", ondelete="SET NULL"),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_label_items_dedupe_key")),
    )
    for column in ("conversation_id", "eval_run_id", "model_version"):
        _index("label_items", column)
    op.create_table(
        "turns",
        _id(),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("role", text, nullable=False),
        sa.Column("content", text, nullable=False),
        sa.Column("model_version", text, nullable=True),
        sa.Column("persona_name", text, nullable=True),
        _created(),
        _pk("turns"),
        sa.UniqueConstraint("conversation_id", "index", name=op.f("uq_turns_conversation_id_index")),
        _check("turns", "role", ("user", "assistant", "system", "notice")),
        _fk("turns", "conversation_id", "conversations", ondelete="CASCADE"),
    )
    _index("turns", "conversation_id")
    _rated("assignments", _created())
    _rated(
        "labels",
        sa.Column("verdict", text, nullable=False),
        sa.Column("comment", text, nullable=False),
        _created(),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        _check("labels", "verdict", ("good", "bad")),
    )
    _index("labels", "updated_at")
    _rated("skips", _created())
