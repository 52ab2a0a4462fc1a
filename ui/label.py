"""Label tab: one answer at a time, shown blind (no model version), judged good or bad.

A label is on disk when its button returns (the store commits one transaction per label);
when the database fails the rater sees that the label was NOT saved.

API for gradio_client scripts (stateless: every call names its item and rater; with sign-in
on, the signed-in or logged-in user is the rater whatever `rater` says: ui/raters.py). Each
returns the rater's next item as (item_id, persona, context, answer, progress), item_id None
when nothing is left:

    /next_item(rater)
    /label(item_id, verdict, comment, rater)     verdict: "good" | "bad"
    /skip(item_id, rater)
    /undo_label(rater)                           the undone item comes back first
"""

# No `from __future__ import annotations`: `gr.api` reads the endpoint types from the live
# annotations (a string return annotation would become one untyped output).

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import gradio as gr

from core.conversation import dialogue
from store import BlindItem, Item, Progress, StoreError
from ui.common import for_chatbot, shortcuts_js
from ui.context import AppContext
from ui.raters import SIGN_IN_HINT, rater_for

Shown = tuple[int | None, str, list[dict], str, str]  # item_id, persona, context, answer, progress

EMPTY_QUEUE = "Nothing left to label — items come from evaluation runs and from saved chats."
NO_RATER = "Type your name in the **Rater** box at the top, then press Enter to start labelling."
KEYS_HINT = "Keys: G good · B bad · S skip · U undo"
BUTTON_IDS = {"good": "label-good", "bad": "label-bad", "skip": "label-skip", "undo": "label-undo"}

# Concurrency group of every label event (buttons, tab open, API), apart from the model's
# "generation" group so a label never waits behind a generation. No limit: a label is one short
# write and a read or two (~4 ms of store work; this process's SQLite writers queue in the store),
# and Gradio's queue counts the events *waiting* in every group against `max_size`
# (queueing.Queue.__len__), so label events must not wait there, or a room of raters fills the
# queue and is turned away with HTTP 503.
LABEL = "label"
LABEL_QUEUE = dict(concurrency_id=LABEL, concurrency_limit=None)
# The API endpoints also answer a direct `POST /gradio_api/run/<name>` past the queue: one
# request instead of a queued call and its event stream (100 raters on 2 cores: round trip p50
# 0.30 -> 0.16 s, benchmarks/label_load). Gradio opens that route to queued events only where
# `api_open` (off on Spaces); gradio_client and /gradio_api/call/ still queue, in the group above.
LABEL_API = dict(LABEL_QUEUE, queue=False)

# Key -> the button it clicks (`event.key`, lower-cased).
SHORTCUTS = {"g": "good", "1": "good", "b": "bad", "2": "bad", "s": "skip", "u": "undo"}

# Clicks the Label tab's buttons from the keyboard (`ui.common.shortcuts_js`). `demo.launch(js=...)` calls it
# once on page load; the guard makes a second install (the tab's own, below) harmless.
# Keys do nothing while typing in a field, with a modifier held, or when the Label tab is
# hidden (a button in a hidden tab has no offsetParent).
LABEL_SHORTCUTS_JS = shortcuts_js("label", {key: BUTTON_IDS[action] for key, action in SHORTCUTS.items()})


def persona_text(persona: dict) -> str:
    """The persona as plain text (shown in a read-only textbox, never rendered as HTML)."""
    name = persona.get("name") or "(no name)"
    lines = [f"{name} — {persona['description']}" if persona.get("description") else name]
    lines += ["", "Facts:", *(f"- {fact}" for fact in persona.get("facts") or [])]
    if persona.get("style"):
        lines += ["", f"Style: {persona['style']}"]
    if persona.get("knowledge"):
        lines += ["", "Knows:", *(f"Q: {qa['question']}\nA: {qa['answer']}" for qa in persona["knowledge"])]
    return "\n".join(lines)


def _store_error(what: str, err: StoreError) -> gr.Error:
    # duration=None: the toast stays until closed, so a lost label cannot go unnoticed.
    return gr.Error(f"{what}: {err.problem}. {err.fix}" if err.fix else f"{what}: {err.problem}", duration=None)


