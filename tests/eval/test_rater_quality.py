"""Rater quality (eval.rater_quality) with simulated raters of known accuracy, going through the
real queue (gold items and repeats mixed in by store.quality); what it does to human accuracy
and exports; the queue order from open versions (eval.label_next)."""

import json
import random
from datetime import UTC, datetime, timedelta

import pytest

from eval.export_labels import main as export_main
from eval.human import human_accuracy
from eval.label_next import open_versions, refresh_queue
from eval.rater_quality import labels_per_hour, left_out, rater_quality, trusted_rows
from store import NewItem, QueueMix
from store.timing import LabelTime

ACCURACY = {"ace": 0.95, "avg": 0.75, "coin": 0.5}  # the chance each rater gives the true verdict
N_ITEMS, N_GOLD = 160, 40


def item(i: int, version: str) -> NewItem:
    persona = {"name": "Ada", "facts": ["I keep three beehives."], "anonymous": False}
    return NewItem("eval", "Ada", persona, [{"role": "user", "content": f"q{i}"}], f"a{i}", version)


@pytest.fixture
def rated(store):
    """Three simulated raters labelled every item through the queue (overlap 3, a fifth gold,
    a fifth repeats); returns the true verdicts by item id."""
    rng = random.Random(0)
    ids = store.add_label_items([item(i, "v1" if i % 2 else "base") for i in range(N_ITEMS)])
    truth = {i: rng.choice(["good", "bad"]) for i in ids}
    gold = ids[:N_GOLD]
    for verdict in ("good", "bad"):
        store.set_gold([i for i in gold if truth[i] == verdict], verdict)
    mix = QueueMix(gold_share=0.2, repeat_share=0.2)
    for rater, accuracy in ACCURACY.items():
        shown = store.next_item(rater, 3, mix=mix).item
        while shown is not None:
            right = rng.random() < accuracy
            verdict = truth[shown.id] if right else {"good": "bad", "bad": "good"}[truth[shown.id]]
            shown = store.label(shown.id, rater, verdict, and_next=True, overlap=3, mix=mix).next.item
    return truth


def test_the_reported_figures_recover_each_raters_known_accuracy(store, rated):
    table = rater_quality(store).set_index("rater")
    for rater, accuracy in ACCURACY.items():
        row = table.loc[rater]
        assert row["labels"] == N_ITEMS - N_GOLD + row["gold labels"]  # every shared item, once
        assert row["gold labels"] >= 20 and row["repeats"] >= 15
        assert row["gold low"] <= accuracy <= row["gold high"]
        # Two independent answers agree with chance a^2 + (1-a)^2.
        assert row["self low"] <= accuracy**2 + (1 - accuracy) ** 2 <= row["self high"]
    kappas = table["kappa with others"]
    assert kappas["ace"] > kappas["avg"] > kappas["coin"] and abs(kappas["coin"]) < 0.2
    assert table["median s per label"].isna().all()  # a script's labels are not timed (eval.label_time)


def test_raters_below_the_threshold_are_left_out_of_human_accuracy_and_exports(store, rated, db_file_url, tmp_path):
    rows, dropped = trusted_rows(store, 0.8)
    assert dropped == ["avg", "coin"] and {r.rater for r in rows} == {"ace"}
    table = {r["model_version"]: r for r in human_accuracy(store.label_rows(), leave_out=dropped)}
    assert table["v1"]["raters"] == 1 and table["v1"]["raters_left_out"] == 2
    assert table["v1"]["labelled"] + table["v1"]["labels_left_out"] == len(
        [r for r in store.label_rows() if r.model_version == "v1"]
    )
    out = tmp_path / "kto"
    args = ["--database_url", db_file_url, "--format", "kto", "--out", str(out), "--min_gold_accuracy", "0.8"]
    assert export_main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["raters_left_out"] == ["avg", "coin"] and manifest["counts"]["raters_left_out"] == 2
    labels = manifest["labels"]
    assert {label["rater"] for label in labels} == {"ace"} and len(labels) == manifest["counts"]["rows"]
    gold = store.gold_items()
    assert [label["gold"] for label in labels] == [gold.get(label["item_id"]) for label in labels]
    again = {(r.item_id, r.rater): r.again for r in store.repeat_rows()}
    assert any(label["repeat"] for label in labels)
    assert all(label["repeat"] == again.get((label["item_id"], "ace")) for label in labels)
    assert all(label["seconds"] is not None and label["seconds"] >= 0 for label in labels)  # all from the queue


def test_labels_per_hour_counts_only_the_time_spent_labelling():
    t0 = datetime(2026, 12, 1, 9, tzinfo=UTC)

    def timed(start_s: float, seconds: float) -> LabelTime:
        shown = t0 + timedelta(seconds=start_s)
        return LabelTime("kim", 0, shown, shown + timedelta(seconds=seconds))

    morning = [timed(10 * n, 10) for n in range(30)]  # 30 labels in 300 s
    afternoon = [timed(5 * 3600 + 20 * n, 20) for n in range(30)]  # after lunch: 30 in 600 s
    assert labels_per_hour(morning) == pytest.approx(360)
    assert labels_per_hour(morning + afternoon) == pytest.approx(60 * 3600 / 900)  # lunch not counted
    assert labels_per_hour([timed(0, 0.01)]) is None  # too fast for a person: not timed


def test_left_out_needs_enough_gold_labels():
    import pandas as pd

    table = pd.DataFrame({"rater": ["a", "b", "c"], "gold labels": [10, 3, 10], "gold accuracy": [0.5, 0.1, 0.9]})
    assert left_out(table, 0.7) == ["a"] and left_out(table, None) == []


def test_open_versions_and_the_queue_they_reorder(store):
    def labels(version, good, bad):
        return [type("L", (), {"model_version": version, "verdict": v}) for v in ["good"] * good + ["bad"] * bad]

    rows = labels("base", 50, 50) + labels("v1", 90, 10) + labels("v2", 52, 48)
    parents = {"v1": "base", "v2": "base", "v3": "v1"}
    assert open_versions(rows, ["base", "v1", "v2", "v3"], parents) == ["v2", "v3"]  # v1 decided; v3 unlabelled
    ids = store.add_label_items([item(i, "base" if i < 2 else "v1") for i in range(4)])
    still_open, moved = refresh_queue(store, "no-runs-here")
    assert still_open == ["v1"] and moved == 2  # no labels of v1 yet: open; its two items go first
    assert store.next_item("kim").item.id == ids[2]
