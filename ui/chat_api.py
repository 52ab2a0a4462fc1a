"""The Chat tab's typed API endpoints for scripts (`gradio_client`, by name), and what the tab
shares with them: the custom persona, generation settings, the concurrency groups.

    /chat(message, persona, version="base", conversation_id=None, temperature=None, top_p=None,
          top_k=None, max_new_tokens=None, custom_persona=None, history=None, scope_guard=True)
        -> (conversation_id, reply, turn_id)   streamed; turn_id is set once the reply is saved
    /retry(conversation_id, persona, version="base", ...)   -> (conversation_id, reply, turn_id)
    /undo(conversation_id)                   -> the user message taken back ("" if none)
    /history(conversation_id)                -> [{"turn_id", "role", "content", "persona", "deflected"}]
    /label_reply(turn_id, verdict, comment="", rater="")   -> "saved: good (by rita)"

Texts are raw in and out; HTML is escaped only for display in the chat box. Settings left
None take the app's defaults; another persona in a running conversation switches persona
from that turn (marked in the transcript). With `scope_guard` (default on) an off-topic
question to a persona with a `scope:` gets its deflection, without the model (turn_id is set,
but it cannot be labelled; `/history` marks it `deflected`).
"""

# No `from __future__ import annotations`: `gr.api` reads the endpoint types from the live
# annotations.

from collections.abc import Iterator
from typing import Literal

import gradio as gr
from pydantic import ValidationError

from core.errors import PersonaError
from core.persona import Persona
from engines.config import GenerationSettings
from ui import conversations
from ui.common import shows_errors
from ui.context import AppContext
from ui.raters import rater_for

CUSTOM = "__custom__"  # persona key of the persona typed in on the spot
GENERATION = "generation"  # concurrency group of all events that run the model
# Instant events (accept a message, a thumb, re-list personas): queued, so their toasts show,
# but in a group without a limit, never behind generations.
TAKING = dict(concurrency_id="instant", concurrency_limit=None)

ChatResult = tuple[int | None, str, int | None]  # conversation_id, reply, turn_id


def resolve_persona(ctx: AppContext, key: str, custom_name: str = "", custom_facts: str = "") -> Persona:
    """The persona file `key`, or (key CUSTOM) the persona typed in: a name and one fact per line."""
    if key != CUSTOM:
        return ctx.persona(key)
    facts = [line.strip() for line in (custom_facts or "").splitlines() if line.strip()]
    return custom_persona(ctx, {"name": (custom_name or "").strip() or "Custom persona", "facts": facts})


def custom_persona(ctx: AppContext, fields: dict) -> Persona:
    if not fields.get("facts"):  # the usual case (nothing typed yet): our words, not pydantic's
        raise PersonaError(
            "the custom persona has no facts yet",
            "type at least one fact under 'Custom persona' (one sentence per line), then send",
        )
    try:
        return Persona.model_validate(fields)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "persona"
        raise PersonaError(
            f"the typed-in persona is invalid: `{where}`: {first['msg']}",
            "give a name and at least one fact (one sentence per line)",
        ) from None


def settings_for(ctx: AppContext, temperature=None, top_p=None, top_k=None, max_new_tokens=None) -> GenerationSettings:
    """The app's generation settings with the given ones (None: the app's) in their place."""
    given = dict(temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens)
    update = {k: (int(v) if k in ("top_k", "max_new_tokens") else v) for k, v in given.items() if v is not None}
    return ctx.settings.model_copy(update=update)


def add_chat_api(ctx: AppContext) -> None:
    """Typed endpoints for scripts; the widgets above call the same functions."""

    def api_persona(key: str, fields: dict | None) -> Persona:
        return custom_persona(ctx, fields) if fields else ctx.persona(key)

    def streamed(steps: Iterator[conversations.Step]) -> Iterator[ChatResult]:
        for step in steps:
            yield step.conversation_id, step.reply, step.turn_id

    def chat(
        message: str,
        persona: str,
        version: str = "base",
        conversation_id: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        max_new_tokens: int | None = None,
        custom_persona: dict | None = None,
        history: list[dict] | None = None,
        scope_guard: bool = True,
    ) -> Iterator[ChatResult]:
        """Send a message as the user and stream the reply: (conversation_id, reply so far,
        turn_id once saved). `persona`: a persona file's key (or `custom_persona`, a mapping
        like a persona file); pass the returned conversation_id to continue; another persona
        switches from this turn; `history` (new conversations only) is the user/assistant
        messages to start from; `scope_guard` False lets off-topic questions reach the model."""
        speaker = api_persona(persona, custom_persona)
        settings = settings_for(ctx, temperature, top_p, top_k, max_new_tokens)
        seed = [{"role": m["role"], "content": m["content"]} for m in history] if history else None
        key = persona if not custom_persona else CUSTOM
        steps = conversations.exchange(
            ctx, message, key, speaker, version, settings, conversation_id, seed=seed, scope_guard=scope_guard
        )
        yield from streamed(steps)

    def retry(
        conversation_id: int,
        persona: str,
        version: str = "base",
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        max_new_tokens: int | None = None,
        custom_persona: dict | None = None,
        scope_guard: bool = True,
    ) -> Iterator[ChatResult]:
        """A new reply to the conversation's last user message; the old one is withdrawn."""
        speaker = api_persona(persona, custom_persona)
        settings = settings_for(ctx, temperature, top_p, top_k, max_new_tokens)
        steps = conversations.retry(ctx, conversation_id, persona, speaker, version, settings, scope_guard)
        yield from streamed(steps)

    def undo(conversation_id: int) -> str:
        """Withdraw the last exchange; returns the user message it began with ("" if none)."""
        return conversations.undo(ctx, conversation_id) or ""

    def history(conversation_id: int) -> list[dict]:
        """The conversation as the user sees it: its active turns, raw text, with turn ids."""
        shown = conversations.stored_messages(ctx.store.conversation(int(conversation_id)))
        return [{"turn_id": m["id"], "role": m["role"], "content": m["content"], "persona": m["persona_name"],
                 "deflected": bool(m.get("deflected"))} for m in shown]  # fmt: skip

    def label_reply(
        turn_id: int,
        verdict: Literal["good", "bad"],
        request: gr.Request,
        profile: gr.OAuthProfile | None,
        comment: str = "",
        rater: str = "",
    ) -> str:
        """Label a stored reply good or bad (as the signed-in user when sign-in is on)."""
        row = conversations.label_reply(ctx, turn_id, verdict, rater_for(ctx, rater, profile, request), comment)
        return f"saved: {row.verdict} (by {row.rater})"

    gr.api(shows_errors(chat), api_name="chat", concurrency_id=GENERATION)
    gr.api(shows_errors(retry), api_name="retry", concurrency_id=GENERATION)
    gr.api(shows_errors(undo), api_name="undo")
    gr.api(shows_errors(history), api_name="history")
    gr.api(shows_errors(label_reply), api_name="label_reply")
