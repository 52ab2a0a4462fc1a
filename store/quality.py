"""Rater quality in the queue: gold items and repeats mixed into each rater's items, and the
order that puts first what most needs a label.

A *gold* item has a known verdict (`label_items.gold`, set by the organiser). Gold items stay
out of the shared queue; each rater is handed the gold items they have not finished, one at a
time, at the organiser's `QueueMix.gold_share`. A *repeat* is an item the rater labelled at
least `REPEAT_GAP` labels ago, shown to them again at `QueueMix.repeat_share`; its second
verdict goes to `repeats`, never to `labels`, so it counts once in accuracy and exports. The
rater is not told which is which: both look like any other item.

Which one a rater gets is one draw per (rater, labels given so far): a number in [0, 1) from a
hash, gold below `gold_share`, a repeat below `gold_share + repeat_share`, else the next item
of the shared queue. Deterministic (tests, a reload shows the same item) and not periodic
(a rater cannot count to the next gold item).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import sqlalchemy as sa

from store.db import StoreError
from store.schema import label_items, labels, now, repeats, skips
from store.sql import dialect_insert

REPEAT_GAP = 5  # a repeat comes back after at least this many of the rater's later labels

# The rule `order_queue` applies (the Label tab's help can quote it).
QUEUE_ORDER = (
    "What to label next: first the items whose raters disagree (a good and a bad label) while they "
    "still have a free place, so the next labels settle them; then the items of versions whose "
    "scorecard decision is still open (the 95 % interval of human accuracy, child minus parent, "
    "contains 0, or one side has no labels yet); then by priority, then oldest first. The order is "
    "refreshed when the queue is refilled, not on every label."
)
DISAGREE, OPEN_VERSION = 2, 1  # label_items.boost


@dataclass(frozen=True)
class QueueMix:
    """The share of a rater's items that are gold, and that are repeats (0 to 1, together at most 1)."""

    gold_share: float = 0.0
    repeat_share: float = 0.0

    def __post_init__(self):
        shares = (self.gold_share, self.repeat_share)
        if any(not 0 <= s <= 1 for s in shares) or sum(shares) > 1:
            raise StoreError(
                f"gold share {self.gold_share} and repeat share {self.repeat_share} must each be in [0, 1] "
                "and add up to at most 1",
                "pass shares such as 0.1 (one item in ten)",
            )


def draw(rater_id: int, n: int) -> float:
    """A number in [0, 1), the same for the same rater after the same number of labels."""
    return int(hashlib.sha256(f"{rater_id}:{n}".encode()).hexdigest()[:12], 16) / 16**12


def _source(source: str | None) -> list:
    return [label_items.c.source == source] if source else []


def pending_repeat(conn: sa.Connection, rater_id: int, source: str | None) -> sa.Row | None:
    """The item shown again to the rater and not answered yet."""
    query = (
        sa.select(label_items)
        .join(repeats, repeats.c.item_id == label_items.c.id)
        .where(repeats.c.rater_id == rater_id, repeats.c.answered_at.is_(None), *_source(source))
        .limit(1)
    )
    return conn.execute(query).first()


def answer_repeat(conn: sa.Connection, item_id: int, rater_id: int, verdict: str | None) -> bool:
    """Record the rater's verdict (None: a skip) on their pending repeat of the item; False when
    there is none (the verdict is an ordinary label)."""
    pending = sa.update(repeats).where(
        repeats.c.item_id == item_id, repeats.c.rater_id == rater_id, repeats.c.answered_at.is_(None)
    )
    return bool(conn.execute(pending.values(verdict=verdict, answered_at=now())).rowcount)


def last_answered_repeat(conn: sa.Connection, rater_id: int | None) -> sa.Row | None:
    query = (
        sa.select(repeats.c.id, repeats.c.item_id, repeats.c.answered_at)
        .where(repeats.c.rater_id == rater_id, repeats.c.answered_at.is_not(None))
        .order_by(repeats.c.answered_at.desc(), repeats.c.id.desc())
        .limit(1)
    )
    return conn.execute(query).first()


def mixed(conn: sa.Connection, rater_id: int, mix: QueueMix, source: str | None, hold) -> sa.Row | None:
    """A gold item or a repeat for the rater, if the draw says so and one is left; else None
    (the caller claims from the shared queue). `hold(conn, item_id, rater_id)` assigns an item."""
    if not (mix.gold_share or mix.repeat_share):
        return None
    given = conn.execute(sa.select(sa.func.count()).where(labels.c.rater_id == rater_id)).scalar_one()
    given += conn.execute(sa.select(sa.func.count()).where(repeats.c.rater_id == rater_id)).scalar_one()
    x = draw(rater_id, given)
    if x < mix.gold_share:
        row = _gold_left(conn, rater_id, source)
        if row is not None:
            hold(conn, row.id, rater_id)  # timed like any item (store.timing)
        return row
    if x < mix.gold_share + mix.repeat_share:
        return _repeat(conn, rater_id, source)
    return None


def _gold_left(conn: sa.Connection, rater_id: int, source: str | None) -> sa.Row | None:
    finished = sa.union(
        sa.select(labels.c.item_id).where(labels.c.rater_id == rater_id),
        sa.select(skips.c.item_id).where(skips.c.rater_id == rater_id),
    )
    query = (
        sa.select(label_items)
        .where(label_items.c.gold.is_not(None), label_items.c.id.not_in(finished), *_source(source))
        .order_by(label_items.c.id)
        .limit(1)
    )
    return conn.execute(query).first()


def _repeat(conn: sa.Connection, rater_id: int, source: str | None) -> sa.Row | None:
    """Show again the rater's oldest labelled item (not gold, not repeated yet) with at least
    `REPEAT_GAP` of their labels after it."""
    gap = (
        sa.select(labels.c.id)
        .where(labels.c.rater_id == rater_id)
        .order_by(labels.c.id.desc())
        .offset(REPEAT_GAP - 1)
        .limit(1)
        .scalar_subquery()
    )
    repeated = sa.select(repeats.c.item_id).where(repeats.c.rater_id == rater_id)
    query = (
        sa.select(label_items)
        .join(labels, labels.c.item_id == label_items.c.id)
        .where(
            labels.c.rater_id == rater_id,
            labels.c.id < gap,
            label_items.c.gold.is_(None),
            label_items.c.id.not_in(repeated),
            *_source(source),
        )
        .order_by(labels.c.id)
        .limit(1)
    )
    row = conn.execute(query).first()
    if row is not None:
        conn.execute(dialect_insert(conn, repeats).values(item_id=row.id, rater_id=rater_id).on_conflict_do_nothing())
    return row


def order_queue(conn: sa.Connection, open_versions: list[str]) -> int:
    """Set each item's `boost` by `QUEUE_ORDER`; returns how many items changed place."""
    disagree = (
        sa.select(labels.c.item_id).group_by(labels.c.item_id).having(sa.func.count(sa.distinct(labels.c.verdict)) > 1)
    )
    boost = sa.case(
        (label_items.c.id.in_(disagree), DISAGREE),
        (label_items.c.model_version.in_(list(open_versions)), OPEN_VERSION),
        else_=0,
    )
    return conn.execute(sa.update(label_items).where(label_items.c.boost != boost).values(boost=boost)).rowcount
