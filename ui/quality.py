"""Organise's rater-quality section: which raters to trust (gold accuracy, self-agreement on
repeats, agreement with the others, labels per hour, seconds per label; eval/rater_quality.py),
gold items an organiser marks, and the queue's order refreshed (eval/label_next.py)."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from core.errors import MessageError
from eval.label_next import refresh_queue
from eval.rater_quality import left_out, rater_quality
from ui.common import shows_errors
from ui.context import AppContext


def parse_ids(text: str) -> list[int]:
    """ "12, 40 41" -> [12, 40, 41]; anything else is refused with the fix."""
    parts = (text or "").replace(",", " ").split()
    if not parts or not all(p.isdigit() for p in parts):
        raise MessageError(f"item ids must be whole numbers (got {text!r})", "type ids like 12, 40, 41")
    return [int(p) for p in parts]


def quality_view(ctx: AppContext) -> tuple[pd.DataFrame, str]:
    """(the rater table, a line on who Results leaves out and how the queue is ordered now)."""
    table = rater_quality(ctx.store)
    still_open, moved = refresh_queue(ctx.store, ctx.pool.cfg.runs_dir)
    note = f"Versions whose verdict is still open (labelled first): {', '.join(still_open) or 'none'}"
    if ctx.min_gold_accuracy is not None:
        dropped = left_out(table, ctx.min_gold_accuracy)
        note += f" · Results leave out {len(dropped)} rater(s) below {ctx.min_gold_accuracy:.0%} on gold items" + (
            f": {', '.join(dropped)}" if dropped else ""
        )
    return table, note


def build_quality_section(ctx: AppContext, refresh: gr.Button) -> dict:
    """The section's widgets and events; returns the event to run when the tab is opened."""
    gr.Markdown(
        "### Raters\nGold items (a known verdict) and repeats are mixed into each rater's queue, unmarked "
        f"(`--label_gold_share` {ctx.label_mix.gold_share if ctx.label_mix else 0}, `--label_repeat_share` "
        f"{ctx.label_mix.repeat_share if ctx.label_mix else 0}). Seconds per label: shown → saved, server clock."
    )
    table = gr.Dataframe(label="Rater quality", interactive=False, elem_id="organise-quality")
    note = gr.Markdown()
    with gr.Row():
        ids = gr.Textbox(label="Item ids to mark gold", placeholder="12, 40, 41", scale=3)
        verdict = gr.Radio(["good", "bad", "not gold"], value="good", label="Known verdict", scale=2)
        mark = gr.Button("Mark", scale=1, min_width=80)

    @shows_errors
    def shown():
        return quality_view(ctx)

    @shows_errors
    def marked(text: str, choice: str):
        item_ids = parse_ids(text)
        found = ctx.store.set_gold(item_ids, None if choice == "not gold" else choice)
        gr.Info(f"{found} of {len(item_ids)} item(s) marked {choice}")
        return quality_view(ctx)

    refresh.click(shown, None, [table, note], api_name=False)
    mark.click(marked, [ids, verdict], [table, note], api_name="mark_gold")
    return dict(fn=shown, inputs=None, outputs=[table, note])
