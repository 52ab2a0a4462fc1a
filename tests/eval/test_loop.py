"""`python -m eval.loop` on the tiny Llama: one round end to end (sample, queue, label and vote by
the rule, export, DPO from the start version, held-out eval of both, scorecard), and the stores
hold the labels and votes the loop says it made."""

import json
from pathlib import Path

import pytest
import yaml

import eval.loop
import eval.simulated_rater
from core.versions import find_version
from eval.loop import main as loop_main
from eval.loop import rule_vote
from store import Store
from store.votes import votable
from tests.conftest import REPO

RECIPE = str(REPO / "training" / "recipes" / "tiny-test.yaml")


def even_rule(facts: str, reply: str) -> str:
    """The tiny model's random replies almost never name a persona fact, which would leave DPO no
    pair: a rule that splits them (good when the reply's length is even) keeps the mechanics testable."""
    return "good" if len(reply) % 2 == 0 else "bad"


def test_the_rule_votes_for_the_reply_that_names_a_fact():
    facts = "I keep bees.\nI build clocks."
    assert rule_vote(facts, "My bees are busy.", "Hello there.") == "a"
    assert rule_vote(facts, "Hello there.", "The clock ticks.") == "b"
    assert rule_vote(facts, "Hi.", "Hello.") == rule_vote(facts, "Bees!", "Clocks!") == "tie"


def test_only_answers_to_a_user_message_are_voted_on():
    # A speaker's opening line answers nothing: labelled, but the store refuses an A/B vote on it.
    assert not votable([]) and not votable([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hi"}])
    assert votable([{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "Any pets?"}])


# Two trainings and three generations on the tiny model: ~75 s on 2 busy cores.
@pytest.mark.slow
def test_two_rounds_store_the_labels_and_votes_they_report(tiny_model_dir, spc_csv, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(eval.loop, "verdict", even_rule)
    monkeypatch.setattr(eval.simulated_rater, "verdict", even_rule)  # the held-out labels' path
    out = tmp_path / "loop"
    flags = ["--model", str(tiny_model_dir), "--data", str(spc_csv), "--out", str(out), "--recipe", RECIPE,
             "--start_recipe", RECIPE, "--start_trained", "true", "--rounds", "2", "--train_prompts", "3",
             "--samples", "4",
             "--heldout_prompts", "4", "--max_new_tokens", "8", "--batch_size", "4", "--max_steps", "2",
             "--per_device_train_batch_size", "2", "--max_seq_length", "128", "--n_resamples", "200"]  # fmt: skip
    assert loop_main(flags) == 0
    first, second = json.loads((out / "loop.json").read_text())
    assert (first["child"], first["parent"]) == ("round-1-dpo", "start")
    assert (second["child"], second["parent"]) == ("round-2-dpo", "round-1-dpo")  # a child of a child
    start = yaml.safe_load((out / "runs" / "start" / "config.yaml").read_text())
    assert start["max_steps"] == yaml.safe_load(Path(RECIPE).read_text())["max_steps"]  # the recipe as written

    with Store(f"sqlite:///{out / 'train.db'}") as store:
        labels, votes = store.label_rows("start"), store.preferences(("start", "start"))
        items = store.items(r.item_id for r in labels)
        assert len(store.label_rows("round-1-dpo")) == second["labels"] > 0  # round 2 samples the new parent
    assert first["replies"] == 12 and len(labels) == first["labels"] > 0
    assert {r.rater for r in labels} == {"simulated"}
    assert first["good"] == sum(r.verdict == "good" for r in labels)
    assert all(r.verdict == even_rule("", items[r.item_id].answer) for r in labels)
    assert len(votes) == first["votes"] == 6  # 3 prompts x (sample 1 vs 2, 3 vs 4)
    for vote in votes:
        a, b = even_rule("", vote.reply_a), even_rule("", vote.reply_b)
        assert vote.vote == ("tie" if a == b else "a" if a == "good" else "b")
    assert first["votes_decided"] == sum(v.vote != "tie" for v in votes)

    for child, parent in (("round-1-dpo", "start"), ("round-2-dpo", "round-1-dpo")):
        version = find_version(child, out / "runs")
        assert version.parent == parent and version.lineage()["method"] == "dpo"
        assert version.lineage()["prompt_keys"]  # the scorecard leaves them out
    with Store(f"sqlite:///{out / 'heldout.db'}") as store:
        held = store.label_rows()
        assert sorted(r.model_version for r in held) == ["round-1-dpo"] * 4 + ["round-2-dpo"] * 4 + ["start"] * 4
        assert len(store.eval_runs("round-1-dpo")) == 1  # round 2 scores its parent by round 1's run
        assert (
            len(store.preferences(("round-1-dpo", "start")))
            == len(store.preferences(("round-2-dpo", "round-1-dpo")))
            == 4
        )
    by_metric = {r["metric"]: r for r in second["scorecard"]}
    assert by_metric["human accuracy, same prompts"]["n"] == 4
    assert "BERTScore F1" in by_metric and "perplexity (geometric mean)" in by_metric
    printed = capsys.readouterr().out
    assert "## Scorecard: round-2-dpo vs round-1-dpo" in printed
    table = printed.split("## The loop")[1]
    assert "round-1-dpo vs start" in table and "round-2-dpo vs round-1-dpo" in table
