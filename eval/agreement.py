"""How far raters agree with each other, and how far automatic metrics agree with raters.

    rows = Store().label_rows()
    agreement(rows)                      # percent agreement, Cohen's and Fleiss' kappa, per version too
    metric_vs_human({"bleu": [...], "rouge_l": [...]}, verdicts=[1, 0, ...])  # AUC, point-biserial r

Only items labelled by two or more raters say anything about agreement. Kappa corrects raw
agreement for chance: raters who both say "good" 90 % of the time agree 82 % of the time by
luck alone, so 85 % agreement is little better than chance (kappa ~ 0.17).
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence

from store.records import VERDICTS, LabelRow

MIN_ITEMS = 5  # fewer items than this and an AUC or a correlation is noise


def fleiss_kappa(counts: Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa for a table of counts, shape (items, categories): counts[i][j] raters put
    item i in category j. Every item needs the same number m >= 2 of ratings. None when the
    raters used a single category throughout (chance agreement is 1, kappa is 0/0).

    Fleiss (1971), as in statsmodels.stats.inter_rater.fleiss_kappa(method="fleiss"):
    P_i = (sum_j n_ij^2 - m) / (m (m - 1)), p_j = sum_i n_ij / (N m),
    kappa = (mean P_i - sum_j p_j^2) / (1 - sum_j p_j^2).
    """
    if not counts:
        return None
    m = sum(counts[0])
    if m < 2 or any(sum(row) != m for row in counts):
        raise ValueError("fleiss_kappa needs the same number (>= 2) of ratings for every item")
    n_items = len(counts)
    p_observed = sum((sum(c * c for c in row) - m) / (m * (m - 1)) for row in counts) / n_items
    p_category = [sum(col) / (n_items * m) for col in zip(*counts, strict=True)]
    p_chance = sum(p * p for p in p_category)
    if math.isclose(p_chance, 1.0):
        return None
    return (p_observed - p_chance) / (1 - p_chance)


def _pair_agreement(verdicts: Sequence[str]) -> float:
    """Share of the item's rater pairs that gave the same verdict."""
    n = len(verdicts)
    same = sum(k * (k - 1) for k in Counter(verdicts).values())  # ordered pairs that agree
    return same / (n * (n - 1))


def _cohen_kappa(by_item: dict, raters: list[str]) -> float | None:
    """Cohen's kappa of the two raters over the items both labelled; None when undefined."""
    from sklearn.metrics import cohen_kappa_score

    a, b = raters
    pairs = [(labels[a], labels[b]) for labels in by_item.values() if a in labels and b in labels]
    if not pairs or len({v for pair in pairs for v in pair}) < 2:
        return None  # one verdict throughout: chance agreement is 1, kappa is 0/0
    first, second = zip(*pairs, strict=True)
    return float(cohen_kappa_score(first, second, labels=list(VERDICTS)))


def _fleiss_subset(by_item: dict) -> tuple[float | None, int, int]:
    """(kappa, items, ratings per item) over the largest set of items with equally many ratings."""
    sizes = Counter(len(labels) for labels in by_item.values())
    if not sizes:
        return None, 0, 0
    m = max(sizes, key=lambda size: (sizes[size], size))  # most items; ties -> more ratings each
    table = [[list(labels.values()).count(v) for v in VERDICTS] for labels in by_item.values() if len(labels) == m]
    return fleiss_kappa(table), len(table), m


def _agreement_stats(rows: Iterable[LabelRow]) -> dict:
    labels: dict[int, dict[str, str]] = {}  # item_id -> rater -> verdict
    for row in rows:
        labels.setdefault(row.item_id, {})[row.rater] = row.verdict
    overlap = {item: by_rater for item, by_rater in labels.items() if len(by_rater) >= 2}
    raters = sorted({rater for by_rater in overlap.values() for rater in by_rater})
    fleiss, fleiss_items, per_item = _fleiss_subset(overlap)
    return {
        "items": len(labels),
        "overlap_items": len(overlap),
        "raters": raters,
        "percent_agreement": (
            sum(_pair_agreement(list(v.values())) for v in overlap.values()) / len(overlap) if overlap else None
        ),
        "cohen_kappa": _cohen_kappa(overlap, raters) if len(raters) == 2 else None,
        "fleiss_kappa": fleiss,
        "fleiss_items": fleiss_items,  # the subset Fleiss' kappa is computed on ...
        "fleiss_ratings_per_item": per_item,  # ... all with this many ratings
    }


def agreement(rows: Iterable[LabelRow]) -> dict:
    """Inter-rater agreement over the items labelled by 2+ raters, overall and per model version.

    percent_agreement: mean over items of the share of rater pairs that agree.
    cohen_kappa: only when exactly two raters share items (else None).
    fleiss_kappa: on the items that share the most common number (>= 2) of ratings; which
    subset is in fleiss_items / fleiss_ratings_per_item. Undefined values are None.
    """
    rows = list(rows)
    by_version: dict[str, list[LabelRow]] = {}
    for row in rows:
        by_version.setdefault(row.model_version, []).append(row)
    return {**_agreement_stats(rows), "by_version": {v: _agreement_stats(r) for v, r in sorted(by_version.items())}}


def _metric_vs_verdicts(values: Sequence[float | None], verdicts: Sequence[int]) -> dict:
    from scipy.stats import pointbiserialr
    from sklearn.metrics import roc_auc_score

    pairs = [(v, y) for v, y in zip(values, verdicts, strict=True) if v is not None and not math.isnan(v)]
    n_good = sum(y for _, y in pairs)
    out = {"n": len(pairs), "n_good": n_good, "auc": None, "point_biserial": None, "p_value": None, "reason": None}
    if len(pairs) < MIN_ITEMS:
        return out | {"reason": f"only {len(pairs)} scored items (need {MIN_ITEMS})"}
    if n_good in (0, len(pairs)):
        return out | {"reason": f"all {len(pairs)} items are {'good' if n_good else 'bad'}: nothing to separate"}
    x, y = zip(*pairs, strict=True)
    out["auc"] = float(roc_auc_score(y, x))
    if len(set(x)) == 1:
        return out | {"reason": "the metric is constant: no correlation"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on near-constant input; the numbers are still right
        r, p = pointbiserialr(y, x)
    return out | {"point_biserial": float(r), "p_value": float(p)}


def metric_vs_human(per_item: dict[str, Sequence[float | None]], verdicts: Sequence[int]) -> dict[str, dict]:
    """How well each automatic metric tracks the human verdict (1 good, 0 bad), item by item.

    per_item[metric][i] is the metric on the item whose verdict is verdicts[i] (None/NaN: not
    scored, left out). Per metric: n, n_good, auc (the chance a random good item scores higher
    than a random bad one; 0.5 = no signal, below 0.5 = the metric runs the wrong way),
    point_biserial (Pearson r between metric and verdict) with its p_value, and reason when
    they are None (one class only, fewer than MIN_ITEMS items, a constant metric).
    """
    if any(y not in (0, 1) for y in verdicts):
        raise ValueError("verdicts must be 1 (good) or 0 (bad)")
    for name, values in per_item.items():
        if len(values) != len(verdicts):
            raise ValueError(f"metric {name!r} has {len(values)} values for {len(verdicts)} verdicts")
    return {name: _metric_vs_verdicts(values, verdicts) for name, values in per_item.items()}
