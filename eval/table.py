"""The cross-version table: one row per model version, human accuracy beside the automatic
metrics of its latest evaluation run. The app's Results tab and `python -m eval.report`
show this same table."""

from dataclasses import dataclass
from numbers import Real

import pandas as pd

from eval.human import BASE, human_accuracy
from eval.leaderboard import leaderboard
from eval.rater_quality import raters_left_out
from store import Store

# Summary key written by the evaluation -> column name.
METRICS = {
    "bleu": "BLEU",
    "rouge1": "ROUGE-1",
    "rouge2": "ROUGE-2",
    "rougeL": "ROUGE-L",
    "f1": "F1 (unigram)",
    "hits_at_1": "Hits@1/20 (own candidates)",
    "bertscore_f1": "BERTScore F1",
    "perplexity": "perplexity",
    "persona_consistency": "persona consistency",
    "identity_accuracy": "identity accuracy",
    "swap_retention": "swap retention",
    "distinct_2": "distinct-2",
    "avg_length": "avg words",
}
NO_LABELS = "no labels yet"
NO_VOTES = "no votes yet"
AB_COLUMNS = ["A/B rank", "A/B strength", "A/B 95 % interval", "A/B votes"]
NOT_RUN = "not run yet"
MISSING = "—"  # the run did not compute this metric
METRICS_NOTE = (
    "Human accuracy: share of answers labelled good, with the 95 % Wilson interval. Perplexity is of the "
    "reference reply under each version (lower is better); BERTScore F1 uses all-MiniLM-L6-v2, raw (not rescaled). "
    "Identity accuracy: share of a persona's held-out questions answered with its identity facts (eval.identity). "
    "A/B strength: Bradley-Terry strength from the blind Compare votes on the Elo scale (400 = 10:1 odds), with "
    "its 95 % bootstrap interval; versions whose intervals overlap share an A/B rank (python -m eval.leaderboard)."
)


@dataclass(frozen=True)
class VersionResult:
    model_version: str
    human: dict | None  # an `eval.human.human_accuracy` row; None: no labels
    metrics: dict | None  # summary of the latest eval run; None: never evaluated
    arena: dict | None = None  # its `eval.leaderboard` row (A/B votes); None: no votes


def collect(store: Store, versions: list[str], min_gold_accuracy: float | None = None) -> list[VersionResult]:
    """`versions` (e.g. the pool's) plus every version with labels or eval runs, `base` first; raters
    below `min_gold_accuracy` on their gold items are left out of human accuracy (and counted)."""
    rows = store.label_rows()  # all of them: human_accuracy counts the labels it leaves out
    dropped = raters_left_out(store, rows, min_gold_accuracy)
    human = {row["model_version"]: row for row in human_accuracy(rows, leave_out=dropped)}
    latest, identity = {}, {}
    for run in store.eval_runs():  # oldest first: the last one wins
        # An eval.identity run adds its one number; it must not hide the eval.run metrics.
        if "identity_accuracy" in run.summary:
            identity[run.model_version] = {"identity_accuracy": run.summary["identity_accuracy"]}
        else:
            latest[run.model_version] = run.summary
    for name, value in identity.items():
        latest[name] = latest.get(name, {}) | value
    arena = {row["model version"]: row for row in leaderboard(store.preferences()).table.to_dict("records")}
    names = list(dict.fromkeys([*versions, *sorted(set(human) | set(latest) | set(arena))]))  # first place wins
    names.sort(key=lambda name: name != BASE)  # stable: the rest keep their order
    return [VersionResult(name, human.get(name), latest.get(name), arena.get(name)) for name in names]


def metric_value(metrics: dict | None, key: str) -> float | None:
    value = (metrics or {}).get(key)
    return float(value) if isinstance(value, Real) and not isinstance(value, bool) else None


def metric_keys(results: list[VersionResult]) -> list[str]:
    return [key for key in METRICS if any(metric_value(r.metrics, key) is not None for r in results)]


def format_table(results: list[VersionResult]) -> pd.DataFrame:
    keys = metric_keys(results)
    voted = any(r.arena for r in results)  # the A/B columns appear with the first vote
    dropped = any((r.human or {}).get("raters_left_out") for r in results)  # below the gold threshold
    rows = []
    for r in results:
        row = {"model version": r.model_version}
        if r.human:
            low, high = r.human["wilson_low"] * 100, r.human["wilson_high"] * 100
            row["human accuracy (%)"] = round(r.human["accuracy"] * 100, 1)
            row["95 % interval (%)"] = f"{low:.1f}–{high:.1f}"
        else:
            row["human accuracy (%)"], row["95 % interval (%)"] = NO_LABELS, ""
        counts = r.human or {}
        row |= {"labels": counts.get("labelled", 0), "items": counts.get("items", 0), "raters": counts.get("raters", 0)}
        if dropped:
            row["raters left out"] = counts.get("raters_left_out", 0)
        if voted:
            row |= ab_columns(r.arena)
        if not keys:  # nothing measured anywhere: one column says so
            row["automatic metrics"] = NOT_RUN if r.metrics is None else MISSING
        for key in keys:
            value = metric_value(r.metrics, key)
            row[METRICS[key]] = NOT_RUN if r.metrics is None else MISSING if value is None else round(value, 3)
        rows.append(row)
    columns = ["model version", "human accuracy (%)", "95 % interval (%)", "labels", "items", "raters"]
    columns += ["raters left out"] if dropped else []
    columns += AB_COLUMNS if voted else []
    return pd.DataFrame(rows, columns=columns + ([METRICS[k] for k in keys] or ["automatic metrics"]))


def ab_columns(arena: dict | None) -> dict:
    """The leaderboard's figures of one version as Results columns."""
    if arena is None:
        return dict(zip(AB_COLUMNS, ["", NO_VOTES, "", 0], strict=True))
    interval = f"{arena['95 % low']:.0f}–{arena['95 % high']:.0f}"
    return dict(
        zip(AB_COLUMNS, [int(arena["rank"]), round(arena["strength"]), interval, int(arena["votes"])], strict=True)
    )


def results_table(store: Store, versions: list[str], min_gold_accuracy: float | None = None) -> pd.DataFrame:
    """One row per model version: human accuracy, its Wilson interval, counts, the metrics."""
    return format_table(collect(store, versions, min_gold_accuracy))
