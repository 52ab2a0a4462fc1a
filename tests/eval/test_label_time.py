"""Seconds per label, measured by the server from the item shown to the verdict saved,
through a real Store."""

import time

import pytest

from eval.label_time import label_time_table
from tests.store.conftest import add_items


def test_each_label_is_timed_from_the_item_shown(store):
    add_items(store, 4)
    first = store.next_item("kim").item
    time.sleep(0.3)
    shown = store.label(first.id, "kim", "good", and_next=True).next.item  # shown in the same write
    time.sleep(0.5)
    store.label(shown.id, "kim", "bad")
    store.label(store.next_item("lee").item.id, "lee", "good")  # at once: no person reads that fast
    times = {(t.rater, t.item_id): t.seconds for t in store.label_times()}
    assert times[("kim", first.id)] == pytest.approx(0.3, abs=0.25) and times[("kim", first.id)] >= 0.3
    assert 0.5 <= times[("kim", shown.id)] < 1.0
    assert 0 <= min(s for (r, _), s in times.items() if r == "lee") < 0.25
    table = label_time_table(store.label_times()).set_index("rater")
    assert table.loc["kim", "labels timed"] == 2 and table.loc["kim", "left out (< 0.25 s)"] == 0
    assert table.loc["lee", "labels timed"] == 0 and table.loc["lee", "left out (< 0.25 s)"] == 1
    assert table.loc["kim", "median s per label"] == pytest.approx(
        (times[("kim", first.id)] + times[("kim", shown.id)]) / 2, abs=0.05
    )


def test_a_scripts_labels_are_left_out_and_counted(store):
    for item_id in add_items(store, 3):
        store.label(item_id, "bot", "good")  # assigned and labelled in one write
    assert all(t.seconds < 0.25 for t in store.label_times())
    row = label_time_table(store.label_times()).iloc[0]
    assert (row["rater"], row["labels timed"], row["left out (< 0.25 s)"]) == ("bot", 0, 3)
    assert label_time_table([]).empty


def test_an_undone_label_is_timed_again_from_the_undo(store):
    add_items(store, 1)
    item = store.next_item("kim").item
    time.sleep(0.3)
    store.label(item.id, "kim", "good")
    store.undo_last_label("kim")
    store.label(store.next_item("kim").item.id, "kim", "bad")
    (timed,) = store.label_times()
    assert timed.item_id == item.id and timed.seconds < 0.25  # not the 0.3 s before the undo
