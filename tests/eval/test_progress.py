"""Session progress from a real SQLite store: items left per source/version, labels per rater,
agreement so far."""

from eval.progress import session_progress
from store import NewItem

PERSONA = {"name": "Ada", "facts": ["I build clocks."]}


def item(i: int, source: str = "eval", version: str = "base") -> NewItem:
    return NewItem(source, "Ada", PERSONA, [{"role": "user", "content": f"question {i}"}], f"answer {i}", version)


def test_counts_and_agreement_with_two_raters_per_item(store):
    ids = store.add_label_items([item(0), item(1), item(2), item(3, "chat", "v2")])
    for rater, verdicts in {"ana": ["good", "good", "bad"], "ben": ["good", "bad"]}.items():
        for item_id, verdict in zip(ids, verdicts, strict=False):
            store.label(item_id, rater, verdict)

    progress = session_progress(store, overlap=2)
    assert progress["items"] == [
        {"source": "chat", "model_version": "v2", "items": 1, "labels": 0, "complete": 0, "left": 1},
        # items 0 and 1 have their two raters; item 2 waits for a second one
        {"source": "eval", "model_version": "base", "items": 3, "labels": 5, "complete": 2, "left": 1},
    ]
    assert progress["raters"] == [
        {"rater": "ana", "labels": 3, "good": 2, "left": 1},  # the chat item
        {"rater": "ben", "labels": 2, "good": 1, "left": 2},  # item 2 (one holder so far) and the chat item
    ]
    agreement = progress["agreement"]
    assert agreement["overlap_items"] == 2 and agreement["raters"] == ["ana", "ben"]
    assert agreement["percent_agreement"] == 0.5  # item 0 agreed, item 1 did not
    assert agreement["cohen_kappa"] == 0.0  # ben's one "bad" is exactly what chance predicts here
    assert list(agreement["by_version"]) == ["base"]

    once = session_progress(store, overlap=1)["items"][1]
    assert (once["complete"], once["left"]) == (3, 0)  # one label finishes an item
