"""How far a labelling session has come: items left, labels per rater, agreement so far.

    session_progress(Store(), overlap=2)
    # {"overlap": 2, "items": [{"source", "model_version", "items", "labels", "complete", "left"}],
    #  "raters": [{"rater", "labels", "good", "left"}], "agreement": {...}}

An item is complete once `overlap` raters labelled it (the app's --label_overlap); `left` is
the items that still wait for a label. Agreement is `eval.agreement.agreement` over every
label so far (only items labelled by two or more raters count).
"""

from __future__ import annotations

from collections import Counter

from eval.agreement import agreement
from store import Store


def rater_counts(store: Store, rows, overlap: int) -> list[dict]:
    """Per rater: labels, how many good, items still open to them; most labels first."""
    given, good = Counter(r.rater for r in rows), Counter(r.rater for r in rows if r.verdict == "good")
    progress = store.rater_progress(overlap)
    return [
        {"rater": rater, "labels": count, "good": good[rater], "left": progress[rater].total - progress[rater].done}
        for rater, count in given.most_common()
    ]


def agreement_summary(stats: dict) -> dict:
    keys = ("overlap_items", "raters", "percent_agreement", "cohen_kappa", "fleiss_kappa", "fleiss_items")
    return {key: stats[key] for key in keys}


def session_progress(store: Store, overlap: int = 1) -> dict:
    rows = store.label_rows()
    stats = agreement(rows)
    return {
        "overlap": overlap,
        "items": store.item_counts(overlap),
        "raters": rater_counts(store, rows, overlap),
        "agreement": agreement_summary(stats)
        | {"by_version": {v: agreement_summary(s) for v, s in stats["by_version"].items()}},
    }
