"""The labelling queue: which item a rater sees next, and how items are shared out.

An item is *open* to a rater when they have not labelled or skipped it and either hold it
already or fewer than `overlap` raters hold it. Holders are raters with an assignment:
`next_item` assigns, a label keeps the assignment, a skip gives it back; every change goes
through `hold` / `release`, which keep the item's `holders` column equal to its assignments.
Open items go out by `boost` (store.quality.QUEUE_ORDER), then `priority` (highest first),
then by age (lowest id first). Gold items stay out of this shared queue; with a `QueueMix`,
gold items and repeats are mixed into each rater's items (store.quality).
"""

from __future__ import annotations

import sqlalchemy as sa

from store import quality
from store.db import StoreError
from store.records import Progress
from store.schema import assignments, label_items, labels, repeats, skips
from store.sql import dialect_insert

_CLAIM_TRIES = 100  # items other raters took while we looked, before we give up


def _finished(rater_id: int | None) -> sa.CompoundSelect:
    """Items the rater labelled or skipped."""
    return sa.union(
        sa.select(labels.c.item_id).where(labels.c.rater_id == rater_id),
        sa.select(skips.c.item_id).where(skips.c.rater_id == rater_id),
    )


def _held_by(rater_id: int | None) -> sa.Exists:
    return sa.exists().where(assignments.c.item_id == label_items.c.id, assignments.c.rater_id == rater_id)


def _unfinished(rater_id: int | None, source: str | None) -> list:
    where = [label_items.c.id.not_in(_finished(rater_id))]
    return where + ([label_items.c.source == source] if source else [])


def pending(conn: sa.Connection, rater_id: int | None, source: str | None) -> sa.Row | None:
    """The item shown again to the rater (a repeat) and not answered, else the item the rater
    holds and has not finished; the latest assigned first, so an undone label (re-assigned by
    `undo_last_label`) comes back before anything else. None for a rater not in the store yet
    (`rater_id` None): they hold nothing."""
    if rater_id is None:
        return None
    repeat = quality.pending_repeat(conn, rater_id, source)
    if repeat is not None:
        return repeat
    query = (
        sa.select(label_items)
        .join(assignments, assignments.c.item_id == label_items.c.id)
        .where(assignments.c.rater_id == rater_id, *_unfinished(rater_id, source))
        .order_by(assignments.c.id.desc())
        .limit(1)
    )
    return conn.execute(query).first()


def next_for(
    conn: sa.Connection, rater_id: int, overlap: int, source: str | None, mix: quality.QueueMix | None = None
) -> sa.Row | None:
    """The item the rater holds and has not finished, else a gold item or a repeat if `mix` draws
    one, else a newly claimed one (None: nothing left)."""
    found = pending(conn, rater_id, source)
    if found is None and mix is not None:
        found = quality.mixed(conn, rater_id, mix, source, hold)
    return found or claim(conn, rater_id, overlap, source)


def claim(conn: sa.Connection, rater_id: int, overlap: int, source: str | None) -> sa.Row | None:
    """Assign the item (not gold) with a free place and the highest boost and priority (the
    oldest of those) to the rater, or None if there is none."""
    query = (
        sa.select(label_items)
        .where(
            label_items.c.holders < overlap,
            label_items.c.gold.is_(None),
            *_unfinished(rater_id, source),
            ~_held_by(rater_id),
        )
        .order_by(label_items.c.boost.desc(), label_items.c.priority.desc(), label_items.c.id)
        .limit(1)
    )
    for _ in range(_CLAIM_TRIES):
        row = conn.execute(query).first()
        if row is None:
            return None
        # Take the place only if it is still free: on PostgreSQL a concurrent claimer's UPDATE
        # makes this one wait, then the condition is checked again on their committed row
        # (0 rows: someone else took the last place; look again). SQLite's BEGIN IMMEDIATE
        # already serialises writers.
        took = sa.update(label_items).where(label_items.c.id == row.id, label_items.c.holders < overlap)
        if conn.execute(took.values(holders=label_items.c.holders + 1)).rowcount:
            hold(conn, row.id, rater_id, counted=True)
            return row
    raise StoreError("the label queue is too busy right now", "ask for the next item again")


def hold(conn: sa.Connection, item_id: int, rater_id: int, counted: bool = False) -> None:
    """Assign the item to the rater (nothing if they hold it) and keep `holders` right;
    `counted`: the caller has already added the rater to `holders`."""
    pair = dict(item_id=item_id, rater_id=rater_id)
    # RETURNING, not rowcount: on PostgreSQL (SQLAlchemy adds its own RETURNING there) the
    # rowcount of this INSERT did not say whether a row went in.
    insert = dialect_insert(conn, assignments).values(pair).on_conflict_do_nothing().returning(assignments.c.id)
    added = conn.execute(insert).first() is not None
    if added != counted:  # added but not counted yet (+1), or counted but held already (-1)
        _add_holders(conn, item_id, 1 if added else -1)


def release(conn: sa.Connection, item_id: int, rater_id: int) -> None:
    """The rater no longer holds the item (a skip, or the moment before an undo re-assigns it)."""
    removed = conn.execute(sa.delete(assignments).filter_by(item_id=item_id, rater_id=rater_id)).rowcount
    if removed:
        _add_holders(conn, item_id, -removed)


def _add_holders(conn: sa.Connection, item_id: int, n: int) -> None:
    conn.execute(sa.update(label_items).where(label_items.c.id == item_id).values(holders=label_items.c.holders + n))


def count_open(conn: sa.Connection, rater_id: int | None, overlap: int, source: str | None) -> int:
    """How many items `next_item` could still give the rater: unfinished ones with a free
    place, plus full ones the rater holds (counted apart: an OR would look up every item's
    holders). Unfinished ones with a free place = all with a free place - the rater's finished
    ones among them: a count over the queue's index and one over the rater's few finished items
    (testing every free item against the finished ones: 1.5 ms per call at 10k items)."""
    with_place = [
        label_items.c.holders < overlap,
        label_items.c.gold.is_(None),
        *([label_items.c.source == source] if source else []),
    ]
    free = sa.select(sa.func.count()).select_from(label_items).where(*with_place)
    finished = sa.select(sa.func.count()).select_from(label_items)
    finished = finished.where(*with_place, label_items.c.id.in_(_finished(rater_id)))
    held = sa.select(sa.func.count()).select_from(
        label_items.join(assignments, assignments.c.item_id == label_items.c.id)
    )
    held = held.where(
        assignments.c.rater_id == rater_id, label_items.c.holders >= overlap, *_unfinished(rater_id, source)
    )
    n_free, n_finished, n_held = (conn.execute(query).scalar_one() for query in (free, finished, held))
    return n_free - n_finished + n_held


def count_labelled(conn: sa.Connection, rater_id: int | None, source: str | None) -> int:
    """The rater's labels and answered repeats (what they see as done)."""
    where = [label_items.c.source == source] if source else []
    done = 0
    for table, answered in ((labels, []), (repeats, [repeats.c.answered_at.is_not(None)])):
        query = sa.select(sa.func.count()).select_from(table.join(label_items, table.c.item_id == label_items.c.id))
        done += conn.execute(query.where(table.c.rater_id == rater_id, *answered, *where)).scalar_one()
    return done


def progress(conn: sa.Connection, rater_id: int | None, overlap: int, source: str | None) -> Progress:
    """(labelled by the rater, labelled + still open to them)."""
    done = count_labelled(conn, rater_id, source)
    return Progress(done, done + count_open(conn, rater_id, overlap, source))
