"""Results tab: one row per model version, human accuracy beside the automatic metrics.

Human accuracy comes from the raters' labels (`eval.human`); the automatic metrics from the
summary of the version's latest evaluation run in the store. `/results` (gradio_client)
returns the table as a list of row dicts.
"""

# No `from __future__ import annotations`: `gr.api` reads the endpoint types from the live
# annotations.

import os
import tempfile
from datetime import datetime
from pathlib import Path

import gradio as gr
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from eval.table import METRICS, METRICS_NOTE, NO_LABELS, VersionResult, collect, format_table, metric_keys, metric_value
from store import StoreError
from ui.common import user_error
from ui.context import AppContext


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


def write_csv(table: pd.DataFrame) -> str:
    """The table as a CSV file in the temp folder (Gradio serves it from there)."""
    folder = Path(tempfile.gettempdir()) / "persona-studio"
    folder.mkdir(exist_ok=True)
    path = folder / f"results-{datetime.now():%Y%m%d-%H%M%S}.csv"
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    table.to_csv(partial, index=False)
    partial.replace(path)  # whole or not at all, even if two refreshes share the second
    return str(path)


def build_results_tab(ctx: AppContext) -> dict:
    """The Results tab's contents; call inside `with gr.Tab("Results")`. Returns the arguments
    for that tab's `.select(**...)`, which refreshes the table when the tab is opened."""
    gr.Markdown("Human accuracy per model version beside the automatic metrics of its latest evaluation run.")
    table = gr.Dataframe(label="Results", interactive=False, wrap=True)
    gr.Markdown(METRICS_NOTE)
    plot = gr.Plot(label="Human accuracy and automatic metrics")
    with gr.Row():
        refresh_button = gr.Button("⟳ Refresh")
        download = gr.DownloadButton("Download CSV", value=None)

    def current() -> list[VersionResult]:
        try:
            return collect(ctx.store, ctx.pool.versions())
        except StoreError as err:
            raise user_error(err) from None

    def refresh() -> tuple[pd.DataFrame, Figure, str]:
        results = current()
        frame = format_table(results)
        return frame, results_figure(results), write_csv(frame)

    def results() -> list[dict]:
        """One dict per model version: human accuracy (%), its 95 % Wilson interval, labels,
        items, raters and the automatic metrics of the latest eval run."""
        return format_table(current()).to_dict("records")

    events = dict(outputs=[table, plot, download], api_visibility="private")
    refresh_button.click(refresh, **events)
    gr.api(results, api_name="results")
    return dict(fn=refresh, inputs=None, **events)
