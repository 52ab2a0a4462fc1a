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

import sqlalchemy as sa

from eval.agreement import agreement
from store import Store
from store.schema import label_items, labels


def item_counts(store: Store, overlap: int) -> list[dict]:
    """Per (source, model version): items, labels, complete items and items left."""
    # A read of the store's tables for one summary (the store has no bulk query for it).
    per_item = sa.select(labels.c.item_id, sa.func.count().label("n")).group_by(labels.c.item_id).subquery()
    n = sa.func.coalesce(per_item.c.n, 0)
    query = (
        sa.select(
            label_items.c.source,
            label_items.c.model_version,
            sa.func.count().label("items"),
            sa.func.coalesce(sa.func.sum(n), 0).label("labels"),
            sa.func.coalesce(sa.func.sum(sa.case((n >= overlap, 1), else_=0)), 0).label("complete"),
        )
        .select_from(label_items.outerjoin(per_item, per_item.c.item_id == label_items.c.id))
        .group_by(label_items.c.source, label_items.c.model_version)
        .order_by(label_items.c.source, label_items.c.model_version)
    )
    with store.engine.connect() as conn:
        rows = [dict(row._mapping) for row in conn.execute(query)]
    return [row | {"left": row["items"] - row["complete"]} for row in rows]


def rater_counts(store: Store, rows, overlap: int) -> list[dict]:
    """Per rater: labels, how many good, items still open to them; most labels first."""
    given, good = Counter(r.rater for r in rows), Counter(r.rater for r in rows if r.verdict == "good")
    table = []
    for rater, count in given.most_common():
        done, total = store.progress(rater, overlap)
        table.append({"rater": rater, "labels": count, "good": good[rater], "left": total - done})
    return table


def agreement_summary(stats: dict) -> dict:
    keys = ("overlap_items", "raters", "percent_agreement", "cohen_kappa", "fleiss_kappa", "fleiss_items")
    return {key: stats[key] for key in keys}


def session_progress(store: Store, overlap: int = 1) -> dict:
    rows = store.label_rows()
    stats = agreement(rows)
    return {
        "overlap": overlap,
        "items": item_counts(store, overlap),
        "raters": rater_counts(store, rows, overlap),
        "agreement": agreement_summary(stats)
        | {"by_version": {v: agreement_summary(s) for v, s in stats["by_version"].items()}},
    }
