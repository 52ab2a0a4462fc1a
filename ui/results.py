"""Results tab: one row per model version, human accuracy beside the automatic metrics, and
the scorecard of one version against its parent.

Human accuracy comes from the raters' labels (`eval.human`); the automatic metrics from the
summary of the version's latest evaluation run in the store. `/results` (gradio_client)
returns the table as a list of row dicts; `/scorecard` (version, parent or "") the scorecard
(`eval.scorecard`) as {child, parent, rows, flips, notes}.
"""

# No `from __future__ import annotations`: `gr.api` reads the endpoint types from the live
# annotations.

import os
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import gradio as gr
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from core.errors import PersonaStudioError
from core.versions import BASE
from eval.scorecard import Scorecard, default_parent, known_versions, scorecard, scorecard_markdown
from eval.table import (
    METRICS,
    METRICS_NOTE,
    NO_LABELS,
    NOT_RUN,
    VersionResult,
    collect,
    format_table,
    metric_keys,
    metric_value,
)
from ui.common import shows_errors, user_error
from ui.context import AppContext

# A version never evaluated: its metric cells say where to fill them (no terminal on a Space).
HOW_TO_RUN = f"{NOT_RUN}: Organise → Evaluate a version"
NO_CHILD = (
    "No trained version yet: the scorecard compares a trained version with its parent. Train one "
    "(`python -m training.train`), then open this tab again."
)
PICK_CHILD = "Pick a version to see its scorecard against its parent."

# Colours of a scorecard row: significant better / worse / higher-or-lower (no better way), else grey.
CHANGE_COLOURS = {"better": "tab:green", "worse": "tab:red", "higher": "tab:blue", "lower": "tab:blue"}