def show_next(ctx: AppContext, rater: str) -> Shown:
    """The rater's next item (assigned to them now) and their progress."""
    try:
        return _shown(*ctx.store.next_with_progress(rater, ctx.label_overlap))
    except StoreError as err:
        raise _store_error("Could not load the next item", err) from None


def _shown(item: Item | None, progress: Progress) -> Shown:
    """The rater's next item (None: nothing left) as the tab shows it, with their progress."""
    counts = f"{progress.done} of {progress.total} labelled"
    if item is None:
        return None, "", [], "", f"{EMPTY_QUEUE} ({counts})"
    blind: BlindItem = item.blind()  # what a rater may see: no model version, no source
    return blind.id, persona_text(blind.persona), dialogue(blind.context), blind.answer, counts


def save_label(ctx: AppContext, item_id: int | None, verdict: str, comment: str, rater: str) -> Shown:
    if item_id is None:
        raise gr.Error("There is no answer on screen to label.")
    try:  # the label and the next item in one write (Store.label_and_next)
        done = ctx.store.label_and_next(int(item_id), rater, verdict, (comment or "").strip(), ctx.label_overlap)
    except StoreError as err:
        raise _store_error("Your label was NOT saved", err) from None
    if done.next_error is not None:
        return _after("Your label was saved", lambda: show_next(ctx, rater))  # ask again, on its own
    return _after("Your label was saved", lambda: _shown(done.next_item, _progress(ctx, rater)))


def _progress(ctx: AppContext, rater: str) -> Progress:
    try:
        return ctx.store.progress(rater, ctx.label_overlap)
    except StoreError as err:
        raise _store_error("Could not load the next item", err) from None


def save_skip(ctx: AppContext, item_id: int | None, rater: str) -> Shown:
    if item_id is None:
        raise gr.Error("There is no answer on screen to skip.")
    try:
        ctx.store.skip(int(item_id), rater)
    except StoreError as err:
        raise _store_error("The skip was NOT saved", err) from None
    return _after("The skip was saved", lambda: show_next(ctx, rater))


def undo_label(ctx: AppContext, rater: str) -> Shown:
    try:
        undone = ctx.store.undo_last_label(rater)
    except StoreError as err:
        raise _store_error("Your last label was NOT undone", err) from None
    gr.Info("You have no labels to undo." if undone is None else "Last label removed: that answer is back.")
    return _after("Done", lambda: show_next(ctx, rater))


def _after(done: str, shown: Callable[[], Shown]) -> Shown:
    """What `shown` gives once a write succeeded; a failure there must not read as a lost write."""
    try:
        return shown()
    except gr.Error as err:
        raise gr.Error(f"{done}, but {err.message[0].lower()}{err.message[1:]}", duration=None) from None


@dataclass
class LabelView:
    progress: gr.Markdown
    item_id: gr.State  # the item on screen; None when there is none
    persona: gr.Textbox
    chat: gr.Chatbot
    answer: gr.Textbox
    comment: gr.Textbox
    buttons: dict[str, gr.Button]  # by BUTTON_IDS key

    @property
    def outputs(self) -> list:
        return [self.item_id, self.persona, self.chat, self.answer, self.progress, self.comment]


def _layout(ctx: AppContext) -> LabelView:
    gr.Markdown("Would this persona say this, and is it a good answer? Judge the highlighted answer.")
    progress = gr.Markdown("Loading your next item…" if ctx.signed_in else NO_RATER)
    item_id = gr.State(None)
    with gr.Row(equal_height=False):
        persona = gr.Textbox(label="Persona", interactive=False, lines=10, max_lines=24, scale=1)
        with gr.Column(scale=2):
            chat = gr.Chatbot(
                label="Conversation so far",
                height=300,
                feedback_options=None,
                buttons=["copy"],  # no "share": it would post the item outside the blind rating
                placeholder="(the answer opens the conversation)",
            )
            with gr.Column(variant="panel"):
                answer = gr.Textbox(label="👉 Answer to judge", interactive=False, lines=3, max_lines=16)
    with gr.Row():
        buttons = {
            "good": gr.Button("👍 Good", variant="primary", elem_id=BUTTON_IDS["good"]),
            "bad": gr.Button("👎 Bad", variant="stop", elem_id=BUTTON_IDS["bad"]),
            "skip": gr.Button("Skip", elem_id=BUTTON_IDS["skip"]),
            "undo": gr.Button("Undo last label", elem_id=BUTTON_IDS["undo"]),
        }
    comment = gr.Textbox(label="Comment (optional)", placeholder="Why good or bad? Saved with the label.")
    # js_on_load installs the shortcuts when this tab first renders, so they work even if
    # app.py does not pass LABEL_SHORTCUTS_JS to launch().
    gr.HTML(KEYS_HINT, js_on_load=f"({LABEL_SHORTCUTS_JS})();")
    return LabelView(progress, item_id, persona, chat, answer, comment, buttons)


