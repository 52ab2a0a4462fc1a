"""How long each label took, as the server saw it: from the item handed to the rater (its
assignment, written by `next_item` / `label(and_next=True)` when the Label tab shows it) to
their verdict (the label's first write). A label with no assignment (a script's `label`, a
chat thumb) was never shown by the queue and has no time. After an undo the item is handed
out again, so the new verdict is timed from the undo."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from store.schema import assignments, labels, raters


@dataclass(frozen=True)
class LabelTime:
    rater: str
    item_id: int
    shown_at: datetime  # the assignment's creation, UTC
    labelled_at: datetime  # the label's first write, UTC

    @property
    def seconds(self) -> float:
        return (self.labelled_at - self.shown_at).total_seconds()


QUERY = (
    sa.select(
        raters.c.name.label("rater"),
        labels.c.item_id,
        assignments.c.created_at.label("shown_at"),
        labels.c.created_at.label("labelled_at"),
    )
    .select_from(
        labels.join(
            assignments, sa.and_(assignments.c.item_id == labels.c.item_id, assignments.c.rater_id == labels.c.rater_id)
        ).join(raters, raters.c.id == labels.c.rater_id)
    )
    .order_by(labels.c.id)
)
