"""A conversation's turns as saved: appended in order, withdrawn (not deleted) on undo and retry.

A withdrawn turn keeps its row and index, so the saved conversation is what the user saw,
including what they took back and why.
"""

from __future__ import annotations

import sqlalchemy as sa

from store.db import StoreError
from store.records import ROLES
from store.schema import turns

TURN_FIELDS = ("role", "content", "model_version", "persona_name", "persona", "deflected")
# Turns the model speaks (a reply, a notice of a persona switch) say which persona it spoke as.
PERSONA_ROLES = ("assistant", "notice")


def turn_values(turn: dict) -> dict:
    """The checked column values of one turn given as `add_turn`'s keyword arguments."""
    unknown = sorted(set(turn) - set(TURN_FIELDS))
    if unknown:
        raise StoreError(f"a turn has unknown fields {', '.join(unknown)}", f"give only {', '.join(TURN_FIELDS)}")
    if "role" not in turn or "content" not in turn:
        raise StoreError(f"a turn needs a role and content, got {sorted(turn)}", "give both")
    role, persona = turn["role"], turn.get("persona")
    if role not in ROLES:
        raise StoreError(f"turn role {role!r} is not one of {', '.join(ROLES)}", f"pass one of {', '.join(ROLES)}")
    if persona is not None and role not in PERSONA_ROLES:
        raise StoreError(f"a {role} turn has no persona", f"pass persona only with {' and '.join(PERSONA_ROLES)} turns")
    if persona is not None and not isinstance(persona, dict):
        persona = persona.model_dump()  # a chatbot Persona
    deflected = turn.get("deflected", False)
    if not isinstance(deflected, bool):
        raise StoreError(f"a turn's `deflected` must be true or false, not {deflected!r}", "pass a bool")
    if deflected and role != "assistant":
        raise StoreError(f"a {role} turn cannot be a scope deflection", "pass deflected=True only with assistant turns")
    if deflected and turn.get("model_version") is not None:
        raise StoreError("a scope deflection has no model version (no model wrote it)", "pass model_version=None")
    return {field: turn.get(field) for field in TURN_FIELDS} | {"persona": persona, "deflected": deflected}


def insert_turns(conn: sa.Connection, conversation_id: int, rows: list[dict]) -> list[int]:
    """Append `rows` (from `turn_values`) after the conversation's last turn; their ids.
    The caller holds the conversation's row lock, so nobody else takes these indices."""
    last = sa.select(sa.func.max(turns.c.index)).where(turns.c.conversation_id == conversation_id)
    last_index = conn.execute(last).scalar()
    start = 0 if last_index is None else last_index + 1
    ids = []
    for index, row in enumerate(rows, start=start):
        values = row | dict(conversation_id=conversation_id, index=index)
        ids.append(conn.execute(sa.insert(turns).values(values)).inserted_primary_key[0])
    return ids


def withdraw(conn: sa.Connection, conversation_id: int, turn_ids: list[int], reason: str) -> int:
    """Mark the turns withdrawn for `reason`; how many were not withdrawn yet. Every id must be
    a turn of this conversation (else nothing changes)."""
    ours = sa.select(turns.c.id).where(turns.c.id.in_(turn_ids), turns.c.conversation_id == conversation_id)
    found = set(conn.execute(ours).scalars())
    others = [turn_id for turn_id in turn_ids if turn_id not in found]
    if others:
        raise StoreError(
            f"turns {others} are not turns of conversation {conversation_id}",
            "pass the ids that add_turn / add_turns returned for this conversation",
        )
    update = sa.update(turns).where(turns.c.id.in_(turn_ids), turns.c.withdrawn.is_(None)).values(withdrawn=reason)
    return conn.execute(update).rowcount
