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

import functools
import html
from collections.abc import Callable
from typing import Literal

import gradio as gr

from core.conversation import dialogue
from eval.blind import mask_identity, mask_messages
from store import BlindItem, Item, Progress, StoreError
from ui.common import for_chatbot
from ui.context import AppContext
from ui.label_view import (  # noqa: F401  (BUTTON_IDS, KEYS_HINT, LABEL_SHORTCUTS_JS: app.py and tests use them from here)
    BUTTON_IDS,
    KEYS_HINT,
    LABEL_SHORTCUTS_JS,
    NO_RATER,
    LabelView,
    layout,
    undone_note,
)
from ui.raters import SIGN_IN_HINT, rater_for

Shown = tuple[int | None, str, list[dict], str, str]  # item_id, persona, context, answer, progress

EMPTY_QUEUE = (
    "Nothing left to label. New answers come from the **Organise** tab (Queue answers), from evaluation "
    "runs and from 👍/👎 in Chat."
)
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
        return _shown(*ctx.store.next_item(rater, ctx.label_overlap, mix=ctx.label_mix))
    except StoreError as err:
        raise _store_error("Could not load the next item", err) from None


def _shown(item: Item | None, progress: Progress) -> Shown:
    """The rater's next item (None: nothing left) as the tab shows it, with their progress."""
    counts = f"{progress.done} of {progress.total} labelled"
    if item is None:
        return None, "", [], "", f"{EMPTY_QUEUE} ({counts})"
    blind: BlindItem = item.blind()  # what a rater may see: no model version, no source
    names = [item.model_version]  # nor a reply saying which version wrote it (eval/blind.py)
    context, answer = mask_messages(dialogue(blind.context), names), mask_identity(blind.answer, names)
    return blind.id, persona_text(blind.persona), context, answer, counts


def save_label(ctx: AppContext, item_id: int | None, verdict: str, comment: str, rater: str) -> Shown:
    if item_id is None:
        raise gr.Error("There is no answer on screen to label.")
    try:  # the label, the next item and the progress in one write
        done = ctx.store.label(int(item_id), rater, verdict, (comment or "").strip(), and_next=True,
                               overlap=ctx.label_overlap, mix=ctx.label_mix)  # fmt: skip
    except StoreError as err:
        raise _store_error("Your label was NOT saved", err) from None
    if done.next is None:  # no next item could be assigned (`done.next_error`): ask again, on its own
        return _after("Your label was saved", lambda: show_next(ctx, rater))
    return _after("Your label was saved", lambda: _shown(*done.next))


def save_skip(ctx: AppContext, item_id: int | None, rater: str) -> Shown:
    if item_id is None:
        raise gr.Error("There is no answer on screen to skip.")
    try:
        ctx.store.skip(int(item_id), rater)
    except StoreError as err:
        raise _store_error("The skip was NOT saved", err) from None
    return _after("The skip was saved", lambda: show_next(ctx, rater))


def undo_label(ctx: AppContext, rater: str) -> tuple[int | None, Shown]:
    """(the item whose label was deleted, None if the rater had none; the rater's next item,
    which is that item again)."""
    try:
        undone = ctx.store.undo_last_label(rater)
    except StoreError as err:
        raise _store_error("Your last label was NOT undone", err) from None
    return undone, _after("Done", lambda: show_next(ctx, rater))


def _after(done: str, shown: Callable[[], Shown]) -> Shown:
    """What `shown` gives once a write succeeded; a failure there must not read as a lost write."""
    try:
        return shown()
    except gr.Error as err:
        raise gr.Error(f"{done}, but {err.message[0].lower()}{err.message[1:]}", duration=None) from None


