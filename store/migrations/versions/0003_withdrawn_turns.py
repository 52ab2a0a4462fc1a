"""Version 3: turns are withdrawn (undo, retry) instead of deleted and keep the persona that
spoke; schema_version becomes a single row (id 1).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("turns") as batch:
        batch.add_column(sa.Column("withdrawn", sa.Text(), nullable=True))
        batch.add_column(sa.Column("persona", sa.JSON(), nullable=True))
        batch.create_check_constraint(op.f("ck_turns_withdrawn_allowed"), "withdrawn IN ('undo', 'retry')")
    # Racing first starts of versions 1 and 2 on PostgreSQL could each insert a row into the
    # one-column table: keep the highest (none: migrating from nothing, `alembic upgrade head`).
    op.rename_table("schema_version", "schema_version_2")
    op.create_table(
        "schema_version",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schema_version")),
        sa.CheckConstraint("id = 1", name=op.f("ck_schema_version_one_row")),
    )
    op.execute(
        "INSERT INTO schema_version (id, version)"
        " SELECT 1, v FROM (SELECT MAX(version) AS v FROM schema_version_2) AS old WHERE v IS NOT NULL"
    )
    op.drop_table("schema_version_2")
