"""Persona-switch examples: a question written to persona A, answered in B's own words, from the train split only."""

import json

from corpus.examples import DataConfig, load_examples, read_splits
from corpus.mix import load_training_data
from eval.consistency import similarity
from eval.switches import SwitchConfig, build, main


def test_every_example_follows_b_and_comes_from_the_train_split(spc_csv, tmp_path):
    cfg = SwitchConfig(data=str(spc_csv), conversations=80, examples=30, out=str(tmp_path / "s.jsonl"))
    records, counts = build(cfg)
    assert records and counts["written"] == len(records) <= 30
    splits, _ = read_splits(DataConfig(path=str(spc_csv)))
    train = {c.id for c in splits["train"][:80]}
    for r in records:
        assert set(r["switch"]["conversations"]) <= train  # nothing of the held-out turns eval.run asks
        a, b = r["switch"]["conversations"]
        assert a != b and r["persona"] != r["switch"]["question_for"]  # the question was written to someone else
        assert r["switch"]["question_similarity"] >= cfg.min_question_similarity
    replies = [r["messages"][1]["content"] for r in records]
    to_b = similarity(replies, [r["persona"] for r in records])
    to_a = similarity(replies, [r["switch"]["question_for"] for r in records])
    # the probe's own measure: closer to B, by the margin
    assert all(b - a >= cfg.min_margin - 1e-6 for b, a in zip(to_b, to_a, strict=True))


def test_the_file_mixes_into_a_recipe_as_b_s_persona_and_one_exchange(spc_csv, tmp_path):
    out = tmp_path / "switches.jsonl"
    assert main(["--data", str(spc_csv), "--conversations", "60", "--examples", "20", "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    examples, _ = load_examples(DataConfig(path=str(out), split_fractions=(1.0, 0.0, 0.0)), "train")
    assert len(examples) == len(records)
    for ex in examples:
        system, user = ex.messages
        assert system["role"] == "system" and user["role"] == "user"
    mixed = DataConfig(mix=[{"path": str(spc_csv), "weight": 0.8}, {"path": str(out), "weight": 0.2}])
    train, _, info = load_training_data(mixed, max_validation=4)
    assert info["mix"][1]["mixed_train_examples"] > 0 and len(train) > len(records)


def test_facts_answers_are_one_of_b_s_own_facts(spc_csv):
    records, _ = build(SwitchConfig(data=str(spc_csv), conversations=40, examples=10, answers="facts"))
    assert records
    for r in records:
        assert r["messages"][1]["content"] in r["persona"]
