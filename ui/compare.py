"""Compare tab: one persona and one user turn, two model versions, streamed side by side."""

from __future__ import annotations

import queue
import threading

import gradio as gr

from chatbot.conversation import build_messages, check_message
from chatbot.errors import MessageError, PersonaStudioError
from ui.chat import GENERATION, dialogue, greeting
from ui.common import raw, shown, user_error
from ui.context import AppContext


def stream_both(engines, messages, settings):
    """Yield (side, piece) from both engines as the pieces arrive; each runs in a thread so
    neither pane waits for the other to finish."""
    pieces: queue.Queue = queue.Queue()

    def run(side, engine, msgs):
        try:
            for piece in engine.stream(msgs, settings):
                pieces.put((side, piece))
        except Exception as err:  # handed to the consumer below
            pieces.put((side, err))
        finally:
            pieces.put((side, None))

    for side, (engine, msgs) in enumerate(zip(engines, messages, strict=True)):
        threading.Thread(target=run, args=(side, engine, msgs), daemon=True).start()
    running = len(engines)
    while running:
        side, piece = pieces.get()
        if piece is None:
            running -= 1
        elif isinstance(piece, Exception):
            raise piece
        else:
            yield side, piece


def make_compare(ctx: AppContext):
    def compare(message, history_a, history_b, persona_key, version_a, version_b):
        histories = [list(history_a or []), list(history_b or [])]
        try:
            message = check_message(message)
        except MessageError:
            gr.Warning("Type a message first: nothing was sent.")
            yield *histories, ""
            return
        try:
            persona = ctx.persona(persona_key)
            engines = [ctx.pool.get(version_a), ctx.pool.get(version_b)]
            messages = [build_messages(persona, dialogue(h), message) for h in histories]
            for h in histories:
                h += [{"role": "user", "content": shown(message)}, {"role": "assistant", "content": ""}]
            for side, piece in stream_both(engines, messages, ctx.settings):
                histories[side][-1]["content"] += shown(piece)
                yield *histories, ""
            conv = ctx.store.start_conversation(
                "compare", persona_key, persona.model_dump(), f"{version_a} vs {version_b}"
            )
            for version, h in zip((version_a, version_b), histories, strict=True):
                ctx.store.add_turn(conv, "user", message, version, persona.name)
                ctx.store.add_turn(conv, "assistant", raw(h[-1]["content"]), version, persona.name)
        except PersonaStudioError as err:
            raise user_error(err) from None
        yield *histories, ""

    return compare


def build_compare_tab(ctx: AppContext) -> None:
    personas, _ = ctx.personas()
    first = next(iter(personas), None)
    versions = ctx.pool.versions()
    with gr.Row():
        persona = gr.Dropdown(ctx.persona_choices(), value=first, label="Persona", scale=2, allow_custom_value=True)
        version_a = gr.Dropdown(versions, value="base", label="Left: model version", scale=1, allow_custom_value=True)
        version_b = gr.Dropdown(versions, value=ctx.pool.newest(), label="Right: model version", scale=1,
                                allow_custom_value=True)  # fmt: skip
    for picker in (version_a, version_b):  # versions trained while the app runs appear on open
        picker.focus(lambda: gr.update(choices=ctx.pool.versions()), None, picker, api_name=False)
    if len(versions) == 1:
        gr.Markdown("Only `base` exists so far: train a version (`python -m training.train`) to compare against it.")
    start = greeting(personas[first]) if first else []
    with gr.Row():
        chat_a = gr.Chatbot(start, label="base", height=420)
        chat_b = gr.Chatbot(start, label=ctx.pool.newest(), height=420)
    with gr.Row():
        message = gr.Textbox(placeholder="The same message goes to both; press Enter", show_label=False, scale=6)
        send = gr.Button("Send to both", variant="primary", scale=1)
    clear = gr.Button("Clear both")
    compare = make_compare(ctx)
    inputs = [message, chat_a, chat_b, persona, version_a, version_b]
    message.submit(compare, inputs, [chat_a, chat_b, message], api_name="compare", concurrency_id=GENERATION)
    send.click(compare, inputs, [chat_a, chat_b, message], api_name=False, concurrency_id=GENERATION)
    # Each pane is titled with the version it shows.
    version_a.change(lambda v: gr.update(label=v), version_a, chat_a, api_name=False)
    version_b.change(lambda v: gr.update(label=v), version_b, chat_b, api_name=False)

    def reset(key):
        try:
            start = greeting(ctx.persona(key))
        except PersonaStudioError as err:
            raise user_error(err) from None
        return start, start

    clear.click(reset, persona, [chat_a, chat_b], api_name=False)
    persona.change(reset, persona, [chat_a, chat_b], api_name=False)
