"""Chat tab: a persona, a model version, streamed replies, retry/undo/clear, 👍/👎 per reply.

The conversation lives in the store (`ui/conversations.py`); the chat box shows its active
turns, each with its stored id in the message metadata, and only the conversation id travels
with the page. A page writes one reply at a time: the message box stays editable while it
streams, and a message sent meanwhile is refused with the reason and kept in the box. The
thumbs show exactly the verdicts saved (a thumb clicked off takes the label back). Errors are
toasts; what is on screen stays. The typed API for scripts (`/chat`, `/retry`, ...) is
`ui/chat_api.py`.
"""

# No `from __future__ import annotations`: Gradio reads `gr.LikeData` and `gr.OAuthProfile`
# from the live annotations.

import gradio as gr

from core.conversation import check_message, has_user_turn, opening
from core.errors import MessageError, PersonaStudioError
from ui import conversations
from ui.chat_api import CUSTOM, GENERATION, TAKING, add_chat_api, resolve_persona, settings_for
from ui.common import (
    BUSY_HINT,
    claim,
    empties_box_js,
    escape_html,
    for_chatbot,
    keeps_content,
    new_page,
    release,
    style_js,
    toast,
)
from ui.context import AppContext
from ui.raters import rater_for


# The Send button while the page's reply is written, and after: the state at a glance (Enter
# while it says so is refused with the reason, the message kept).
def writing() -> dict:
    return gr.update(value="Replying…", interactive=False)


def idle() -> dict:
    return gr.update(value="Send", interactive=True)


# Marks a message in the chat box that cannot be labelled (a greeting, a switch notice, a scope
# deflection, a reply still streaming): CSS below hides its thumbs.
NO_THUMBS = '<span class="ps-no-thumbs"></span>'
CHAT_CSS = """
#chat-box .message-row:has(.ps-no-thumbs) + .message-buttons button:is([aria-label^="Like"], [aria-label^="Dislike"]) {
  display: none;
}
@media (max-width: 640px) {  /* a phone: persona and version on one line, the message box above the fold */
  #chat-pickers, #chat-pickers > .form { flex-wrap: nowrap !important; }
  #chat-pickers .block { min-width: 0 !important; }
  #chat-pickers #chat-version { flex: 0 0 120px !important; }
  #chat-box { height: 40vh !important; }
}
"""


def displayed(messages) -> list[dict]:
    """`for_chatbot`, with each scope deflection titled as one (the transcript shows which
    replies are the persona file's, not the model's words), and thumbs only on stored replies."""
    shown = for_chatbot(messages)
    for message, item in zip(messages, shown, strict=True):
        if message.get("deflected"):
            item["metadata"] = {**(item["metadata"] or {}), "title": "Off-topic: the persona's deflection"}
        labellable = message["role"] == "assistant" and message.get("id") is not None and message.get("model_version")
        if item["role"] == "assistant" and not labellable:
            item["content"] = NO_THUMBS + item["content"]
    return shown


def chat_view(shown: list[dict], page: dict) -> dict:
    """The chat box's value and its thumbs: exactly the verdicts this page saved (a refused or
    taken-back thumb shows unselected)."""
    bots = [m for m in shown if m["role"] == "assistant"]
    feedback = [page["ratings"].get((m.get("metadata") or {}).get("id")) for m in bots]
    return gr.update(value=shown, feedback_value=feedback)


def persona_list(ctx: AppContext) -> list[tuple[str, str]]:
    return ctx.persona_choices() + [("✎ Custom persona (type it below)", CUSTOM)]