def build_label_tab(ctx: AppContext, rater: gr.Textbox) -> dict:
    """The Label tab's contents; call inside `with gr.Tab("Label")`. Returns the arguments for
    that tab's `.select(**...)`, which loads the rater's next item when the tab is opened."""
    view = _layout(ctx)

    def ui(shown: Shown) -> tuple:  # -> view.outputs; the comment box is emptied
        shown_id, persona, context, answer, progress = shown
        return shown_id, persona, for_chatbot(context), answer, progress, ""

    def on_show(typed: str, request: gr.Request, profile: gr.OAuthProfile | None) -> tuple:
        try:
            name = rater_for(ctx, typed, profile, request)
        except gr.Error:  # not signed in / no name yet: a hint, not an error toast, when the tab opens
            return None, "", [], "", SIGN_IN_HINT if ctx.oauth else NO_RATER, gr.skip()
        return ui(show_next(ctx, name))

    def on_label(verdict: str):
        def handler(
            shown_id: int | None, note: str, typed: str, request: gr.Request, profile: gr.OAuthProfile | None
        ) -> tuple:
            return ui(save_label(ctx, shown_id, verdict, note, rater_for(ctx, typed, profile, request)))

        return handler

    def on_skip(shown_id: int | None, typed: str, request: gr.Request, profile: gr.OAuthProfile | None) -> tuple:
        return ui(save_skip(ctx, shown_id, rater_for(ctx, typed, profile, request)))

    def on_undo(typed: str, request: gr.Request, profile: gr.OAuthProfile | None) -> tuple:
        return ui(undo_label(ctx, rater_for(ctx, typed, profile, request)))

    events = dict(outputs=view.outputs, api_visibility="private", show_progress="minimal", **LABEL_QUEUE)
    rater.submit(on_show, rater, **events)
    view.buttons["good"].click(on_label("good"), [view.item_id, view.comment, rater], **events)
    view.buttons["bad"].click(on_label("bad"), [view.item_id, view.comment, rater], **events)
    view.buttons["skip"].click(on_skip, [view.item_id, rater], **events)
    view.buttons["undo"].click(on_undo, rater, **events)
    _add_api(ctx)
    return dict(fn=on_show, inputs=rater, **events)


def _add_api(ctx: AppContext) -> None:
    """Typed endpoints for scripts; the buttons above call the same functions."""

    def next_item(rater: str, request: gr.Request, profile: gr.OAuthProfile | None) -> Shown:
        """The rater's next item: (item_id, persona, context, answer, progress)."""
        return show_next(ctx, rater_for(ctx, rater, profile, request))

    def label(
        item_id: int,
        verdict: Literal["good", "bad"],
        comment: str,
        rater: str,
        request: gr.Request,
        profile: gr.OAuthProfile | None,
    ) -> Shown:
        """Save the rater's verdict on the item (on disk when this returns), then their next item."""
        return save_label(ctx, item_id, verdict, comment, rater_for(ctx, rater, profile, request))

    def skip(item_id: int, rater: str, request: gr.Request, profile: gr.OAuthProfile | None) -> Shown:
        """Skip the item (never shown to this rater again), then their next item."""
        return save_skip(ctx, item_id, rater_for(ctx, rater, profile, request))

    def undo(rater: str, request: gr.Request, profile: gr.OAuthProfile | None) -> Shown:
        """Delete the rater's latest label; its item is their next item again."""
        return undo_label(ctx, rater_for(ctx, rater, profile, request))

    gr.api(next_item, api_name="next_item", **LABEL_API)
    gr.api(label, api_name="label", **LABEL_API)
    gr.api(skip, api_name="skip", **LABEL_API)
    gr.api(undo, api_name="undo_label", **LABEL_API)
