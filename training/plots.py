"""Training curves on disk: the raw `trainer.state.log_history`, a per-step CSV and a loss plot.

transformers logs training and validation as separate dicts that share a `step`
(`{"loss", "grad_norm", "learning_rate", "epoch", "step"}`, `{"eval_loss", "eval_runtime", ...,
"step"}`) and ends with one summary dict (`train_runtime`, `train_loss`, ...). The CSV merges
the dicts of one step into one row and leaves the summary out (it stays in `log.json`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

CSV_COLUMNS = ["step", "epoch", "loss", "eval_loss", "learning_rate", "grad_norm"]


def log_table(log_history: list[dict]) -> pd.DataFrame:
    """One row per logged step with the columns of `CSV_COLUMNS` that the history has."""
    steps = [entry for entry in log_history if "step" in entry and "train_runtime" not in entry]
    columns = [c for c in CSV_COLUMNS if any(c in entry for entry in steps)]
    if not steps:
        return pd.DataFrame(columns=CSV_COLUMNS[:1])
    table = pd.DataFrame(steps, columns=columns)
    # groupby().first() takes the first non-null value per column: train + eval dicts -> one row.
    return table.groupby("step", as_index=False, sort=True).first()


def save_training_log(log_history: list[dict], run_dir: Path) -> None:
    """Write `log.json` (the history as logged) and `log.csv` (one row per step) into `run_dir`."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "log.json").write_text(json.dumps(log_history, indent=1))
    log_table(log_history).to_csv(run_dir / "log.csv", index=False)


def save_loss_plot(log_history: list[dict], path: Path, title: str = "") -> Path:
    """Training and validation loss against the optimizer step, as a PNG at `path`."""
    table = log_table(log_history)
    # Figure + Agg canvas rather than pyplot: no global state, safe from a training thread.
    fig = Figure(figsize=(7, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    curves = [("loss", "training loss", "-", "tab:blue"), ("eval_loss", "validation loss", "--", "tab:orange")]
    drawn = 0
    for column, label, style, color in curves:
        if column not in table:
            continue
        points = table[["step", column]].dropna()
        if not points.empty:
            ax.plot(points["step"], points[column], style, color=color, marker="o", markersize=3, label=label)
            drawn += 1
    ax.set_title(title or "Loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (cross-entropy per token)")
    if drawn:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
        ax.grid(alpha=0.3)
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no steps logged", ha="center", va="center", fontsize=14, transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