def results_figure(results: list[VersionResult]) -> Figure:
    """Human accuracy per version with 95 % Wilson error bars; one small panel per automatic
    metric that some version has."""
    keys = metric_keys(results)
    # Figure + Agg canvas rather than pyplot: no global state, safe in Gradio's worker threads.
    fig = Figure(figsize=(3 + 0.5 * len(results) + 2 * len(keys), 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(1, 1 + len(keys), width_ratios=[max(2, 0.6 * len(results))] + [1] * len(keys))
    _accuracy_panel(fig.add_subplot(grid[0]), results)
    names = [r.model_version for r in results]
    for i, key in enumerate(keys, start=1):
        ax = fig.add_subplot(grid[i])
        values = [metric_value(r.metrics, key) for r in results]
        ax.bar(range(len(names)), [v if v is not None else 0 for v in values], color="tab:gray")
        ax.set_title(METRICS[key] + (" (lower is better)" if key == "perplexity" else ""), fontsize=9)
        _version_ticks(ax, names)
        ax.tick_params(labelsize=8)
    return fig


def _accuracy_panel(ax, results: list[VersionResult]) -> None:
    ax.set_title("Human accuracy (95 % Wilson interval)", fontsize=10)
    if not results:
        ax.text(0.5, 0.5, "no model versions yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    for x, r in enumerate(results):
        if r.human is None:
            ax.text(x, 2, NO_LABELS, ha="center", va="bottom", rotation=90, fontsize=8, color="gray")
            continue
        acc, low, high = (r.human[k] * 100 for k in ("accuracy", "wilson_low", "wilson_high"))
        ax.bar(x, acc, color="tab:blue", yerr=[[acc - low], [high - acc]], capsize=4)
        ax.text(x, high + 1, f"n={r.human['labelled']}", ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, 110)
    ax.set_ylabel("labelled good (%)")
    _version_ticks(ax, [r.model_version for r in results])


def _version_ticks(ax, names: list[str]) -> None:
    # parse_math=False: a "$" in a version name is a character, not mathtext.
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8, parse_math=False)
    ax.set_xlim(-0.6, len(names) - 0.4)


def scorecard_figure(card: Scorecard) -> Figure:
    """A forest plot: each row's delta (child - parent) with its 95 % interval, one strip per
    row with its own scale (BLEU, perplexity and shares differ in units), 0 marked."""
    rows = card.rows
    fig = Figure(figsize=(7, 1.1 + 0.42 * max(len(rows), 1)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    title = f"{card.child} - {card.parent}, 95 % intervals"
    fig.suptitle(f"{title}\n(green: significantly better, red: worse, grey: no significant change)", fontsize=9)
    if not rows:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "nothing to compare yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    for ax, row in zip(fig.subplots(len(rows), 1, squeeze=False)[:, 0], rows, strict=True):
        low, high = row["ci_low"], row["ci_high"]
        colour = CHANGE_COLOURS.get(row["change"], "tab:gray") if row["significant"] else "tab:gray"
        xerr = [[row["delta"] - low], [high - row["delta"]]] if low is not None else None
        ax.errorbar([row["delta"]], [0], xerr=xerr, fmt="o", color=colour, capsize=3)
        ax.axvline(0, color="black", linewidth=0.6)
        reach = max(abs(v) for v in (row["delta"], low or 0, high or 0)) or 1.0
        ax.set_xlim(-1.15 * reach, 1.15 * reach)
        ax.set_yticks([0], [row["metric"]], fontsize=8, parse_math=False)
        ax.tick_params(axis="x", labelsize=7)
        ax.spines[["top", "right", "left"]].set_visible(False)
    return fig


def shown_table(results: list[VersionResult]) -> pd.DataFrame:
    """The Results table as the app shows it: a metric never run says how to run it here."""
    return format_table(results).replace(NOT_RUN, HOW_TO_RUN)


def write_csv(table: pd.DataFrame) -> str:
    """The table as a CSV file in the temp folder (Gradio serves it from there)."""
    folder = Path(tempfile.gettempdir()) / "persona-studio"
    folder.mkdir(exist_ok=True)
    path = folder / f"results-{datetime.now():%Y%m%d-%H%M%S}.csv"
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    table.to_csv(partial, index=False)
    partial.replace(path)  # whole or not at all, even if two refreshes share the second
    return str(path)


def build_scorecard_section(ctx: AppContext) -> tuple[list, Callable]:
    """The scorecard under the table: a version, the version it is compared with (its parent,
    overridable), the Markdown scorecard and its plot; `/scorecard` for scripts. Returns the
    widgets the tab refreshes (version, parent, Compare, the scorecard text) and
    `pickers(version, against, text)`, their updates when the tab is opened."""
    gr.Markdown("### Scorecard: a version against its parent")
    with gr.Row():
        child = gr.Dropdown(label="Version", choices=[], value=None, allow_custom_value=True)
        parent = gr.Dropdown(label="Compared with (its parent; pick another to override)", choices=[], value=None,
                             allow_custom_value=True)  # fmt: skip
        compare_button = gr.Button("Compare", scale=0, interactive=False)
    card_text = gr.Markdown(PICK_CHILD)
    card_plot = gr.Plot(label="Scorecard: deltas with 95 % intervals")
    runs_dir = ctx.pool.cfg.runs_dir

    def pickers(version: str | None, against: str | None, text: str | None = None) -> tuple:
        """Choices from the runs and the store; the newest trained version and its parent,
        unless one is picked already; Compare only once there is a version to compare, and a
        hint that says what to do when there is none."""
        names = known_versions(ctx.store, runs_dir)
        children = [n for n in names if n != BASE]
        if version not in children:
            version, against = (children[0] if children else None), None
        against = against or (default_parent(runs_dir, version) if version else None)
        hint = NO_CHILD if version is None else PICK_CHILD if text == NO_CHILD else gr.skip()  # a card stays
        return (gr.update(choices=children, value=version), gr.update(choices=names, value=against),
                gr.update(interactive=version is not None), hint)  # fmt: skip

    @shows_errors
    def show(version: str | None, against: str | None) -> tuple[str, Figure]:
        if not version:
            raise gr.Error("Pick a version to compare with its parent.")
        card = scorecard(ctx.store, version, against or None, runs_dir)
        return scorecard_markdown(card), scorecard_figure(card)

    @shows_errors
    def show_with_parent(version: str | None) -> tuple[str | None, str, Figure | None]:
        """A version picked: compare it with its parent."""
        against = default_parent(runs_dir, version) if version else None
        return (against, *show(version, against)) if version else (None, "", None)

    @shows_errors
    def scorecard_api(version: str, parent: str = "") -> dict:
        """The scorecard of `version` against `parent` (empty: its parent, else base): child,
        parent, rows (one per measurement: delta, ci_low, ci_high, p_value, significant, ...),
        flips (regression checks) and notes (what was matched or left out)."""
        card = scorecard(ctx.store, version, parent or None, runs_dir)
        return {"child": card.child, "parent": card.parent, "rows": card.rows, "flips": card.flips, "notes": card.notes}

    private = dict(api_visibility="private")
    child.input(show_with_parent, inputs=[child], outputs=[parent, card_text, card_plot], **private)
    child.change(lambda v: gr.update(interactive=bool(v)), child, compare_button, **private)
    for event in (parent.input, compare_button.click):
        event(show, inputs=[child, parent], outputs=[card_text, card_plot], **private)
    gr.api(scorecard_api, api_name="scorecard")
    return [child, parent, compare_button, card_text], pickers


def build_results_tab(ctx: AppContext) -> dict:
    """The Results tab's contents; call inside `with gr.Tab("Results")`. Returns the arguments
    for that tab's `.select(**...)`, which refreshes the table when the tab is opened."""
    gr.Markdown("Human accuracy per model version beside the automatic metrics of its latest evaluation run.")
    table = gr.Dataframe(label="Results", interactive=False, wrap=True, elem_id="results-table")
    gr.Markdown(METRICS_NOTE)
    plot = gr.Plot(label="Human accuracy and automatic metrics")
    with gr.Row():
        refresh_button = gr.Button("⟳ Refresh")
        download = gr.DownloadButton("Download CSV", value=None)
    scorecard_widgets, pickers = build_scorecard_section(ctx)
    child, parent = scorecard_widgets[:2]

    def current() -> list[VersionResult]:
        try:
            return collect(ctx.store, ctx.pool.versions(), ctx.min_gold_accuracy)
        except PersonaStudioError as err:
            raise user_error(err) from None

    @shows_errors
    def refresh(version: str | None, against: str | None, text: str | None) -> tuple:
        results = current()
        frame = shown_table(results)
        return frame, results_figure(results), write_csv(frame), *pickers(version, against, text)

    def results() -> list[dict]:
        """One dict per model version: human accuracy (%), its 95 % Wilson interval, labels,
        items, raters and the automatic metrics of the latest eval run."""
        return format_table(current()).to_dict("records")  # scripts get the plain "not run yet"

    events = dict(
        inputs=[child, parent, scorecard_widgets[3]],
        outputs=[table, plot, download, *scorecard_widgets],
        api_visibility="private",
    )
    refresh_button.click(refresh, **events)
    gr.api(results, api_name="results")
    return dict(fn=refresh, **events)
