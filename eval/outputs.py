"""Files of one evaluation run: per-item rows, the summary, a Markdown table and bar plots."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pydantic import BaseModel

from eval.table import METRICS

# Summary keys shown in the run's table, in order, with what they mean.
TABLE_ROWS = {
    "bleu": "BLEU (sacrebleu, corpus)",
    "bleu_sentence_mean": "BLEU (mean sentence)",
    "rouge1": "ROUGE-1 F1",
    "rouge2": "ROUGE-2 F1",
    "rougeL": "ROUGE-L F1",
    "f1": "unigram F1 (ConvAI2: lower-case, no punctuation or articles)",
    "hits_at_1": "Hits@1/20, own candidates (the reference ranked first by the version's likelihood)",
    "bertscore_p": "BERTScore P (MiniLM-L6, layer 6, raw)",
    "bertscore_r": "BERTScore R",
    "bertscore_f1": "BERTScore F1",
    "perplexity": "perplexity of the reference reply (lower is better)",
    "distinct_1": "distinct-1",
    "distinct_2": "distinct-2",
    "avg_length": "average reply length (words)",
    "persona_consistency": "replies closer to own persona than to another",
    "persona_margin_mean": "mean similarity margin own - other",
    "swap_retention": "swap probe: replies still reflecting the old persona (lower is better)",
}


def markdown_table(summary: dict) -> str:
    lines = [f"### {summary.get('model_version', '?')}: {summary.get('items', 0)} turns ({summary.get('split', '')})",
             "", "| metric | value |", "|---|---|"]  # fmt: skip
    for key, label in TABLE_ROWS.items():
        if isinstance(summary.get(key), int | float):
            lines.append(f"| {label} | {summary[key]:.4g} |")
    decoding = summary.get("decoding", {})
    lines += ["", "decoding: " + ", ".join(f"{k}={v}" for k, v in decoding.items())]
    return "\n".join(lines) + "\n"


def metric_bars(summary: dict, path: Path) -> Path:
    """Bars of the bounded metrics (0..1 or 0..100) and, apart, perplexity."""
    keys = [k for k in METRICS if isinstance(summary.get(k), int | float) and k != "perplexity"]
    fig = Figure(figsize=(2 + 0.9 * len(keys), 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    values = [summary[k] / 100 if k == "bleu" else summary[k] for k in keys]  # BLEU is 0..100
    bars = ax.bar([METRICS[k] for k in keys], values, color="tab:blue")
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_ylabel("score (BLEU / 100)")
    title = f"{summary.get('model_version', '')}: {summary.get('items', 0)} turns"
    if isinstance(summary.get("perplexity"), int | float):
        title += f" · perplexity {summary['perplexity']:.2f}"
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", rotation=30, labelsize=8)
    fig.savefig(path)
    return path


def write_outputs(out: Path, rows: pd.DataFrame, summary: dict, cfg: BaseModel) -> None:
    """Everything of one run in `out`: the resolved config, rows (CSV, JSONL), the summary,
    the Markdown table and the bar plot."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    rows.to_csv(out / "rows.csv", index=False)
    rows.to_json(out / "rows.jsonl", orient="records", lines=True, force_ascii=False)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (out / "table.md").write_text(markdown_table(summary))
    metric_bars(summary, out / "metrics.png")
