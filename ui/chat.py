"""Chat tab: a persona, a model version, streamed replies, retry/undo/clear, 👍/👎 per reply.

The transcript is the Gradio messages list. A persona switch adds a notice message (with a
metadata title) that is shown but never sent to the model. Every turn is saved in the store;
the conversation id travels in a hidden component, so API clients can continue a chat.
"""

from __future__ import annotations

import gradio as gr

from chatbot.conversation import build_messages, check_message
from chatbot.engine import GenerationSettings
from chatbot.errors import MessageError, PersonaStudioError
from chatbot.persona import Persona
from store import NewItem, StoreError
from ui.common import rater_name, raw, shown, text_of, user_error
from ui.context import AppContext

CUSTOM = "__custom__"  # persona key of the persona typed in on the spot
GENERATION = "generation"  # concurrency group of all events that run the model


def dialogue(history: list[dict]) -> list[dict]:
    """The user/assistant turns the model sees: notices and greetings' metadata dropped."""
    turns = []
    for m in history or []:
        if (m.get("metadata") or {}).get("title"):
            continue
        turns.append({"role": m["role"], "content": raw(text_of(m["content"]))})
    return turns


def notice(persona: Persona) -> dict:
    """A transcript marker (shown, never sent to the model) for a persona switch."""
    body = f"From here on the model speaks as {persona.name}."
    return {
        "role": "assistant",
        "content": shown(body),
        "metadata": {"title": f"Persona switched to {shown(persona.name)}"},
    }


def resolve_persona(ctx: AppContext, key: str, custom_name: str, custom_facts: str) -> Persona:
    if key != CUSTOM:
        try:
            return ctx.persona(key)
        except PersonaStudioError as err:  # a broken file picked from the list: say why
            raise user_error(err) from None
    facts = [line.strip() for line in (custom_facts or "").splitlines() if line.strip()]
    try:
        return Persona(name=(custom_name or "").strip() or "Custom persona", facts=facts)
    except ValueError:
        raise gr.Error("A typed-in persona needs at least one fact: one sentence per line.") from None


def greeting(persona: Persona) -> list[dict]:
    return [{"role": "assistant", "content": shown(persona.greeting)}] if persona.greeting else []


def save_turns(ctx, conv_id, history, start, version, persona_key, persona) -> int:
    """Append history[start:] to the stored conversation (created on the first message)."""
    if conv_id is None:
        conv_id = ctx.store.start_conversation("chat", persona_key, persona.model_dump(), version)
        start = 0
    for m in history[start:]:
        role = "notice" if (m.get("metadata") or {}).get("title") else m["role"]
        ctx.store.add_turn(int(conv_id), role, raw(text_of(m["content"])), version, persona.name)
    return int(conv_id)


def make_respond(ctx: AppContext):
    def respond(message, history, persona_key, version, temperature, top_p, top_k, max_new_tokens,
                conv_id, last_persona, custom_name, custom_facts):  # fmt: skip
        history = list(history or [])
        try:
            message = check_message(message)
        except MessageError:
            gr.Warning("Type a message first: nothing was sent.")
            yield history, "", conv_id, last_persona
            return
        persona = resolve_persona(ctx, persona_key, custom_name, custom_facts)
        settings = GenerationSettings(temperature=temperature, top_p=top_p, top_k=int(top_k),
                                      max_new_tokens=int(max_new_tokens), seed=ctx.settings.seed)  # fmt: skip
        start = len(history)
        if last_persona and last_persona != persona_key:
            history.append(notice(persona))
        try:
            engine = ctx.pool.get(version)
            messages = build_messages(persona, dialogue(history), message)
            if len(engine.fit_messages(messages, settings)) < len(messages):
                gr.Info("The oldest turns were left out to fit the model's context window.")
            history += [{"role": "user", "content": shown(message)}, {"role": "assistant", "content": ""}]
            for piece in engine.stream(messages, settings):
                history[-1]["content"] += shown(piece)
                yield history, "", conv_id, persona_key
            history[-1]["content"] = history[-1]["content"].strip()
            conv_id = save_turns(ctx, conv_id, history, start, version, persona_key, persona)
        except PersonaStudioError as err:
            raise user_error(err) from None
        yield history, "", conv_id, persona_key

    return respond


def reply_origin(ctx: AppContext, conv_id, answer: str):
    """The stored turn that produced `answer` (its persona and model version), or None. The
    dropdowns may have changed since, so the stored turn, not the current picks, is the truth."""
    if conv_id is None:
        return None
    turns = ctx.store.conversation(int(conv_id))
    return next((t for t in reversed(turns) if t.role == "assistant" and t.content == answer), None)


