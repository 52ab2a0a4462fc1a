"""The one conversation service: send, retry, undo and switch over a `History` (chatbot.history).

    steps = exchange(history, lambda: engine, "Hi", persona, version, settings)
    for step in steps: ...        # the reply as it grows; the last step is the saved exchange

The terminal chat (`ChatSession`, in memory), the app's Chat and Compare tabs and its `/chat`
API (in the store, ui/conversations.py) and local regression runs all go through here. A message
costs one `History.load` before generation and one `History.save` after it (nothing is saved
when the reply fails or is abandoned), and the prompt is fitted once: the engine's `Fitted`
result is what it streams from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from chatbot.history import History, persona_in_effect, shown, switched_from, turn
from chatbot.scope import guard
from core.conversation import (
    Messages,
    build_messages,
    check_message,
    has_user_turn,
    notice,
    opening,
    taken_back,
    under,
)
from core.errors import MessageError
from core.persona import Persona
from engines.config import GenerationSettings
from engines.engine import ChatEngine


@dataclass(frozen=True)
class Step:
    """An exchange so far: the whole transcript to show, and the reply as it grows."""

    messages: Messages  # saved turns carry their "id"; turns not saved yet have none
    conversation_id: int | None
    reply: str
    turn_id: int | None = None  # the reply's saved turn, once saved (the last step)
    trimmed: bool = False  # the oldest turns were left out to fit the context window
    deflected: bool = False  # off the persona's scope: its deflection, the model not called


def exchange(
    history: History,
    engine: Callable[[], ChatEngine],
    message: str,
    persona: Persona,
    version: str | None,
    settings: GenerationSettings,
    *,
    seed: Messages | None = None,
    replacing: list[int] | None = None,
    scope_guard: bool = True,
    loaded: list[dict] | None = None,
) -> Iterator[Step]:
    """Stream the reply of `persona` (on `version`, from `engine()`) to `message`, then save it.

    A conversation not started yet opens with the persona's greeting, or with `seed` (user and
    assistant messages an API client starts from). Mid-conversation, a persona other than the one
    in effect is marked with a notice and speaks from this turn. `replacing`: the turn ids of the
    exchange a retry replaces, withdrawn in the same save. `scope_guard`: an off-topic message to
    a persona with a scope gets its deflection, and a question of a `route: true` knowledge entry
    its answer, each saved like a greeting (no model version: nothing to label); the engine is not
    even asked for. `loaded`: the history's active turns, when the
    caller has just read them (retry), so they are not read again.
    """
    message = check_message(message)
    guarded = guard(persona, message) if scope_guard else None
    deflected = guarded is not None and not guarded.routed
    pending: list[dict] = []
    if not history.started:
        for m in seed if seed is not None else opening(persona):
            pending.append(turn(m["role"], m["content"], persona if m["role"] == "assistant" else None))
        before: list[dict] = []
    else:
        gone = set(replacing or [])
        before = history.load(replacing) if loaded is None else [t for t in loaded if t["id"] not in gone]
        if persona_in_effect(before) not in (None, persona.model_dump()):
            pending.append(turn("notice", notice(persona)["content"], persona))
    pending.append(turn("user", message, persona, version))
    so_far = before + pending
    trimmed = False
    if guarded is not None:
        reply = guarded.reply  # no model wrote it: no version, nothing to label
        pending.append(turn("assistant", reply, persona, deflected=deflected))
    else:
        chat = engine()
        fitted = chat.fit_messages(build_messages(persona, so_far[:-1], message), settings)
        trimmed = fitted.trimmed > 0
        # Since a switch, each reply is steered away from the same prompt under the old persona: the
        # user's messages were often written to it and pull the reply back (engines.engine._guidance).
        old = switched_from(so_far)
        negative = under(Persona.model_validate(old), fitted) if old else None
        reply = ""
        for piece in chat.stream(fitted, settings, negative):  # streams the fitted prompt as it is
            reply += piece
            yield Step(shown(so_far) + [{"role": "assistant", "content": reply}], history.conversation_id, reply,
                       trimmed=trimmed)  # fmt: skip
        reply = reply.strip()
        pending.append(turn("assistant", reply, persona, version))
    ids = history.save(pending, replacing)
    saved = before + [t | {"id": i} for t, i in zip(pending, ids, strict=True)]
    yield Step(shown(saved), history.conversation_id, reply, ids[-1], trimmed, deflected=deflected)


def last_exchange(turns: list[dict]) -> tuple[list[int], str | None]:
    """(turn ids undo and retry take back, the user message they begin with)."""
    gone = taken_back(turns)
    return [turns[i]["id"] for i in gone], (turns[gone[0]]["content"] if gone else None)


def undo(history: History) -> str | None:
    """Withdraw the last exchange; the user message it began with (None: nothing to undo)."""
    ids, user = last_exchange(history.load() if history.started else [])
    if ids:
        history.withdraw(ids, "undo")
    return user


def retry(history: History, engine: Callable[[], ChatEngine], persona: Persona, version: str | None,
          settings: GenerationSettings, scope_guard: bool = True) -> Iterator[Step]:  # fmt: skip
    """A new reply to the last user message; the old exchange is withdrawn when it is saved."""
    turns = history.load() if history.started else []
    ids, user = last_exchange(turns)
    if not ids:
        raise MessageError("there is no reply to retry yet", "send a message first")
    yield from exchange(history, engine, user, persona, version, settings, replacing=ids, scope_guard=scope_guard,
                        loaded=turns)  # fmt: skip


def switch(history: History, persona: Persona) -> None:
    """Switch now (a chat held in memory): before anyone spoke the new persona's opening replaces
    the old one; mid-chat a notice marks it. (`exchange` also marks a switch it meets.)"""
    turns = history.load()
    if has_user_turn(turns):
        history.save([turn("notice", notice(persona)["content"], persona)])
    else:
        history.withdraw([t["id"] for t in turns], "undo")
        history.save([turn(m["role"], m["content"], persona) for m in opening(persona)])
