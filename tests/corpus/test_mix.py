"""`data.mix`: weights respected (seeded counts within a tolerance), per-source splits, bad weights refused."""

import csv
import json

import pytest
import yaml

from core.cli import validate_config
from core.errors import ConfigError
from corpus.examples import DataConfig, load_examples
from corpus.mix import load_training_data
from training.config import TrainConfig


@pytest.fixture
def sources(tmp_path):
    """(persona file with 60 trained wordings and 2 held out, Q&A CSV of 1,200 one-turn chats)."""
    persona = tmp_path / "vega.yaml"
    who = ["Your name?", "Who is this?", "Who's there?", "Name please?"]
    where = ["What place is this?", "Where am I?", "What building is this?", "Which museum?"]
    knowledge = [
        {"question": "Who are you?", "answer": "I am Vega.", "paraphrases": who},
        {"question": "Where are we?", "answer": "In the museum.", "paraphrases": where},
    ]
    persona.write_text(yaml.safe_dump({"name": "Vega", "facts": ["I am Vega."], "knowledge": knowledge}))
    qa = tmp_path / "qa.csv"
    with open(qa, "w", newline="") as file:
        csv.writer(file).writerows([["question", "answer"], *[[f"Question {i}?", f"Answer {i}."] for i in range(1200)]])
    return persona, qa


def mix(persona, qa, **extra) -> DataConfig:
    return DataConfig(mix=[{"path": persona, "weight": 1}, {"path": qa, "weight": 3}], **extra)


def source_of(examples, persona_ids):
    return [0 if ex.conversation_id in persona_ids else 1 for ex in examples]


def test_weights_are_respected_and_seeded(sources):
    persona, qa = sources
    persona_train = {ex.conversation_id for ex in load_examples(DataConfig(path=persona), "train")[0]}
    train, _, info = load_training_data(mix(persona, qa), max_validation=20)
    # all_exhausted: the 60 persona wordings repeat until the ~960 Q&A train turns were all drawn.
    share = source_of(train, persona_train).count(0) / len(train)
    assert len(train) > 1000 and share == pytest.approx(0.25, abs=0.04)
    assert [s["mixed_train_examples"] for s in info["mix"]] == [
        round(share * len(train)),
        round((1 - share) * len(train)),
    ]
    assert [s["probability"] for s in info["mix"]] == [0.25, 0.75] and info["train_examples"] == len(train)
    again, _, _ = load_training_data(mix(persona, qa), max_validation=20)
    assert [ex.conversation_id for ex in again] == [ex.conversation_id for ex in train]  # seeded
    other, _, _ = load_training_data(mix(persona, qa, split_seed=1), max_validation=20)
    assert [ex.conversation_id for ex in other] != [ex.conversation_id for ex in train]
    # first_exhausted: stops once the persona's 60 wordings were all drawn, at about 60 / 0.25.
    short, _, _ = load_training_data(mix(persona, qa, stopping_strategy="first_exhausted"), max_validation=20)
    assert source_of(short, persona_train).count(0) == 60 and 150 < len(short) < 400


def test_each_source_keeps_its_own_splits(sources):
    persona, qa = sources
    train, validation, info = load_training_data(mix(persona, qa), max_validation=20)
    own = {
        split: {ex.conversation_id for path in sources for ex in load_examples(DataConfig(path=path), split)[0]}
        for split in ("train", "validation", "test")
    }
    assert {ex.conversation_id for ex in train} == own["train"]  # every train example, none from elsewhere
    assert {ex.conversation_id for ex in validation} <= own["validation"] and len(validation) == 15  # ceil(20 * 0.75)
    assert info["mix"][0]["heldout_phrasings"] and info["mix"][0]["validation_examples"] == 0


@pytest.mark.parametrize("weight", [0, -0.5])
def test_a_weight_that_is_not_positive_is_refused(tmp_path, weight):
    values = {"data": {"mix": [{"path": "personas/nova.yaml", "weight": weight}, {"path": "x.csv", "weight": 1}]}}
    with pytest.raises(ConfigError) as err:
        validate_config(TrainConfig, values, source="recipe.yaml")
    message = str(err.value)
    assert "data.mix.0.weight" in message and f"must be a positive number, not {float(weight)}" in message
    assert "weight: 0.3" in message


def test_path_and_mix_together_are_refused():
    with pytest.raises(ConfigError, match="give data.path or data.mix, not both"):
        validate_config(TrainConfig, {"data": {"path": "a.csv", "mix": [{"path": "b.csv", "weight": 1}]}})


def test_whole_conversations_mix_by_sequence_so_the_weights_are_shares_of_sequences(spc_csv, tmp_path):
    from training.sequences import conversation_chats

    chats = tmp_path / "one_exchange.jsonl"
    lines = [{"persona": [f"I collect stamp number {i}."], "messages": [
        {"role": "user", "content": f"What do you collect? ({i})"}, {"role": "assistant", "content": f"Stamp {i}."}]}
        for i in range(400)]  # fmt: skip
    chats.write_text("".join(json.dumps(line) + "\n" for line in lines))
    alone, _, _ = load_training_data(DataConfig(path=str(spc_csv), unit="conversation", limit=60), max_validation=2)
    assert len(alone) == len({(ex.conversation_id, ex.speaker) for ex in alone})  # one per (conversation, speaker)
    mixed = DataConfig(mix=[{"path": str(spc_csv), "weight": 0.7}, {"path": str(chats), "weight": 0.3}],
                       unit="conversation", stopping_strategy="first_exhausted")  # fmt: skip
    train, _, _ = load_training_data(mixed, max_validation=2)
    sequences = conversation_chats(train)
    short = sum(1 for chat in sequences if chat[-1]["content"].startswith("Stamp "))
    assert short / len(sequences) == pytest.approx(0.3, abs=0.05)
