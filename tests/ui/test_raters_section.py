"""Organise's rater-quality section and the gold/repeat mix as the app wires them: an organiser
marks gold items, raters meet them in their queue unmarked, the table reports their gold accuracy,
and Results leave out a rater below the threshold."""

import dataclasses

from gradio_client import Client

from eval.table import collect, format_table
from store import NewItem, QueueMix
from tests.conftest import serving, studio_context
from ui.label import save_label, show_next
from ui.quality import quality_view

PERSONA = {"name": "Ada", "facts": ["I build clocks."]}


def items(n: int) -> list[NewItem]:
    context = [{"role": "system", "content": "You are Ada."}, {"role": "user", "content": "question"}]
    return [NewItem("eval", "Ada", PERSONA, context, f"answer {i}", "base") for i in range(n)]


def test_gold_items_reach_raters_unmarked_and_the_table_and_results_judge_them(store, tmp_path):
    ids = store.add_label_items(items(30))
    gold, plain = ids[:10], ids[10:]
    ctx = studio_context(tmp_path, store, {})
    ctx = dataclasses.replace(ctx, label_mix=QueueMix(gold_share=0.5), min_gold_accuracy=0.8)
    with serving(ctx) as url:
        client = Client(url, verbose=False)
        table, note = client.predict(", ".join(map(str, gold)), "bad", api_name="/mark_gold")
    assert store.gold_items() == {i: "bad" for i in gold}
    # A careless rater says "good" to everything: gold items come mixed in, and each one is wrong.
    shown, ids_seen = show_next(ctx, "cara"), []
    while shown[0] is not None and len(ids_seen) < 20:
        ids_seen.append(shown[0])
        shown = save_label(ctx, shown[0], "good", "", "cara")
    met = [i for i in ids_seen if i in gold]
    assert len(met) >= 5 and set(ids_seen) - set(met) <= set(plain)  # unmarked: the same screen either way
    frame, note = quality_view(ctx)
    row = frame.set_index("rater").loc["cara"]
    assert row["gold labels"] == len(met) and row["gold accuracy"] == 0
    assert "leave out 1 rater(s)" in note and "cara" in note
    # A careful rater gets gold right; Results count only them, and say one rater was left out.
    shown, kept = show_next(ctx, "kim"), 0
    while shown[0] is not None and kept < 20:
        shown, kept = save_label(ctx, shown[0], "bad" if shown[0] in gold else "good", "", "kim"), kept + 1
    [base] = [r for r in collect(ctx.store, ["base"], ctx.min_gold_accuracy) if r.model_version == "base"]
    assert base.human["raters_left_out"] == 1 and base.human["labelled"] == kept
    [shown_row] = format_table([base]).to_dict("records")
    assert shown_row["raters left out"] == 1 and shown_row["labels"] == kept
