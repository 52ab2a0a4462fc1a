"""The cross-version table: human accuracy beside the automatic metrics, one row per version.

    python -m eval.report                       # Markdown to stdout
    python -m eval.report --format csv --out results/   # also writes table.csv / table.json / report.md
    python -m eval.report --versions v2,v1      # scorecard of v2 against v1 (`--versions v2`: its parent)

Beside the table: rater agreement where items have 2+ raters, how well each automatic metric
separates answers labelled good from bad, and the general-skill retention deltas that
`python -m eval.retention` wrote. The app's Results tab shows the same table.

With --versions: the scorecard of one version against another (`eval.scorecard`): every metric,
human accuracy, A/B win rate, regression suite and retention as a delta with its 95 % interval,
significant changes marked; --out writes scorecard.csv / scorecard.json / scorecard.md.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.cli import entry_point
from core.versions import list_versions
from eval.table import METRICS_NOTE, results_table
from store import Store


class ReportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    runs_dir: str = Field("runs", description="Folder of trained versions (and their eval runs).")
    database_url: str | None = Field(None, description="Label store (default: DATABASE_URL or SQLite in data/).")
    format: Literal["md", "csv", "json"] = Field("md", description="What to print.")
    out: str | None = Field(
        None, description="Also write table.csv, table.json and report.md here (scorecard.* with --versions)."
    )
    versions: list[str] | None = Field(
        None, description="CHILD,PARENT (or CHILD: its parent, else base): print their scorecard instead."
    )
    n_resamples: int = Field(9999, ge=100, description="Bootstrap resamples of the scorecard's intervals.")
    seed: int = Field(0, description="Seed of the scorecard's bootstrap.")

    @field_validator("versions", mode="before")
    @classmethod
    def _comma_list(cls, value):
        """`--versions v2,v1` is short for `--versions [v2,v1]`; one or two names."""
        names = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
        if names is not None and not 1 <= len(names) <= 2:
            raise ValueError(f"give the child and optionally its parent (CHILD or CHILD,PARENT), not {names}")
        return names


def metric_vs_human_rows(store: Store) -> list[dict]:
    """For labelled eval items: each metric's AUC / point-biserial against good (1) / bad (0)."""
    from eval.agreement import metric_vs_human

    verdicts = {}
    for row in store.label_rows():
        if row.source == "eval":
            verdicts.setdefault(row.item_id, []).append(1 if row.verdict == "good" else 0)
    frames = []
    for run in store.eval_runs():
        rows_file = Path(run.path) / "rows.jsonl"
        if rows_file.is_file():
            frames.append(pd.read_json(rows_file, lines=True))
    if not frames or not verdicts:
        return []
    rows = pd.concat(frames, ignore_index=True)
    rows = rows[rows["item_id"].isin(verdicts)]
    # An item with several raters counts once, by majority (ties count as bad).
    labels = [int(sum(verdicts[i]) * 2 > len(verdicts[i])) for i in rows["item_id"]]
    numeric = [c for c in rows.columns if c not in ("item_id",) and pd.api.types.is_numeric_dtype(rows[c])]
    result = metric_vs_human({c: rows[c].astype(float).tolist() for c in numeric}, labels)
    return [{"metric": k, **(v or {"note": "not enough labelled items of both kinds"})} for k, v in result.items()]


def retention_rows(runs_dir: str) -> list[dict]:
    rows = []
    for path in sorted(Path(runs_dir).glob("*/retention/*.json")):
        data = json.loads(path.read_text())
        for row in data.get("rows", []):
            rows.append({"version": path.parent.parent.name, **row})
    return rows


def build_report(cfg: ReportConfig) -> tuple[pd.DataFrame, str]:
    from eval.agreement import agreement

    store = Store(cfg.database_url)
    try:
        versions = [v.name for v in list_versions(cfg.runs_dir)]
        table = results_table(store, versions)
        agree = agreement(store.label_rows())
        separation = metric_vs_human_rows(store)
    finally:
        store.close()
    parts = ["## Model versions", "", table.to_markdown(index=False), "", METRICS_NOTE, "", "## Rater agreement", ""]
    parts.append(f"{agree.get('overlap_items', 0)} items with 2+ raters" if agree else "no items with 2+ raters yet")
    for key in ("percent_agreement", "cohen_kappa", "fleiss_kappa"):
        if agree and agree.get(key) is not None:
            parts.append(f"- {key.replace('_', ' ')}: {agree[key]:.3f}")
    parts += ["", "## Which metric agrees with the raters", ""]
    parts.append(pd.DataFrame(separation).to_markdown(index=False) if separation else "no labelled eval items yet")
    retention = retention_rows(cfg.runs_dir)
    parts += ["", "## General-skill retention (version - base)", ""]
    parts.append(
        pd.DataFrame(retention).to_markdown(index=False) if retention else "not run yet (python -m eval.retention)"
    )
    return table, "\n".join(parts) + "\n"


def build_scorecard(cfg: ReportConfig) -> tuple[pd.DataFrame, str]:
    """(one row per measurement, raw numbers; the Markdown scorecard)."""
    from eval.scorecard import scorecard, scorecard_markdown

    child, parent = (*cfg.versions, None)[:2]
    with Store(cfg.database_url) as store:
        card = scorecard(store, child, parent, cfg.runs_dir, cfg.n_resamples, cfg.seed)
    rows = pd.DataFrame(card.rows).assign(child_version=card.child, parent_version=card.parent)
    return rows, scorecard_markdown(card)


@entry_point(ReportConfig, __doc__)
def main(cfg: ReportConfig) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    table, markdown = build_scorecard(cfg) if cfg.versions else build_report(cfg)
    name = "scorecard" if cfg.versions else "table"
    if cfg.out:
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / f"{name}.csv", index=False)
        table.to_json(out / f"{name}.json", orient="records", indent=2, force_ascii=False)
        (out / ("scorecard.md" if cfg.versions else "report.md")).write_text(markdown)
    if cfg.format == "csv":
        print(table.to_csv(index=False), end="")
    elif cfg.format == "json":
        print(table.to_json(orient="records", indent=2, force_ascii=False))
    else:
        print(markdown, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
