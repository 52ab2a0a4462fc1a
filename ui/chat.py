"""Chat tab: a persona, a model version, streamed replies, retry/undo/clear, 👍/👎 per reply.

The conversation lives in the store (`ui/conversations.py`); the chat box shows its active
turns, each with its stored id in the message metadata, and only the conversation id travels
with the page. Typed API endpoints for scripts (`gradio_client`, by name):

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

from core.conversation import has_user_turn, opening
from core.errors import PersonaError
from core.persona import Persona
from engines.engine import GenerationSettings
from ui import conversations
from ui.common import for_chatbot, shows_errors
from ui.context import AppContext
from ui.raters import rater_for

CUSTOM = "__custom__"  # persona key of the persona typed in on the spot
GENERATION = "generation"  # concurrency group of all events that run the model

ChatResult = tuple[int | None, str, int | None]  # conversation_id, reply, turn_id


def resolve_persona(ctx: AppContext, key: str, custom_name: str = "", custom_facts: str = "") -> Persona:
    """The persona file `key`, or (key CUSTOM) the persona typed in: a name and one fact per line."""
    if key != CUSTOM:
        return ctx.persona(key)
    facts = [line.strip() for line in (custom_facts or "").splitlines() if line.strip()]
    return custom_persona(ctx, {"name": (custom_name or "").strip() or "Custom persona", "facts": facts})


def custom_persona(ctx: AppContext, fields: dict) -> Persona:
    try:
        return Persona.model_validate(fields)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "persona"
        raise PersonaError(
            f"the typed-in persona is invalid: `{where}`: {first['msg']}",
            "give a name and at least one fact (one sentence per line)",
        ) from None


def displayed(messages) -> list[dict]:
    """`for_chatbot`, with each scope deflection titled as one: the transcript shows which
    replies are the persona file's deflection, not the model's words."""
    shown = for_chatbot(messages)
    for message, item in zip(messages, shown, strict=True):
        if message.get("deflected"):
            item["metadata"] = {**(item["metadata"] or {}), "title": "Off-topic: the persona's deflection"}
    return shown


def settings_for(ctx: AppContext, temperature=None, top_p=None, top_k=None, max_new_tokens=None) -> GenerationSettings:
    """The app's generation settings with the given ones (None: the app's) in their place."""
    given = dict(temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens)
    update = {k: (int(v) if k in ("top_k", "max_new_tokens") else v) for k, v in given.items() if v is not None}
    return ctx.settings.model_copy(update=update)


def build_chat_tab(ctx: AppContext, rater: gr.Textbox) -> None:
    personas, _ = ctx.personas()
    first = next(iter(personas), CUSTOM)
    with gr.Row():
        persona = gr.Dropdown(ctx.persona_choices() + [("✎ Custom persona (type it below)", CUSTOM)], value=first,
                              label="Persona", scale=3, allow_custom_value=True)  # fmt: skip
        version = gr.Dropdown(ctx.pool.versions(), value="base", label="Model version", scale=1,
                              allow_custom_value=True)  # fmt: skip
        # Versions trained while the app runs appear when the picker is opened.
        version.focus(lambda: gr.update(choices=ctx.pool.versions()), None, version, api_name=False)
    with gr.Accordion("Custom persona", open=False):
        custom_name = gr.Textbox(label="Name", placeholder="e.g. Captain Mira")
        custom_facts = gr.Textbox(label="Facts (one per line)", lines=4, placeholder="I sail cargo ships.\nI love tea.")
    with gr.Accordion("Generation settings", open=False), gr.Row():
        s = ctx.settings
        temperature = gr.Slider(0, 2, value=s.temperature, step=0.05, label="Temperature (0 = greedy)")
        top_p = gr.Slider(0.05, 1, value=s.top_p, step=0.05, label="Top-p")
        top_k = gr.Slider(0, 200, value=s.top_k, step=1, label="Top-k")
        max_new_tokens = gr.Slider(8, 1024, value=s.max_new_tokens, step=8, label="Max new tokens")
        scope_guard = gr.Checkbox(True, label="Scope guard: off-topic questions get the persona's deflection")
    start = for_chatbot(opening(personas[first])) if first in personas else []
    chat = gr.Chatbot(start, label="Chat", height=460, feedback_options=("Like", "Dislike"),
                      group_consecutive_messages=False)  # fmt: skip
    with gr.Row():
        message = gr.Textbox(
            placeholder="Say something and press Enter", show_label=False, scale=6, elem_id="chat-input"
        )
        send = gr.Button("Send", variant="primary", scale=1)
    with gr.Row():
        retry, undo, clear = gr.Button("Retry"), gr.Button("Undo"), gr.Button("Clear")
    conv_id = gr.State(None)  # the stored conversation on screen; None until the first message
    gr.Markdown("The thumbs under a reply save it as a good/bad label, under the Rater name at the top.")

    picks = [persona, version, temperature, top_p, top_k, max_new_tokens, conv_id, custom_name, custom_facts,
             scope_guard]  # fmt: skip

    def shown(steps: Iterator[conversations.Step]):
        """Chat box, cleared message box and conversation id for each step of an exchange."""
        for step in steps:
            if step.trimmed and step.turn_id is not None:
                gr.Info("The oldest turns were left out to fit the model's context window.")
            if step.deflected:
                gr.Info("Off-topic for this persona: its deflection, the model was not asked "
                        "(Generation settings: Scope guard).")  # fmt: skip
            yield displayed(step.messages), "", step.conversation_id

    @shows_errors
    def respond(text, key, version, temperature, top_p, top_k, max_new_tokens, conv, name, facts, guard):
        if not (text or "").strip():
            gr.Warning("Type a message first: nothing was sent.")
            yield gr.skip(), "", conv
            return
        persona = resolve_persona(ctx, key, name, facts)
        settings = settings_for(ctx, temperature, top_p, top_k, max_new_tokens)
        yield from shown(conversations.exchange(ctx, text, key, persona, version, settings, conv, scope_guard=guard))

    @shows_errors
    def regenerate(key, version, temperature, top_p, top_k, max_new_tokens, conv, name, facts, guard):
        persona = resolve_persona(ctx, key, name, facts)
        settings = settings_for(ctx, temperature, top_p, top_k, max_new_tokens)
        yield from shown(conversations.retry(ctx, conv, key, persona, version, settings, guard))

    @shows_errors
    def take_back(conv, key, name, facts):
        conversations.undo(ctx, conv)
        return displayed(conversations.transcript(ctx, conv, resolve_persona(ctx, key, name, facts)))

    @shows_errors
    def switch(key, conv, name, facts):
        """Before the first message the new persona simply greets; mid-chat the switch is
        marked in the transcript when the next message is sent."""
        persona = resolve_persona(ctx, key, name, facts)
        if conv is not None and has_user_turn(conversations.transcript(ctx, conv, persona)):
            return gr.skip(), gr.skip()
        return for_chatbot(opening(persona)), None

    @shows_errors
    def new_chat(key, name, facts):
        return for_chatbot(opening(resolve_persona(ctx, key, name, facts))), None

    @shows_errors
    def like(data: gr.LikeData, history, typed, request: gr.Request, profile: gr.OAuthProfile | None):
        index = data.index if isinstance(data.index, int) else data.index[0]
        turn_id = (history[index].get("metadata") or {}).get("id")
        if turn_id is None:
            gr.Info("Only the model's replies can be labelled (greetings come from the persona file).")
            return
        rater = rater_for(ctx, typed, profile, request)
        row = conversations.label_reply(ctx, turn_id, "good" if data.liked else "bad", rater)
        gr.Info(f"Saved: {row.verdict} (by {row.rater}).")

    # One concurrency group for every event that generates (here, in Compare and the API): the
    # app's --concurrency_limit then caps generations overall, not per button.
    generating = dict(api_name=False, concurrency_id=GENERATION)
    message.submit(respond, [message, *picks], [chat, message, conv_id], **generating)
    send.click(respond, [message, *picks], [chat, message, conv_id], **generating)
    retry.click(regenerate, picks, [chat, message, conv_id], **generating)
    undo.click(take_back, [conv_id, persona, custom_name, custom_facts], chat, api_name=False)
    chat.like(like, [chat, rater], None, api_name=False)
    persona.change(switch, [persona, conv_id, custom_name, custom_facts], [chat, conv_id], api_name=False)
    clear.click(new_chat, [persona, custom_name, custom_facts], [chat, conv_id], api_name=False)
    # The chat box's own trash icon starts a new conversation too (not more turns on the old one).
    chat.clear(new_chat, [persona, custom_name, custom_facts], [chat, conv_id], api_name=False)
    _add_api(ctx)


def _add_api(ctx: AppContext) -> None:
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
