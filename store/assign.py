"""The labelling queue: which item a rater sees next, and how items are shared out.

An item is *open* to a rater when they have not labelled or skipped it and either hold it
already or fewer than `overlap` raters hold it. Holders are raters with an assignment:
`next_item` assigns, a label keeps the assignment, a skip gives it back. Open items go
out by `priority` (highest first), then by age (lowest id first).
"""

from __future__ import annotations

import sqlalchemy as sa

from store.db import StoreError
from store.schema import assignments, label_items, labels, skips

_CLAIM_TRIES = 100  # items other raters took while we looked, before we give up


def _finished(rater_id: int | None) -> sa.CompoundSelect:
    """Items the rater labelled or skipped."""
    return sa.union(
        sa.select(labels.c.item_id).where(labels.c.rater_id == rater_id),
        sa.select(skips.c.item_id).where(skips.c.rater_id == rater_id),
    )


def _holders(item_id) -> sa.ScalarSelect:
    return sa.select(sa.func.count()).where(assignments.c.item_id == item_id).scalar_subquery()


def _held_by(rater_id: int | None) -> sa.Exists:
    return sa.exists().where(assignments.c.item_id == label_items.c.id, assignments.c.rater_id == rater_id)


def _unfinished(rater_id: int | None, source: str | None) -> list:
    where = [label_items.c.id.not_in(_finished(rater_id))]
    return where + ([label_items.c.source == source] if source else [])


def pending(conn: sa.Connection, rater_id: int, source: str | None) -> sa.Row | None:
    """The item the rater holds and has not finished; the latest assigned first, so an
    undone label (re-assigned by `undo_last_label`) comes back before anything else."""
    query = (
        sa.select(label_items)
        .join(assignments, assignments.c.item_id == label_items.c.id)
        .where(assignments.c.rater_id == rater_id, *_unfinished(rater_id, source))
        .order_by(assignments.c.id.desc())
        .limit(1)
    )
    return conn.execute(query).first()


def claim(conn: sa.Connection, rater_id: int, overlap: int, source: str | None) -> sa.Row | None:
    """Assign the item with a free place and the highest priority (the oldest of those) to
    the rater, or None if there is none."""
    query = (
        sa.select(label_items)
        .where(*_unfinished(rater_id, source), ~_held_by(rater_id), _holders(label_items.c.id) < overlap)
        .order_by(label_items.c.priority.desc(), label_items.c.id)
        .limit(1)
    )
    for _ in range(_CLAIM_TRIES):
        row = conn.execute(query).first()
        if row is None:
            return None
        # PostgreSQL: wait for anyone claiming this item right now, then count again (a new
        # statement sees their commit). SQLite needs no lock: BEGIN IMMEDIATE serialises writers.
        # key_share=True renders FOR NO KEY UPDATE, which does not block inserts that only
        # reference the item (labels, assignments) but does block another claimer.
        conn.execute(sa.select(label_items.c.id).where(label_items.c.id == row.id).with_for_update(key_share=True))
        holders = sa.select(sa.func.count()).where(assignments.c.item_id == row.id)
        if conn.execute(holders).scalar_one() < overlap:
            conn.execute(sa.insert(assignments).values(item_id=row.id, rater_id=rater_id))
            return row
    raise StoreError("the label queue is too busy right now", "ask for the next item again")


def count_open(conn: sa.Connection, rater_id: int | None, overlap: int, source: str | None) -> int:
    """How many items `next_item` could still give the rater."""
    open_ = sa.or_(_held_by(rater_id), _holders(label_items.c.id) < overlap)
    query = sa.select(sa.func.count()).select_from(label_items).where(*_unfinished(rater_id, source), open_)
    return conn.execute(query).scalar_one()


def count_labelled(conn: sa.Connection, rater_id: int | None, source: str | None) -> int:
    query = (
        sa.select(sa.func.count())
        .select_from(labels.join(label_items, labels.c.item_id == label_items.c.id))
        .where(labels.c.rater_id == rater_id, *([label_items.c.source == source] if source else []))
    )
    return conn.execute(query).scalar_one()
