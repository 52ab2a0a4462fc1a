"""Compare tab: the same persona and user turns to two model versions, streamed side by side.

Each pane is a stored conversation of its own (source "compare"), driven by the same
`ui.conversations.exchange` as the Chat tab, so both sides keep their own history exactly as
the store has it. API (`gradio_client`): `/compare(message, persona, version_a="base",
version_b=None, conversation_a=None, conversation_b=None)` -> (conversation_a, reply_a,
conversation_b, reply_b), streamed; version_b None is the newest trained version.
"""

# No `from __future__ import annotations`: `gr.api` reads the endpoint types from the live
# annotations.

from collections.abc import Iterator

import gradio as gr

from chatbot.conversation import opening
from ui import conversations
from ui.chat import GENERATION
from ui.common import for_chatbot, shows_errors
from ui.context import AppContext

CompareResult = tuple[int | None, str, int | None, str]  # conversation_a, reply_a, conversation_b, reply_b


def compare_steps(
    ctx: AppContext, message: str, key: str, versions: tuple[str, str], conversation_ids: tuple
) -> Iterator[tuple[int, conversations.Step]]:
    """(side, step) of both exchanges as they stream."""
    persona = ctx.persona(key)
    streams = [
        conversations.exchange(ctx, message, key, persona, version, ctx.settings, conv, source="compare")
        for version, conv in zip(versions, conversation_ids, strict=True)
    ]
    yield from conversations.merge(streams)


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
    start = for_chatbot(opening(personas[first])) if first else []
    with gr.Row():
        chat_a = gr.Chatbot(start, label="base", height=420)
        chat_b = gr.Chatbot(start, label=ctx.pool.newest(), height=420)
    with gr.Row():
        message = gr.Textbox(placeholder="The same message goes to both; press Enter", show_label=False, scale=6)
        send = gr.Button("Send to both", variant="primary", scale=1)
    clear = gr.Button("Clear both")
    conv_a, conv_b = gr.State(None), gr.State(None)

    @shows_errors
    def compare(text, key, a, b, id_a, id_b):
        if not (text or "").strip():
            gr.Warning("Type a message first: nothing was sent.")
            yield gr.skip(), gr.skip(), "", id_a, id_b
            return
        panes, ids = [gr.skip(), gr.skip()], [id_a, id_b]
        for side, step in compare_steps(ctx, text, key, (a, b), (id_a, id_b)):
            panes[side], ids[side] = for_chatbot(step.messages), step.conversation_id
            yield *panes, "", *ids

    inputs = [message, persona, version_a, version_b, conv_a, conv_b]
    outputs = [chat_a, chat_b, message, conv_a, conv_b]
    message.submit(compare, inputs, outputs, api_name=False, concurrency_id=GENERATION)
    send.click(compare, inputs, outputs, api_name=False, concurrency_id=GENERATION)
    # Each pane is titled with the version it shows.
    version_a.change(lambda v: gr.update(label=v), version_a, chat_a, api_name=False)
    version_b.change(lambda v: gr.update(label=v), version_b, chat_b, api_name=False)

    @shows_errors
    def reset(key):
        start = for_chatbot(opening(ctx.persona(key)))
        return start, start, None, None

    clear.click(reset, persona, [chat_a, chat_b, conv_a, conv_b], api_name=False)
    persona.change(reset, persona, [chat_a, chat_b, conv_a, conv_b], api_name=False)

    def compare_api(
        message: str,
        persona: str,
        version_a: str = "base",
        version_b: str | None = None,
        conversation_a: int | None = None,
        conversation_b: int | None = None,
    ) -> Iterator[CompareResult]:
        """The message to two versions under one persona, streamed: (conversation_a, reply_a,
        conversation_b, reply_b). Pass the conversation ids back to continue both."""
        result = [conversation_a, "", conversation_b, ""]
        versions = (version_a, version_b or ctx.pool.newest())
        for side, step in compare_steps(ctx, message, persona, versions, (conversation_a, conversation_b)):
            result[2 * side : 2 * side + 2] = [step.conversation_id, step.reply]
            yield tuple(result)

    gr.api(shows_errors(compare_api), api_name="compare", concurrency_id=GENERATION)
