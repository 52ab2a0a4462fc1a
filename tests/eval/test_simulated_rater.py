"""`python -m eval.simulated_rater`: the stated rule, and labels stored for an eval run's rows."""

import json

from eval.simulated_rater import main, verdict
from store import NewItem

FACTS = "i have two dogs .\ni work as a nurse at the hospital ."


def test_an_answer_is_good_when_it_uses_a_fact_word():
    assert verdict(FACTS, "My dogs keep me busy.") == "good"  # "dogs" ~ "dog"
    assert verdict(FACTS, "Long shifts at the hospital today!") == "good"
    assert verdict(FACTS, "I like pizza and the beach.") == "bad"
    assert verdict(FACTS, "What about that, then? Really!") == "bad"  # stop words are not facts


def test_rows_of_an_eval_run_are_labelled_under_the_rater(store, db_file_url, tmp_path, capsys):
    replies = ["My dogs are asleep.", "Pizza tonight."]
    ids = store.add_label_items(
        [NewItem("eval", "p", {"facts": FACTS.split("\n")}, [], reply, "v1") for reply in replies]
    )
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "".join(
            json.dumps({"item_id": i, "persona": FACTS, "reply": r}) + "\n" for i, r in zip(ids, replies, strict=True)
        )
    )
    assert main(["--rows", str(rows), "--database_url", db_file_url]) == 0
    assert "1 of 2 answers good (50.0%)" in capsys.readouterr().out
    assert [(row.item_id, row.rater, row.verdict) for row in store.label_rows("v1")] == [
        (ids[0], "simulated", "good"),
        (ids[1], "simulated", "bad"),
    ]
