"""Version 6: a turn says whether it is a scope deflection (the persona file's reply to an
off-topic question, the model not asked). Until now that was recognised by its text; the
stored rows are marked by that same rule once, here.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

turns = sa.table(
    "turns",
    sa.column("id", sa.Integer()),
    sa.column("role", sa.Text()),
    sa.column("content", sa.Text()),
    sa.column("model_version", sa.Text()),
    sa.column("persona", sa.JSON()),
    sa.column("deflected", sa.Boolean()),
)


def is_deflection(persona: dict | None, content: str) -> bool:
    """The rule the app used before this column (chatbot.scope.is_deflection, frozen here): the
    reply is exactly the deflection of the persona stored with the turn."""
    scope = (persona or {}).get("scope") or {}
    return bool(scope.get("deflection")) and content.strip() == scope["deflection"].strip()


def upgrade() -> None:
    # A plain ALTER TABLE ADD COLUMN on both (batch mode would copy the table on SQLite).
    op.add_column("turns", sa.Column("deflected", sa.Boolean(), nullable=False, server_default=sa.false()))
    conn = op.get_bind()
    # Deflections were stored like greetings: assistant turns without a model version (a few
    # per conversation), with the persona they spoke as.
    canned = sa.select(turns.c.id, turns.c.content, turns.c.persona).where(
        turns.c.role == "assistant", turns.c.model_version.is_(None), turns.c.persona.is_not(None)
    )
    ids = [row.id for row in conn.execute(canned) if is_deflection(row.persona, row.content)]
    for start in range(0, len(ids), 10_000):  # under SQLite's limit of bound parameters
        conn.execute(sa.update(turns).where(turns.c.id.in_(ids[start : start + 10_000])).values(deflected=True))
