"""The app's conversations, kept in the store: what a user sees is the conversation's active turns.

An exchange (user message + reply, after a greeting or a persona-switch notice where there is
one) is stored when its reply is complete, in one transaction. Undo and retry withdraw the
turns they take back (kept in the store, marked), and a 👍/👎 names the stored turn it labels,
so a label always carries the persona and model version that wrote that very reply. The model
is always fed from the store, never from the browser's copy. No Gradio here: the Chat and
Compare tabs and the `/chat` API are thin over these functions.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from chatbot.scope import deflection
from core.conversation import Messages, build_messages, check_message, dialogue, notice, opening, taken_back
from core.errors import MessageError
from core.persona import Persona
from engines.engine import GenerationSettings
from store import LabelRow, NewItem, Turn
from ui.context import AppContext


@dataclass(frozen=True)
class Step:
    """An exchange so far: the whole transcript to show, and the reply as it grows."""

    messages: Messages  # stored turns carry their "id"; turns not saved yet have none
    conversation_id: int | None
    reply: str
    turn_id: int | None = None  # the reply's stored turn, once saved (the last step)
    trimmed: bool = False  # the oldest turns were left out to fit the context window
    deflected: bool = False  # off the persona's scope: its deflection, the model not called


@dataclass
class _Pending:
    """Turns to store with the exchange, as `Store.add_turns` takes them."""

    turns: list[dict] = field(default_factory=list)

    def add(self, role: str, content: str, persona: Persona | None = None, version: str | None = None,
            deflected: bool = False) -> None:  # fmt: skip
        """`persona`: who spoke (assistant) or is switched to (notice); on a user turn only its
        name is kept, as the persona the message was addressed to."""
        spoke_as = persona.model_dump() if persona and role != "user" else None
        name = persona.name if persona else None
        self.turns.append(dict(role=role, content=content, model_version=version, persona_name=name, persona=spoke_as,
                               deflected=deflected))  # fmt: skip


def stored_messages(turns: list[Turn]) -> Messages:
    """The active (not withdrawn) turns as conversation messages, with their ids and the model
    version that wrote each (None: the persona file's words); a scope deflection is marked
    `"deflected": True`."""
    return [
        {
            "id": t.id,
            "role": t.role,
            "content": t.content,
            "persona_name": t.persona_name,
            "model_version": t.model_version,
        }  # fmt: skip
        | ({"deflected": True} if t.deflected else {})
        for t in turns
        if t.withdrawn is None
    ]


def transcript(ctx: AppContext, conversation_id: int | None, persona: Persona) -> Messages:
    """What the chat shows: the stored conversation, or a new chat's opening."""
    if conversation_id is None:
        return opening(persona)
    return stored_messages(ctx.store.conversation(int(conversation_id)))


def persona_in_effect(turns: list[Turn]) -> dict | None:
    """The persona the model last spoke (or was switched) as in these turns."""
    return next((t.persona for t in reversed(turns) if t.persona), None)


def exchange(
    ctx: AppContext,
    message: str,
    persona_key: str,
    persona: Persona,
    version: str,
    settings: GenerationSettings,
    conversation_id: int | None = None,
    *,
    seed: Messages | None = None,
    replacing: list[int] | None = None,
    source: str = "chat",
    scope_guard: bool = True,
) -> Iterator[Step]:
    """Stream the reply of `persona` on `version` to `message`, then store the exchange.

    A new conversation (`conversation_id` None) opens with the persona's greeting, or with
    `seed` (user/assistant messages an API client starts from). In a stored conversation a
    persona other than the one in effect is marked with a notice and speaks from this turn.
    `replacing`: turn ids of the exchange a retry replaces, withdrawn once the new one is saved.
    `scope_guard`: an off-topic message to a persona with a scope is answered with its
    deflection, stored like a greeting (no model version: nothing to label), the model not
    loaded nor called.
    """
    message = check_message(message)
    canned = deflection(persona, message) if scope_guard else None
    pending = _Pending()
    if conversation_id is None:
        for m in seed if seed is not None else opening(persona):
            speaker = persona if m["role"] == "assistant" else None
            pending.add(m["role"], m["content"], speaker)  # not the model's words: no version
        before: Messages = []
    else:
        turns = [t for t in ctx.store.conversation(int(conversation_id)) if t.id not in (replacing or [])]
        before = stored_messages(turns)
        if persona_in_effect(turns) not in (None, persona.model_dump()):
            pending.add("notice", notice(persona)["content"], persona)
    pending.add("user", message, persona, version)
    history = before + _unsaved(pending.turns[:-1])
    trimmed = False
    if canned is not None:
        reply = canned
        pending.add("assistant", reply, persona, deflected=True)  # no model wrote it: no version, nothing to label
    else:
        engine = ctx.pool.get(version)
        prompt = build_messages(persona, history, message)
        fitted = engine.fit_messages(prompt, settings)  # stream fits again: already fitted, one count
        trimmed = len(fitted) < len(prompt)
        shown = history + [{"role": "user", "content": message}]
        reply = ""
        for piece in engine.stream(fitted, settings):
            reply += piece
            yield Step(shown + [{"role": "assistant", "content": reply}], conversation_id, reply, trimmed=trimmed)
        reply = reply.strip()
        pending.add("assistant", reply, persona, version)
    if conversation_id is None:
        conversation_id = ctx.store.start_conversation(source, persona_key, persona.model_dump(), version)
    ids = ctx.store.add_turns(int(conversation_id), pending.turns)
    if replacing:  # after the new exchange is saved: a failure in between loses nothing
        ctx.store.withdraw_turns(int(conversation_id), replacing, "retry")
    stored = transcript(ctx, conversation_id, persona)
    yield Step(stored, int(conversation_id), reply, ids[-1], trimmed, deflected=canned is not None)


def _unsaved(turns: list[dict]) -> Messages:
    return [{"role": t["role"], "content": t["content"], "persona_name": t["persona_name"]} for t in turns]


def last_exchange_ids(ctx: AppContext, conversation_id: int | None) -> tuple[list[int], str | None]:
    """(turn ids undo/retry take back, the user message they begin with)."""
    if conversation_id is None:
        return [], None
    messages = stored_messages(ctx.store.conversation(int(conversation_id)))
    gone = taken_back(messages)
    return [messages[i]["id"] for i in gone], (messages[gone[0]]["content"] if gone else None)


def undo(ctx: AppContext, conversation_id: int | None) -> str | None:
    """Withdraw the last exchange; the user message it began with (None: nothing to undo)."""
    ids, user = last_exchange_ids(ctx, conversation_id)
    if ids:
        ctx.store.withdraw_turns(int(conversation_id), ids, "undo")
    return user


def retry(
    ctx: AppContext,
    conversation_id: int | None,
    persona_key: str,
    persona: Persona,
    version: str,
    settings,
    scope_guard: bool = True,
) -> Iterator[Step]:
    """A new reply to the last user message; the old exchange is withdrawn once it is saved."""
    ids, user = last_exchange_ids(ctx, conversation_id)
    if not ids:
        raise MessageError("there is no reply to retry yet", "send a message first")
    yield from exchange(ctx, user, persona_key, persona, version, settings, conversation_id, replacing=ids,
                        scope_guard=scope_guard)  # fmt: skip


def reply_item(ctx: AppContext, turn_id: int) -> int:
    """The label item of the stored reply `turn_id` (registered on first use): the persona, the
    model version and the conversation before it exactly as they were when it was written."""
    turn = ctx.store.turn(int(turn_id))
    if turn.role != "assistant" or turn.model_version is None:
        raise MessageError(
            "only the model's replies can be labelled (greetings and scope deflections come from the persona file)",
            "use the thumbs under a reply the model wrote",
        )
    turns = ctx.store.conversation(turn.conversation_id)
    before = [{"role": t.role, "content": t.content} for t in turns if t.index < turn.index and not t.withdrawn]
    context = dialogue(before)
    item = NewItem(source="chat", persona_name=turn.persona_name, persona=turn.persona or {"name": turn.persona_name},
                   context=context, answer=turn.content, model_version=turn.model_version,
                   conversation_id=turn.conversation_id)  # fmt: skip
    [item_id] = ctx.store.add_label_items([item])
    return item_id


def label_reply(ctx: AppContext, turn_id: int, verdict: str, rater: str, comment: str = "") -> LabelRow:
    """Label the stored reply `turn_id` good or bad (again: the verdict changes)."""
    return ctx.store.label(reply_item(ctx, turn_id), rater, verdict, comment)


def unlabel_reply(ctx: AppContext, turn_id: int, rater: str) -> bool:
    """Take back the rater's label on the reply (its thumb clicked off); False if there was none."""
    return ctx.store.unlabel(reply_item(ctx, turn_id), rater)


def merge(streams: list[Iterator[Step]]) -> Iterator[tuple[int, Step]]:
    """(index, step) from several exchanges as their steps arrive, each exchange in a thread
    of its own so no pane waits for another (Compare)."""
    steps: queue.Queue = queue.Queue()

    def run(index: int, stream: Iterator[Step]) -> None:
        try:
            for step in stream:
                steps.put((index, step))
        except Exception as err:  # handed to the consumer below
            steps.put((index, err))
        finally:
            steps.put((index, None))

    for index, stream in enumerate(streams):
        threading.Thread(target=run, args=(index, stream), daemon=True).start()
    running = len(streams)
    while running:
        index, step = steps.get()
        if step is None:
            running -= 1
        elif isinstance(step, Exception):
            raise step
        else:
            yield index, step
