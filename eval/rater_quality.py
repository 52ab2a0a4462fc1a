"""Which raters to trust: one row per rater from their gold items, repeats, overlap and times.

    from eval.rater_quality import rater_quality, left_out
    table = rater_quality(store)                # the Organise tab's rater table
    drop = left_out(table, min_gold_accuracy=0.7)   # raters below the threshold (by gold accuracy)

- gold accuracy: the share of the rater's labels on gold items (store.quality) that match the
  known verdict, with its 95 % Wilson interval.
- self-agreement: the share of repeats (an item shown to the rater again, later) where the
  second verdict matches the first, with its Wilson interval.
- kappa with others: Cohen's kappa between the rater's verdict and each other rater's verdict on
  the items they share (all such pairs pooled; chance from the pooled verdicts). None below
  `MIN_PAIRS` pairs or when one verdict is used throughout.
- labels per hour: timed labels over the hours spent labelling; a session ends where the rater
  was away more than `SESSION_GAP_S` between two labels, and the time away is not counted.
- median s per label: as eval.label_time (shown -> labelled, measured by the server; labels
  faster than its MIN_SECONDS were not made by a person and are left out).

A rater is left out (`left_out`) when their gold accuracy is below the threshold, judged only
on raters with at least `MIN_GOLD` gold labels (fewer say too little to drop anyone).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np
import pandas as pd

from eval.human import wilson_interval
from eval.label_time import MIN_SECONDS
from store.boundary import StoreAPI
from store.records import VERDICTS

MIN_GOLD = 5  # gold labels a rater needs before a threshold may leave them out
MIN_PAIRS = 5  # shared-item pairs before kappa is shown
SESSION_GAP_S = 15 * 60  # away longer than this between labels: a new session

COLUMNS = [
    "rater", "labels", "gold labels", "gold accuracy", "gold low", "gold high", "repeats", "self-agreement",
    "self low", "self high", "shared pairs", "kappa with others", "labels per hour", "median s per label",
]  # fmt: skip


def _share(hits: int, n: int) -> tuple[float | None, float | None, float | None]:
    if n == 0:
        return None, None, None
    low, high = wilson_interval(hits, n)
    return hits / n, low, high


def kappa_with_others(labels: Iterable) -> dict[str, tuple[float | None, int]]:
    """Rater -> (Cohen's kappa against everyone else on shared items, pairs)."""
    from sklearn.metrics import cohen_kappa_score

    by_item: dict[int, dict[str, str]] = defaultdict(dict)
    for row in labels:
        by_item[row.item_id][row.rater] = row.verdict
    pairs: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for verdicts in by_item.values():
        for rater, own in verdicts.items():
            pairs[rater] += [(own, other) for name, other in verdicts.items() if name != rater]
    out = {}
    for rater, shared in pairs.items():
        kappa = None
        if len(shared) >= MIN_PAIRS and len({v for pair in shared for v in pair}) == 2:
            own, others = zip(*shared, strict=True)
            kappa = float(cohen_kappa_score(own, others, labels=list(VERDICTS)))
        out[rater] = (kappa, len(shared))
    return out


def labels_per_hour(times: list) -> float | None:
    """Timed labels / hours labelling (sessions split where the rater was away > SESSION_GAP_S)."""
    times = sorted((t for t in times if t.seconds >= MIN_SECONDS), key=lambda t: t.labelled_at)
    if not times:
        return None
    seconds, start, last = 0.0, times[0].shown_at, times[0].labelled_at
    for t in times[1:]:
        if (t.labelled_at - last).total_seconds() - t.seconds > SESSION_GAP_S:  # away before this item was shown
            seconds += (last - start).total_seconds()
            start = t.shown_at
        last = t.labelled_at
    seconds += (last - start).total_seconds()
    return len(times) * 3600 / seconds if seconds > 0 else None


def rater_table(labels: Iterable, gold: dict[int, str], repeats: Iterable, times: Iterable) -> pd.DataFrame:
    """One row per rater (`COLUMNS`), most labels first. `labels`: Store.label_rows(); `gold`:
    Store.gold_items(); `repeats`: Store.repeat_rows(); `times`: Store.label_times()."""
    labels = list(labels)
    per_rater: dict[str, dict] = defaultdict(lambda: {"labels": 0, "gold": [], "repeats": [], "times": []})
    for row in labels:
        per_rater[row.rater]["labels"] += 1
        if row.item_id in gold:
            per_rater[row.rater]["gold"].append(row.verdict == gold[row.item_id])
    for r in repeats:
        per_rater[r.rater]["repeats"].append(r.first == r.again)
    for t in times:
        per_rater[t.rater]["times"].append(t)
    kappas = kappa_with_others(labels)
    rows = []
    for rater, found in per_rater.items():
        timed = [t.seconds for t in found["times"] if t.seconds >= MIN_SECONDS]
        kappa, pairs = kappas.get(rater, (None, 0))
        rows.append(
            [rater, found["labels"], len(found["gold"]), *_share(sum(found["gold"]), len(found["gold"])),
             len(found["repeats"]), *_share(sum(found["repeats"]), len(found["repeats"])), pairs, kappa,
             labels_per_hour(found["times"]), float(np.median(timed)) if timed else None]
        )  # fmt: skip
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table.sort_values(["labels", "rater"], ascending=[False, True], ignore_index=True)


def rater_quality(store: StoreAPI) -> pd.DataFrame:
    """`rater_table` from the store (four reads)."""
    return rater_table(store.label_rows(), store.gold_items(), store.repeat_rows(), store.label_times())


def left_out(table: pd.DataFrame, min_gold_accuracy: float | None) -> list[str]:
    """Raters whose gold accuracy is below `min_gold_accuracy` (None: nobody), among those with at
    least MIN_GOLD gold labels, sorted."""
    if min_gold_accuracy is None:
        return []
    judged = table[(table["gold labels"] >= MIN_GOLD) & table["gold accuracy"].notna()]
    return sorted(judged.loc[judged["gold accuracy"] < min_gold_accuracy, "rater"])


def raters_left_out(store: StoreAPI, rows: list, min_gold_accuracy: float | None) -> list[str]:
    """The raters of `rows` (Store.label_rows()) below `min_gold_accuracy` on their gold items."""
    if min_gold_accuracy is None:
        return []
    return left_out(rater_table(rows, store.gold_items(), store.repeat_rows(), store.label_times()), min_gold_accuracy)


def trusted_rows(store: StoreAPI, min_gold_accuracy: float | None) -> tuple[list, list[str]]:
    """(label rows of the raters kept, raters left out) for exports."""
    rows = store.label_rows()
    dropped = set(raters_left_out(store, rows, min_gold_accuracy))
    return [r for r in rows if r.rater not in dropped], sorted(dropped)
