"""Where a conversation's turns are kept: `History`, in memory or in the store.

    MemoryHistory(opening(persona))                       # the terminal chat, local regression runs
    StoreHistory(store, conversation_id, start=...)       # the app: Chat, Compare, `/chat`

A turn is a dict of `Store.add_turns`' fields plus its `id`: `role`, `content`, `model_version`
(None: not the model's words), `persona_name`, `persona` (the persona a reply or a switch notice
spoke as), `deflected`. `load` gives the active turns (not taken back) in one read, `save`
appends an exchange and withdraws what it replaces in one write, `withdraw` takes turns back.
The conversation service (`chatbot.service`) is the same over both.
"""

from __future__ import annotations

import itertools
from typing import Protocol

from core.conversation import Messages, last_notice

Turns = list[dict]


class History(Protocol):
    conversation_id: int | None  # the stored conversation (None: not saved yet, or in memory)
    started: bool  # False: nothing is kept yet, the first `save` opens the conversation

    def load(self, leaving_out: list[int] | None = None) -> Turns:
        """The active turns in order, without the ids in `leaving_out`."""

    def save(self, turns: Turns, replacing: list[int] | None = None) -> list[int]:
        """Append `turns` and withdraw `replacing` (a retry's old exchange) at once; their ids."""

    def withdraw(self, turn_ids: list[int], reason: str) -> None:
        """Take the turns back (undo)."""


def turn(role: str, content: str, persona=None, version: str | None = None, deflected: bool = False) -> dict:
    """A turn to save. `persona`: who spoke (assistant) or is switched to (notice); on a user turn
    only its name is kept, as the persona the message was addressed to."""
    spoke_as = persona.model_dump() if persona is not None and role != "user" else None
    name = persona.name if persona is not None else None
    return dict(role=role, content=content, model_version=version, persona_name=name, persona=spoke_as,
                deflected=deflected)  # fmt: skip


def shown(turns: Turns) -> Messages:
    """The turns as conversation messages with their ids and the model version that wrote each
    (None: the persona file's words); a scope deflection is marked `"deflected": True`."""
    return [
        {"id": t.get("id"), "role": t["role"], "content": t["content"], "persona_name": t["persona_name"],
         "model_version": t["model_version"]} | ({"deflected": True} if t.get("deflected") else {})
        for t in turns
    ]  # fmt: skip


def stored(t) -> dict:
    """A stored turn (`store.Turn`) as a history turn."""
    return {"id": t.id, "role": t.role, "content": t.content, "model_version": t.model_version,
            "persona_name": t.persona_name, "persona": t.persona, "deflected": t.deflected}  # fmt: skip


def persona_in_effect(turns: Turns) -> dict | None:
    """The persona the model last spoke (or was switched) as in these turns."""
    return next((t["persona"] for t in reversed(turns) if t.get("persona")), None)


def switched_from(turns: Turns) -> dict | None:
    """The persona in effect before the last switch notice of these turns, when it differs from
    the one switched to (None: no switch, or a switch back to the same persona)."""
    last = last_notice(turns)
    if last is None:
        return None
    old = persona_in_effect(turns[:last])
    return old if old not in (None, turns[last].get("persona")) else None


class MemoryHistory:
    """A conversation in this process only; withdrawn turns are simply dropped."""

    conversation_id = None
    started = True

    def __init__(self, messages: Messages = (), persona=None):
        self._ids = itertools.count(1)
        self.turns: Turns = []
        self.save([turn(m["role"], m["content"], persona if m["role"] != "user" else None) for m in messages])

    def load(self, leaving_out: list[int] | None = None) -> Turns:
        return [t for t in self.turns if t["id"] not in (leaving_out or [])]

    def save(self, turns: Turns, replacing: list[int] | None = None) -> list[int]:
        new = [t | {"id": next(self._ids)} for t in turns]
        self.turns = self.load(replacing) + new
        return [t["id"] for t in new]

    def withdraw(self, turn_ids: list[int], reason: str) -> None:
        self.turns = self.load(turn_ids)


class StoreHistory:
    """A conversation in the store (`StoreAPI`): one read to load, one transaction to save.
    `start`: `Store.start_conversation`'s arguments, for a conversation not saved yet."""

    def __init__(self, store, conversation_id: int | None, start: dict | None = None):
        self.store, self.start = store, start
        self.conversation_id = None if conversation_id is None else int(conversation_id)

    @property
    def started(self) -> bool:
        return self.conversation_id is not None

    def load(self, leaving_out: list[int] | None = None) -> Turns:
        if self.conversation_id is None:
            return []
        gone = set(leaving_out or [])
        turns = self.store.conversation(self.conversation_id)
        return [stored(t) for t in turns if t.withdrawn is None and t.id not in gone]

    def save(self, turns: Turns, replacing: list[int] | None = None) -> list[int]:
        start = self.start if self.conversation_id is None else None
        self.conversation_id, ids = self.store.add_exchange(self.conversation_id, turns, start=start,
                                                            replacing=replacing or None)  # fmt: skip
        return ids

    def withdraw(self, turn_ids: list[int], reason: str) -> None:
        if turn_ids:
            self.store.withdraw_turns(self.conversation_id, turn_ids, reason)
