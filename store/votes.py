"""Blind A/B votes: the checked values of a `NewPreference`, and the query that reads them back."""

from __future__ import annotations

import sqlalchemy as sa

from store.db import StoreError
from store.records import VOTES, NewPreference
from store.schema import preferences, raters

VOTE_FIX = "vote 'a' (A is better), 'b' (B is better), 'tie' (both as good) or 'both_bad'"

QUERY = sa.select(
    preferences.c.id,
    raters.c.name.label("rater"),
    preferences.c.persona_name,
    preferences.c.persona,
    preferences.c.context,
    preferences.c.reply_a,
    preferences.c.reply_b,
    preferences.c.version_a,
    preferences.c.version_b,
    preferences.c.vote,
    preferences.c.created_at,
).select_from(preferences.join(raters, preferences.c.rater_id == raters.c.id))


def values(p: NewPreference) -> dict:
    """The column values of `p` (but the rater's id), or StoreError naming what is wrong."""
    if p.vote not in VOTES:
        raise StoreError(f"a vote must be one of {', '.join(VOTES)}, not {p.vote!r}", VOTE_FIX)
    for field in ("reply_a", "reply_b", "version_a", "version_b", "persona_name"):
        if not isinstance(getattr(p, field), str):
            raise StoreError(
                f"a preference's {field} must be text, not {getattr(p, field)!r}", f"pass {field} as a str"
            )
    for field in ("version_a", "version_b"):
        if not getattr(p, field).strip():
            raise StoreError(f"a preference's {field} is empty", "name the model version that gave the reply")
    context = _context(p.context)
    persona = p.persona if isinstance(p.persona, dict) else p.persona.model_dump()  # a chatbot Persona
    return dict(
        conversation_a_id=p.conversation_a,
        conversation_b_id=p.conversation_b,
        persona_name=p.persona_name,
        persona=persona,
        context=context,
        reply_a=p.reply_a,
        reply_b=p.reply_b,
        version_a=p.version_a,
        version_b=p.version_b,
        vote=p.vote,
    )


def votable(context: list[dict]) -> bool:
    """A vote compares two answers to a user message: the context must end with it (a speaker's
    opening line, with no message before it, can be labelled but not voted on)."""
    return bool(context) and context[-1]["role"] == "user"


def _context(context: list[dict]) -> list[dict]:
    """The messages before the replies as {"role", "content"}; the user message they answer last."""
    if not isinstance(context, list) or not all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in context):
        raise StoreError(
            "a preference's context must be a list of messages", 'pass [{"role": ..., "content": ...}, ...]'
        )
    if not votable(context):
        raise StoreError(
            "a preference's context must end with the user message both replies answer",
            "pass the messages before the replies, the user message last",
        )
    return [{"role": m["role"], "content": m["content"]} for m in context]


def insert(conn: sa.Connection, row: dict) -> int:
    """Insert `values(...)` plus the rater's id; the new vote's id."""
    return conn.execute(sa.insert(preferences).values(row)).inserted_primary_key[0]


def query(versions: tuple[str, str] | None = None) -> sa.Select:
    """Every vote (between these two versions, whichever was A, if given), oldest first."""
    ordered = QUERY.order_by(preferences.c.id)
    if versions is None:
        return ordered
    first, second = versions
    return ordered.where(
        sa.or_(
            sa.and_(preferences.c.version_a == first, preferences.c.version_b == second),
            sa.and_(preferences.c.version_a == second, preferences.c.version_b == first),
        )
    )