def build_label_tab(ctx: AppContext, rater: gr.Textbox) -> dict:
    """The Label tab's contents; call inside `with gr.Tab("Label")`. Returns the arguments for
    that tab's `.select(**...)`, which loads the rater's next item when the tab is opened."""
    view = layout(ctx)

    def ui(shown: Shown, name: str | None, note: str = "", comment: str = "") -> tuple:  # -> view.outputs
        shown_id, persona, context, answer, progress = shown
        title = persona.splitlines()[0] if persona else ""
        on = gr.Button(interactive=shown_id is not None)
        box = gr.Accordion(label=f"Persona: {title}" if title else "Persona")
        return shown_id, name, box, persona, for_chatbot(context), answer, note + progress, comment, on, on, on

    def who(typed: str, request: gr.Request, profile: gr.OAuthProfile | None) -> str:
        return rater_for(ctx, typed, profile, request)

    def on_show(typed: str, was: str | None, request: gr.Request, profile: gr.OAuthProfile | None) -> tuple:
        try:
            name = who(typed, request, profile)
        except gr.Error:  # not signed in / no name yet: a hint, not an error toast, when the tab opens
            hint = SIGN_IN_HINT if ctx.oauth else NO_RATER
            return ui((None, "", [], "", hint), None)
        return ui(show_next(ctx, name), name)

    def renamed(typed: str, was: str | None, request: gr.Request, profile: gr.OAuthProfile | None):
        """The rater box left with another name: that rater's own item and progress. Only once
        the tab has shown an item: a name typed for the chat's thumbs must not hold an item."""
        if was is None or (typed or "").strip() == was:
            return (gr.skip(),) * len(view.outputs)
        return on_show(typed, was, request, profile)

    def changed_rater(name: str, was: str | None) -> tuple | None:
        """A verdict given after the name changed would go under the new name for an item
        shown to the old one: nothing is saved, the new rater's own item comes instead."""
        if was is None or name == was:
            return None
        note = f"Rater is now **{html.escape(name, quote=False)}**; nothing was saved. Here is their next item. "
        return ui(show_next(ctx, name), name, note)

    def on_label(verdict: str):
        def handler(shown_id, note, mine, typed, was, request: gr.Request, profile: gr.OAuthProfile | None):
            name = who(typed, request, profile)
            if (switched := changed_rater(name, was)) is not None:
                return *switched, mine
            shown = save_label(ctx, shown_id, verdict, note, name)
            return *ui(shown, name), mine | {shown_id: (verdict, (note or "").strip())}

        return handler

    def on_skip(shown_id, typed, was, request: gr.Request, profile: gr.OAuthProfile | None) -> tuple:
        name = who(typed, request, profile)
        return changed_rater(name, was) or ui(save_skip(ctx, shown_id, name), name)

    def on_undo(mine: dict, typed: str, request: gr.Request, profile: gr.OAuthProfile | None) -> tuple:
        name = who(typed, request, profile)
        undone, shown = undo_label(ctx, name)
        if undone is None:
            return *ui(shown, name, "You have no labels to undo. "), mine
        earlier = mine.get(undone)
        comment = earlier[1] if earlier and shown[0] == undone else ""
        rest = {key: value for key, value in mine.items() if key != undone}
        return *ui(shown, name, undone_note(earlier), comment), rest

    def beside(handler, outputs: list):
        """Errors in the progress line, above the item, which stays on screen. Needed as well as
        wanted: Gradio 6.31's page shows no toast for an error of an event that does not queue."""

        @functools.wraps(handler)  # the signature too: Gradio injects gr.Request and the profile
        def run(*args, **kwargs):
            try:
                return handler(*args, **kwargs)
            except gr.Error as err:
                shown = [gr.skip()] * len(outputs)
                shown[outputs.index(view.progress)] = f"⚠️ **{html.escape(err.message, quote=False)}**"
                return tuple(shown)

        return run

    # queue=False: one POST per click, answered in the response, no queue join nor event stream
    # (Gradio takes events that do not queue on /run even where its API routes are closed, as on
    # Spaces). A label is one short store call; it never waits behind a generation.
    common = dict(api_visibility="private", show_progress="minimal", **LABEL_API)
    shown, with_mine = view.outputs, [*view.outputs, view.mine]
    rater.submit(beside(on_show, shown), [rater, view.shown_for], shown, **common)
    rater.blur(beside(renamed, shown), [rater, view.shown_for], shown, **common)
    verdict_inputs = [view.item_id, view.comment, view.mine, rater, view.shown_for]
    view.buttons["good"].click(beside(on_label("good"), with_mine), verdict_inputs, with_mine, **common)
    view.buttons["bad"].click(beside(on_label("bad"), with_mine), verdict_inputs, with_mine, **common)
    view.buttons["skip"].click(beside(on_skip, shown), [view.item_id, rater, view.shown_for], shown, **common)
    view.buttons["undo"].click(beside(on_undo, with_mine), [view.mine, rater], with_mine, **common)
    _add_api(ctx)
    return dict(fn=beside(on_show, shown), inputs=[rater, view.shown_for], outputs=shown, **common)


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
        return undo_label(ctx, rater_for(ctx, rater, profile, request))[1]

    gr.api(next_item, api_name="next_item", **LABEL_API)
    gr.api(label, api_name="label", **LABEL_API)
    gr.api(skip, api_name="skip", **LABEL_API)
    gr.api(undo, api_name="undo_label", **LABEL_API)
