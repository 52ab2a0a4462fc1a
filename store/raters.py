"""`RaterQuality`: what the organiser reads and sets about the raters' work, as `Store` methods.

    store.set_gold([3, 7], "good")      # known verdicts, mixed into each rater's items
    store.rater_progress(overlap=2)     # {"kim": Progress(done=12, total=40), ...}

Gold items and repeats (store.quality), the queue's order, seconds per label (store.timing),
each rater's progress and the items' counts: the Results and Organise tabs and eval/ read
these; the rater's own calls (`next_item`, `label`) are `Store`'s. A mixin of `Store`: each
method is one transaction through `Store._read` / `Store._write`, like the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from store import assign, quality, timing
from store.records import Progress, RepeatRow, Verdict, check_overlap, check_verdict
from store.schema import label_items, labels, raters, repeats


class RaterQuality:
    """Gold items, repeats, the queue's order, label times and progress (mixed into `Store`)."""

    _read: Callable[..., Any]  # Store's transactions
    _write: Callable[..., Any]

    def set_gold(self, item_ids: list[int], verdict: Verdict | None) -> int:
        """Mark the items gold with their known verdict (None: no longer gold). Gold items leave
        the shared queue and are mixed into each rater's items (`next_item(mix=...)`). Returns how
        many items there were."""
        if verdict is not None:
            check_verdict(verdict)
        ids = list(item_ids)
        query = sa.update(label_items).where(label_items.c.id.in_(ids)).values(gold=verdict)
        return self._write(lambda c: c.execute(query).rowcount, f"gold verdicts of {len(ids)} items were NOT saved")

    def gold_items(self) -> dict[int, str]:
        """Gold item id -> its known verdict."""
        query = sa.select(label_items.c.id, label_items.c.gold).where(label_items.c.gold.is_not(None))
        return self._read(lambda c: {r.id: r.gold for r in c.execute(query)}, "the gold items")

    def repeat_rows(self) -> list[RepeatRow]:
        """Every answered repeat with the rater's first verdict on the item, oldest first."""
        query = (
            sa.select(
                repeats.c.item_id,
                raters.c.name.label("rater"),
                labels.c.verdict.label("first"),
                repeats.c.verdict.label("again"),
                repeats.c.answered_at,
            )  # fmt: skip
            .select_from(
                repeats.join(raters, raters.c.id == repeats.c.rater_id).join(
                    labels, sa.and_(labels.c.item_id == repeats.c.item_id, labels.c.rater_id == repeats.c.rater_id)
                )
            )
            .where(repeats.c.verdict.is_not(None))
            .order_by(repeats.c.answered_at, repeats.c.id)
        )
        return self._read(lambda c: [RepeatRow(**r._mapping) for r in c.execute(query)], "the repeats")

    def order_queue(self, open_versions: list[str]) -> int:
        """Reorder the queue by `store.quality.QUEUE_ORDER` (items whose labels disagree first,
        then items of `open_versions`); call it per queue refill, not per label. Returns how
        many items changed place."""
        versions = list(open_versions)
        return self._write(lambda c: quality.order_queue(c, versions), "the queue order was NOT saved", retry=True)

    def label_times(self) -> list[timing.LabelTime]:
        """Every label the queue handed out, with when it was shown and labelled (`store.timing`)."""
        return self._read(lambda c: [timing.LabelTime(**r._mapping) for r in c.execute(timing.QUERY)], "label times")

    def rater_progress(self, overlap: int = 1, source: str | None = None) -> dict[str, Progress]:
        """Every rater's progress by name (labelled, labelled + still open to them), in one read:
        the organiser's table (eval.progress). A rater sees their own with `next_item`."""
        check_overlap(overlap)
        query = sa.select(raters.c.id, raters.c.name).order_by(raters.c.name)

        def read(conn: sa.Connection) -> dict[str, Progress]:
            return {r.name: assign.progress(conn, r.id, overlap, source) for r in conn.execute(query).all()}

        return self._read(read, "the raters' progress")

    def item_counts(self, overlap: int = 1) -> list[dict]:
        """Per (source, model version), in that order: items, labels, items labelled by
        `overlap` raters (complete) and items left (the organiser's session progress)."""
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
        rows = self._read(lambda c: [dict(row._mapping) for row in c.execute(query)], "the label item counts")
        return [row | {"left": row["items"] - row["complete"]} for row in rows]
