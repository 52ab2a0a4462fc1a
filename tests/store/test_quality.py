"""Gold items, repeats and the queue's order (store.quality), on SQLite and PostgreSQL."""

import pytest

from store import QueueMix, StoreError
from store.quality import REPEAT_GAP, draw
from tests.store.conftest import add_items, new_item

MIX = QueueMix(gold_share=0.2, repeat_share=0.2)


def label_all(store, rater, mix, overlap=1, limit=200) -> list[int]:
    """Label good until the rater's queue is empty; the ids shown, in order."""
    shown, item = [], store.next_item(rater, overlap, mix=mix).item
    while item is not None and len(shown) < limit:
        shown.append(item.id)
        item = store.label(item.id, rater, "good", and_next=True, overlap=overlap, mix=mix).next.item
    return shown


def test_gold_items_leave_the_shared_queue_and_reach_every_rater_at_the_share(store):
    ids = add_items(store, 120)
    gold = ids[:20]
    assert store.set_gold(gold, "bad") == 20
    assert store.gold_items() == dict.fromkeys(gold, "bad")
    # Without a mix nobody is handed a gold item (they are not part of the shared queue).
    assert store.next_item("ann").item.id == ids[20]
    seen = {}
    for rater in ("kim", "lee"):
        shown = label_all(store, rater, QueueMix(gold_share=0.15), overlap=3)
        seen[rater] = [i for i in shown if i in gold]
        assert len(set(seen[rater])) == len(seen[rater])  # a gold item once per rater
        assert 0.08 < len(seen[rater]) / len(shown) < 0.22  # about the share (19 of 119 for kim)
        where = [n for n, i in enumerate(shown) if i in gold]
        assert len(set(b - a for a, b in zip(where, where[1:], strict=False))) > 3  # mixed in, not periodic
    assert seen["kim"][:3] == seen["lee"][:3] == gold[:3]  # every rater meets the same gold items
    rows = [r for r in store.label_rows() if r.item_id in gold]
    assert sorted((r.rater, r.item_id) for r in rows) == sorted((r, i) for r in seen for i in seen[r])
    assert store.set_gold(gold, None) == 20 and store.gold_items() == {}
    with pytest.raises(StoreError, match="verdict"):
        store.set_gold(gold, "maybe")


def test_repeats_come_back_later_and_keep_their_own_verdict(store):
    ids = add_items(store, 40)
    shown = label_all(store, "kim", QueueMix(repeat_share=0.3))
    again = [i for n, i in enumerate(shown) if i in shown[:n]]
    assert len(again) >= 5 and len(set(again)) == len(again)  # each item repeated at most once
    for item_id in again:  # at least REPEAT_GAP labels between the first showing and the repeat
        first, second = shown.index(item_id), len(shown) - 1 - shown[::-1].index(item_id)
        assert second - first > REPEAT_GAP - 1
    assert sorted(set(shown)) == ids
    # One label per item: the repeat's verdict is apart, with the first verdict beside it.
    assert len(store.label_rows()) == len(ids)
    assert sorted((r.item_id, r.first, r.again) for r in store.repeat_rows()) == [(i, "good", "good") for i in
                                                                                 sorted(again)]  # fmt: skip
    assert store.rater_progress() == {"kim": (len(shown), len(shown))}


def test_a_repeat_can_be_answered_differently_skipped_and_undone(store):
    add_items(store, 12)
    mix = QueueMix(repeat_share=1.0)  # a repeat whenever one is due
    for _ in range(REPEAT_GAP + 1):  # item 1 needs REPEAT_GAP labels after it
        item = store.next_item("kim", mix=mix).item
        store.label(item.id, "kim", "good")
    repeat = store.next_item("kim", mix=mix).item
    assert repeat.id == 1 and store.next_item("kim", mix=mix).item.id == 1  # pending until answered
    done = store.label(repeat.id, "kim", "bad", and_next=True, mix=mix)
    assert [(r.item_id, r.first, r.again) for r in store.repeat_rows()] == [(1, "good", "bad")]
    assert store.label_rows()[0].verdict == "good"  # the first label is untouched
    assert store.undo_last_label("kim") == 1  # undoes the repeat's answer, not a label
    assert store.repeat_rows() == [] and store.next_item("kim", mix=mix).item.id == 1
    store.skip(1, "kim")  # a skipped repeat: answered without a verdict, the item keeps its holder
    assert store.repeat_rows() == [] and store.item(1).holders == 1
    # Item 2 has too few labels after it: the next after the repeat came from the shared queue.
    assert done.next.item.id == 7 and store.next_item("kim", mix=mix).item.id == 7  # item 1 is not shown again


def test_the_draw_is_fixed_per_rater_and_count_and_the_shares_are_checked():
    assert draw(3, 7) == draw(3, 7) and draw(3, 7) != draw(3, 8)
    share = sum(draw(1, n) < 0.1 for n in range(10_000)) / 10_000
    assert share == pytest.approx(0.1, abs=0.01)
    with pytest.raises(StoreError, match="add up to at most 1"):
        QueueMix(gold_share=0.7, repeat_share=0.5)


def test_the_queue_puts_disagreement_then_open_versions_first(store):
    ids = store.add_label_items([new_item(i, model_version="v1" if i < 4 else "v2") for i in range(8)])
    for rater, verdict in (("kim", "good"), ("lee", "bad")):
        store.label(ids[6], rater, verdict)
        store.label(ids[7], rater, "good")
    assert store.order_queue(["v2"]) == 4  # v2's items 4, 5 (open) and 6 (disagreement) and 7 (open)
    assert [store.item(i).boost for i in ids] == [0, 0, 0, 0, 1, 1, 2, 1]
    assert store.order_queue(["v2"]) == 0  # nothing changed: nothing written
    assert store.next_item("max", overlap=3).item.id == ids[6]  # disagreeing, with a free place (now full)
    order = [store.next_item(rater).item.id for rater in ("ann", "bob")]  # one rater per item from here
    assert order == [ids[4], ids[5]]  # then the open version's, oldest first
    assert store.order_queue([]) == 3  # v2 is decided: its items go back to their place
    assert store.next_item("dan").item.id == ids[0]