def build_chat_tab(ctx: AppContext, rater: gr.Textbox) -> None:
    personas, _ = ctx.personas()
    first = next(iter(personas), CUSTOM)
    with gr.Row(elem_id="chat-pickers"):
        persona = gr.Dropdown(persona_list(ctx), value=first, label="Persona", scale=3, elem_id="chat-persona",
                              allow_custom_value=True)  # fmt: skip
        version = gr.Dropdown(ctx.pool.versions(), value="base", label="Model version", scale=1,
                              allow_custom_value=True, elem_id="chat-version")  # fmt: skip
        # Versions trained while the app runs appear when the picker is opened.
        version.focus(lambda: gr.update(choices=ctx.pool.versions()), None, version, api_name=False)
    start = displayed(opening(personas[first])) if first in personas else []
    chat = gr.Chatbot(start, label="Chat", height=460, feedback_options=("Like", "Dislike"),
                      group_consecutive_messages=False, elem_id="chat-box")  # fmt: skip
    with gr.Row():
        message = gr.Textbox(
            placeholder="Say something and press Enter", show_label=False, scale=6, elem_id="chat-input"
        )
        send = gr.Button("Send", variant="primary", scale=1, min_width=80, elem_id="chat-send")
    with gr.Row():
        retry, undo, clear = gr.Button("Retry"), gr.Button("Undo"), gr.Button("Clear")
    with gr.Accordion("Custom persona", open=False) as custom:
        custom_name = gr.Textbox(label="Name", placeholder="e.g. Captain Mira")
        custom_facts = gr.Textbox(label="Facts (one per line)", lines=4, placeholder="I sail cargo ships.\nI love tea.")
    with gr.Accordion("Generation settings", open=False), gr.Row():
        s = ctx.settings
        temperature = gr.Slider(0, 2, value=s.temperature, step=0.05, label="Temperature (0 = greedy)")
        top_p = gr.Slider(0.05, 1, value=s.top_p, step=0.05, label="Top-p")
        top_k = gr.Slider(0, 200, value=s.top_k, step=1, label="Top-k")
        max_new_tokens = gr.Slider(8, 1024, value=s.max_new_tokens, step=8, label="Max new tokens")
        scope_guard = gr.Checkbox(True, label="Scope guard: off-topic questions get the persona's deflection")
    conv_id = gr.State(None)  # the stored conversation on screen; None until the first message
    page = gr.State(new_page())  # this page's running reply and saved thumbs (ui.common.new_page)
    pending = gr.State(None)  # the message (or retry) accepted to send next: its change runs the model
    gr.Markdown("The thumbs under a reply save it as a good/bad label, under the Rater name at the top.")
    gr.HTML("", js_on_load=f"({style_js('chat', CHAT_CSS)})();", padding=False)  # last: its gap shows nowhere

    picks = [persona, version, temperature, top_p, top_k, max_new_tokens, conv_id, custom_name, custom_facts,
             scope_guard]  # fmt: skip

    def reply_steps(text, key, version, temperature, top_p, top_k, max_new_tokens, conv, name, facts, guard):
        """The reply to `text` (None: a retry of the last exchange), as `conversations` steps."""
        persona = resolve_persona(ctx, key, name, facts)
        settings = settings_for(ctx, temperature, top_p, top_k, max_new_tokens)
        if text is None:
            return conversations.retry(ctx, conv, key, persona, version, settings, guard)
        return conversations.exchange(ctx, text, key, persona, version, settings, conv, scope_guard=guard)

    def start(page, text, *chosen):
        """Accepted: ask the model now (`conversations.Started`), so its prefill overlaps the
        reply event's round trip; `respond` reads it. Only on a loaded engine that decodes chats
        together: its scheduler admits them, where another engine would run a generation beside
        the app's --concurrency_limit (and a version still to load would hold up the accept)."""
        page["sent"] += 1
        engine = ctx.pool.loaded(chosen[1])
        if engine is not None and engine.batches:
            page["started"] = (page["sent"], conversations.Started(reply_steps(text, *chosen)))
        return {"text": text, "n": page["sent"]}

    def take(text, shown, page, *chosen):
        """Accept a message at once (it shows in the chat; the page emptied the box already,
        `empties_box_js`) or refuse it with the reason and the text back in the box: the model
        is asked now (`start`), its reply streams on `pending`'s change."""
        key, name, facts = chosen[0], chosen[7], chosen[8]
        try:
            message = check_message(text)
            resolve_persona(ctx, key, name, facts)  # a custom persona without facts: refused here
        except PersonaStudioError as err:
            toast(err)
            return text, gr.skip(), gr.skip(), gr.skip()
        if not claim(page):
            gr.Warning(BUSY_HINT, title="Not sent yet")
            return text, gr.skip(), gr.skip(), gr.skip()
        shown = [*shown, {"role": "user", "content": escape_html(message), "metadata": None}]
        return gr.skip(), gr.update(value=shown), start(page, message, *chosen), writing()

    @keeps_content
    def take_retry(page, *chosen):
        if not claim(page):
            gr.Warning("A reply is still being written: retry once it is done.", title="Not retried")
            return gr.skip()
        return start(page, None, *chosen), writing()

    def respond(sent, key, version, temperature, top_p, top_k, max_new_tokens, conv, name, facts, guard, page):
        """Stream the reply to the accepted message (or the retry), started by `start` or now;
        the chat is redrawn from the store at the end, and on an error (what was sent is named in
        the toast)."""
        chosen = (key, version, temperature, top_p, top_k, max_new_tokens, conv, name, facts, guard)
        try:
            n, started = page.pop("started", (None, None))
            steps = started.steps() if n == sent["n"] else None  # None: not started, or given up on
            if steps is None:
                steps = reply_steps(sent["text"], *chosen)
            for step in steps:
                if step.trimmed and step.turn_id is not None:
                    gr.Info("The oldest turns were left out to fit the model's context window.")
                if step.deflected:
                    gr.Info("Off-topic for this persona: its deflection, the model was not asked "
                            "(Generation settings: Scope guard).")  # fmt: skip
                saved = step.turn_id is not None
                if saved:  # before the last update reaches the page: a send right after it is taken
                    release(page)
                yield chat_view(displayed(step.messages), page), step.conversation_id, (idle() if saved else gr.skip())
        except (PersonaStudioError, gr.Error) as err:
            release(page)
            toast(err, f"Not sent: “{sent['text']}”. " if sent["text"] else "Not retried: ")
            if conv is None:
                yield gr.skip(), gr.skip(), idle()
            else:  # what is stored: a message that was not answered is not shown as if it were
                stored = conversations.stored_messages(ctx.store.conversation(int(conv)))
                yield chat_view(displayed(stored), page), gr.skip(), idle()
        finally:
            release(page)

    @keeps_content
    def take_back(conv, key, name, facts, page):
        if page["busy_since"]:
            raise MessageError("a reply is still being written", "undo once it is done")
        conversations.undo(ctx, conv)
        return chat_view(displayed(conversations.transcript(ctx, conv, resolve_persona(ctx, key, name, facts))), page)

    @keeps_content
    def switch(key, conv, name, facts, page):
        """Before the first message the new persona simply greets; mid-chat the switch is
        marked in the transcript when the next message is sent. The custom persona waits for
        its facts (its fields open) instead of failing before anything was typed."""
        if key == CUSTOM and not (facts or "").strip():
            gr.Info("Type the custom persona's name and facts (below the chat), then send a message.")
            if conv is not None:
                return gr.skip(), gr.skip(), gr.update(open=True)
            return chat_view([], page), None, gr.update(open=True)
        persona = resolve_persona(ctx, key, name, facts)
        if conv is not None and has_user_turn(conversations.transcript(ctx, conv, persona)):
            return gr.skip(), gr.skip(), gr.skip()
        return chat_view(displayed(opening(persona)), page), None, gr.skip()

    @keeps_content
    def new_chat(key, name, facts, page):
        if key == CUSTOM and not (facts or "").strip():
            return chat_view([], page), None
        return chat_view(displayed(opening(resolve_persona(ctx, key, name, facts))), page), None

    def like(data: gr.LikeData, shown, typed, page, request: gr.Request, profile: gr.OAuthProfile | None):
        """Save, change or take back (thumb clicked off) the rater's verdict; the thumbs then
        show what is stored, also when the click was refused (no rater name, not a reply)."""
        index = data.index if isinstance(data.index, int) else data.index[0]
        turn_id = (shown[index].get("metadata") or {}).get("id")
        try:
            if turn_id is None:
                raise MessageError("only the model's replies can be labelled", "greetings come from the persona file")
            who = rater_for(ctx, typed, profile, request)
            if data.liked in (True, False):
                row = conversations.label_reply(ctx, turn_id, "good" if data.liked else "bad", who)
                page["ratings"][turn_id] = "Like" if data.liked else "Dislike"
                gr.Info(f"Saved: {row.verdict} (by {row.rater}).")
            else:  # the selected thumb clicked again: no verdict
                conversations.unlabel_reply(ctx, turn_id, who)
                page["ratings"].pop(turn_id, None)
                gr.Info(f"Label taken back: no verdict on this reply (by {who}).")
        except (PersonaStudioError, gr.Error) as err:
            toast(err)
        return chat_view(shown, page)

    # One concurrency group for every event that generates (here, in Compare and the API): the
    # app's --concurrency_limit then caps generations overall, not per button. Accepting a
    # message is instant and never waits behind generations (TAKING).
    generating = dict(api_name=False, concurrency_id=GENERATION)
    taking = dict(api_name=False, show_progress="hidden", **TAKING)
    for trigger in (message.submit, send.click):
        trigger(take, [message, chat, page, *picks], [message, chat, pending, send],
                js=empties_box_js("chat-input", "chat-send"), **taking)  # fmt: skip
    retry.click(take_retry, [page, *picks], [pending, send], **taking)
    pending.change(respond, [pending, *picks, page], [chat, conv_id, send], trigger_mode="multiple", **generating)
    undo.click(take_back, [conv_id, persona, custom_name, custom_facts, page], chat, api_name=False)
    chat.like(like, [chat, rater, page], chat, api_name=False, show_progress="hidden", **TAKING)
    persona.change(switch, [persona, conv_id, custom_name, custom_facts, page], [chat, conv_id, custom],
                   api_name=False)  # fmt: skip
    clear.click(new_chat, [persona, custom_name, custom_facts, page], [chat, conv_id], api_name=False)
    # The chat box's own trash icon starts a new conversation too (not more turns on the old one).
    chat.clear(new_chat, [persona, custom_name, custom_facts, page], [chat, conv_id], api_name=False)

    def listed():
        """Persona files are re-read when a page loads and when the picker opens (cheap: parsed
        files are cached by mtime): files added or fixed while the app runs appear, removed ones go."""
        return gr.update(choices=persona_list(ctx))

    def on_load():
        """A page opens on the persona files there are now, with the first one's greeting."""
        personas, _ = ctx.personas()
        key = next(iter(personas), CUSTOM)
        return gr.update(choices=persona_list(ctx), value=key)

    persona.focus(listed, None, persona, api_name=False, show_progress="hidden", **TAKING)
    gr.on(None, on_load, None, persona, api_name=False, show_progress="hidden", **TAKING)  # on page load
    add_chat_api(ctx)