def persona_record(ctx: AppContext, name: str, current: Persona) -> dict:
    if current.name == name:
        return current.model_dump()
    found = next((p for p in ctx.personas()[0].values() if p.name == name), None)
    return found.model_dump() if found else {"name": name}


def make_like(ctx: AppContext):
    def like(data: gr.LikeData, history, rater, persona_key, conv_id, custom_name, custom_facts,
             request: gr.Request):  # fmt: skip
        name = rater_name(rater, request)
        index = data.index if isinstance(data.index, int) else data.index[0]
        answer = raw(text_of(history[index]["content"]))
        origin = reply_origin(ctx, conv_id, answer)
        if index == 0 or origin is None:  # the greeting comes from the persona file, not the model
            gr.Info("Only the model's replies can be labelled (greetings come from the persona file).")
            return
        current = resolve_persona(ctx, persona_key, custom_name, custom_facts)
        item = NewItem(source="chat", persona_name=origin.persona_name, model_version=origin.model_version,
                       persona=persona_record(ctx, origin.persona_name, current),
                       context=dialogue(history[:index]), answer=answer, conversation_id=int(conv_id))  # fmt: skip
        try:
            [item_id] = ctx.store.add_label_items([item])
            ctx.store.label(item_id, name, "good" if data.liked else "bad")
        except StoreError as err:
            raise user_error(err) from None
        gr.Info(f"Saved: {'good' if data.liked else 'bad'} (by {name}).")

    return like


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
    chat = gr.Chatbot(greeting(personas[first]) if first in personas else [], label="Chat", height=460,
                      feedback_options=("Like", "Dislike"), group_consecutive_messages=False)  # fmt: skip
    with gr.Row():
        message = gr.Textbox(
            placeholder="Say something and press Enter", show_label=False, scale=6, elem_id="chat-input"
        )
        send = gr.Button("Send", variant="primary", scale=1)
    with gr.Row():
        retry, undo, clear = gr.Button("Retry"), gr.Button("Undo"), gr.Button("Clear")
    conv_id = gr.Number(value=None, visible=False, precision=0)
    last_persona = gr.Textbox(value=first, visible=False)
    gr.Markdown("The thumbs under a reply save it as a good/bad label, under the Rater name at the top.")

    inputs = [message, chat, persona, version, temperature, top_p, top_k, max_new_tokens, conv_id, last_persona,
              custom_name, custom_facts]  # fmt: skip
    outputs = [chat, message, conv_id, last_persona]
    respond = make_respond(ctx)
    # One concurrency group for every event that generates (here and in Compare): the app's
    # --concurrency_limit then caps generations overall, not per button.
    message.submit(respond, inputs, outputs, api_name="chat", concurrency_id=GENERATION)
    send.click(respond, inputs, outputs, api_name=False, concurrency_id=GENERATION)
    chat.like(make_like(ctx), [chat, rater, persona, conv_id, custom_name, custom_facts], None,
              api_name=False)  # fmt: skip

    def pop_last(history):
        history = list(history or [])
        while history and history[-1]["role"] == "assistant" and not (history[-1].get("metadata") or {}).get("title"):
            history.pop()
        last_user = raw(text_of(history.pop()["content"])) if history and history[-1]["role"] == "user" else ""
        return history, last_user

    def do_undo(history):
        return pop_last(history)[0]

    undo.click(do_undo, chat, chat, api_name="undo")
    retry.click(pop_last, chat, [chat, message], api_name=False).then(
        respond, inputs, outputs, api_name=False, concurrency_id=GENERATION
    )

    def switch(key, history, custom_name, custom_facts):
        """Before the first message the new persona simply greets; mid-chat the switch is
        marked in the transcript when the next message is sent."""
        if any(m["role"] == "user" for m in history or []):
            return gr.skip(), gr.skip()
        return greeting(resolve_persona(ctx, key, custom_name, custom_facts)), key

    persona.change(switch, [persona, chat, custom_name, custom_facts], [chat, last_persona], api_name="switch_persona")

    def do_clear(key, custom_name, custom_facts):
        return greeting(resolve_persona(ctx, key, custom_name, custom_facts)), None, key

    clear.click(do_clear, [persona, custom_name, custom_facts], [chat, conv_id, last_persona], api_name="clear")
    # The chat box's own trash icon starts a new conversation too (not more turns on the old one).
    chat.clear(do_clear, [persona, custom_name, custom_facts], [chat, conv_id, last_persona], api_name=False)
